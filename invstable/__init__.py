"""invstable: provably stable learned reconstructions for y = A x + noise."""

__version__ = "0.1.0"
