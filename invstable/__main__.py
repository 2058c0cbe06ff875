"""``python -m invstable ...``: the command line (also what ``torchrun -m invstable train ...`` runs)."""

import sys

from .cli import main

sys.exit(main())
