"""Speed (PROTOCOLS.md, "Speed"): operators, reconstruction throughput, operator floor, cost of the constraints.

The benchmark is :func:`invstable.evaluation.run_speed` (also ``invstable benchmark --only speed``; its module
says what each section measures); this script runs it into the source checkout's ``benchmarks/results`` (a quick
run into a new temporary folder, never over the published result), reusing the deepinv peer's weights there.

Usage: python -m benchmarks.speed [--quick] [--device cpu|cuda|auto] [--results-dir DIR] [--threads 2]
       [--tasks ct-30 blur-g2]
"""

from __future__ import annotations

import argparse
import tempfile

from benchmarks._common import RESULTS
from invstable.evaluation import run_speed

TASKS = ("ct-30", "blur-g2", "ct-180")


def run(**options) -> dict:
    """:func:`invstable.evaluation.run_speed` with the checkout's defaults: ``results_dir`` is
    ``benchmarks/results`` for a full run and a new temporary folder for a quick one; the reference folder is
    ``benchmarks/results``."""
    if options.get("results_dir") is None:
        options["results_dir"] = tempfile.mkdtemp(prefix="invstable-speed-quick-") if options.get("quick") else RESULTS
    options.setdefault("reference_dir", RESULTS)
    return run_speed(**options)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, two validation images, one-step models "
                                                             "(a smoke run)")
    parser.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"],
                        help="cpu; cuda (CPU and GPU); auto (the GPU too when there is one; default)")
    parser.add_argument("--results-dir", default=None,
                        help="where to write speed.json and speed.png (default benchmarks/results; "
                             "a temporary folder with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (protocol: 2)")
    parser.add_argument("--tasks", nargs="+", default=["ct-30", "blur-g2"], choices=TASKS, help="protocol tasks")
    args = parser.parse_args(argv)
    run(quick=args.quick, results_dir=args.results_dir, tasks=args.tasks, device=args.device, threads=args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
