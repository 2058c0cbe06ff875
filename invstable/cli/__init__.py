"""The ``invstable`` command line: one module per sub-command, each with ``add_parser(subparsers)`` and ``run(args)``.

``invstable COMMAND ...``, ``python -m invstable COMMAND ...`` and ``python -m invstable.cli COMMAND ...`` all run
:func:`main`. A mistake of the user or a limit of the machine (a ``ValueError`` or an ``OSError``: a refused
value, a missing or existing file, a full disk, not enough memory) is one line on stderr and exit status 2;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: the sub-commands, in the order of ``invstable --help``: each is the module ``invstable.cli.<name>``
COMMANDS = ("demo", "models", "dataset", "train", "reconstruct", "benchmark")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every sub-command (each module is imported here, so that ``import invstable.cli`` is light)."""
    parser = argparse.ArgumentParser(
        prog="invstable", description="Provably stable learned reconstructions for y = A x + noise.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:
        # the user's mistakes (ModelFileError, DatasetFileError, ImageReadError and InsufficientMemoryError are
        # ValueErrors) and the machine's limits (a missing or existing file, a full disk); a TypeError, a KeyError
        # and the rest come from a bug and keep their traceback
        print(f"invstable {args.command}: error: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:  # an allocation no estimate foresaw: say so in one line, with numpy's figure
        print(f"invstable {args.command}: error: not enough memory ({err or 'no detail'}); use smaller inputs",
              file=sys.stderr)
        return 2
