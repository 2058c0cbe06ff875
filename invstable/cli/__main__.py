"""``python -m invstable.cli``: the same as the ``invstable`` command."""

import sys

from . import main

sys.exit(main())
