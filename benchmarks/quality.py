"""Reconstruction quality on the protocol test sets (PROTOCOLS.md, "Quality"), into ``benchmarks/results``.

The benchmark is :func:`invstable.evaluation.run_quality` (also ``invstable benchmark --only quality``); this script
runs it on the source checkout's published results folder, reusing its deepinv peer's weights.

Usage: python -m benchmarks.quality [--quick] [--tasks ct-30 blur-g2 ct-180] [--results-dir DIR] [--resume]
       [--models NAME ...]
"""

from __future__ import annotations

import argparse

from benchmarks._common import RESULTS
from invstable.evaluation import run_quality


def run(**options) -> dict:
    """:func:`invstable.evaluation.run_quality` with the checkout's defaults (``results_dir`` and the reference
    folder: ``benchmarks/results``)."""
    if options.get("results_dir") is None:
        options["results_dir"] = RESULTS
    options.setdefault("reference_dir", RESULTS)
    return run_quality(**options)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 validation and 8 test images, fewer iterations")
    parser.add_argument("--tasks", nargs="+", default=["ct-30", "blur-g2", "ct-180"], help="protocol tasks")
    parser.add_argument("--results-dir", default=None, help="where to write quality.json (default benchmarks/results)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--resume", action="store_true", help="keep tasks already measured at this size")
    parser.add_argument("--models", nargs="+", help="with --resume: measure only these shipped models on kept tasks ('peer': the deepinv peer)")
    args = parser.parse_args(argv)
    if args.models and not args.resume:
        parser.error("--models measures named models into a kept run: use it with --resume")
    payload = run(quick=args.quick, tasks=tuple(args.tasks), results_dir=args.results_dir, threads=args.threads,
                  resume=args.resume, models=args.models)
    for r in payload["tasks"]:
        print(f"\n{r['task']} (test n={r['n_test']})")
        for row in r["rows"]:
            if row.get("missing"):
                print(f"  {row['method']:<40} MISSING: {row['why']}")
                continue
            b = row.get("lipschitz_bound")
            print(f"  {row['method']:<40} PSNR {row['psnr_mean']:6.2f} ± {row['psnr_std']:4.2f}  "
                  f"SSIM {row['ssim_mean']:.3f}  bound {'-' if b is None else f'{b:.2f}'}")
        for t in r["targets"]:
            print(f"  target {'MET   ' if t['met'] else 'MISSED'} {t['model']}: {t['target']} ({t['value']})")


if __name__ == "__main__":
    main()
