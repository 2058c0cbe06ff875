"""The ``invstable demo`` command: the README's first example (the demo itself is :mod:`invstable._demo`)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``demo`` command to ``subparsers``."""
    p = subparsers.add_parser("demo", help="simulate CT-30 and Blur-G2 measurements and reconstruct them",
                              description="Simulate CT-30 and Blur-G2 measurements of built-in images, reconstruct "
                                          "them with the baselines and the shipped models, print a table and write "
                                          "a figure; a progress line per step goes to stderr.")
    p.add_argument("--out", default="invstable_demo.png",
                   help="path of the PNG figure (default: %(default)s); missing folders are created; an existing "
                        "file is replaced only if it is an earlier demo figure")
    p.add_argument("--overwrite", action="store_true", help="replace --out even if it is not a demo figure")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated noise (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr (the table still prints)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from .._demo import demo

    demo(args.out, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet)
    return 0
