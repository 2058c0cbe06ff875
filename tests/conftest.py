"""Shared fixtures: devices, dtypes, randomness, and tolerances that depend on the dtype."""

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance for exact-in-arithmetic identities (adjointness, closed forms)."""
    return {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
