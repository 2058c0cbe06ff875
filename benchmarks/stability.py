"""Stability to perturbations of the measurements (PROTOCOLS.md, "Stability"), into ``benchmarks/results``.

The benchmark is :func:`invstable.evaluation.run_stability` (also ``invstable benchmark --only stability``); this
script runs it on the source checkout's published results folder, reusing the quality run's tuning and the deepinv
peer's weights there. The protocol size (20 images, eta in {0.5, 1, 2, 5} %, 200 steps x 3 starts) is the
default; ``--images/--steps/--restarts/--etas`` shrink it and the JSON records the settings used. Each method's
images, starts and eta levels run as one batched search (:func:`invstable.stability.adversarial_search`: warm
starts across the levels, early stopping once the objective stops rising, the steps used recorded); TV is searched
directly through an unrolled TV and by transfer from Tikhonov, the larger loss reported. Each task also gets a
picture, ``stability_<task>.png`` (worst perturbation, hallucination map, PSNR against eta per method).

The full protocol: python -m benchmarks.stability --tasks ct-30 blur-g2 --images 20 --steps 200 --restarts 3
       --etas 0.005 0.01 0.02 0.05

Usage: python -m benchmarks.stability [--quick] [--tasks ct-30 blur-g2] [--images 20] [--steps 200]
       [--restarts 3] [--etas 0.005 0.01 0.02 0.05] [--resume] [--results-dir DIR] [--methods NAME ...]

A run too long for one sitting: ``--resume --methods NAME ...`` measures a few methods at a time and keeps the
others. ``--cost`` measures what the protocol would take here (seconds per search step of each method at the
protocol's batch, into ``stability_cost.json``) without running it.
"""

from __future__ import annotations

import argparse

from benchmarks._common import RESULTS
from invstable.evaluation import run_stability
from invstable.evaluation import run_stability_cost as run_cost


def run(**options) -> dict:
    """:func:`invstable.evaluation.run_stability` with the checkout's defaults (``results_dir`` and the reference
    folder: ``benchmarks/results``)."""
    if options.get("results_dir") is None:
        options["results_dir"] = RESULTS
    options.setdefault("reference_dir", RESULTS)
    return run_stability(**options)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 images, 2 noise levels, 5 steps x 1 start")
    parser.add_argument("--tasks", nargs="+", default=["ct-30", "blur-g2"], help="protocol tasks")
    parser.add_argument("--images", type=int, default=None, help="first N test images (protocol: 20)")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps per start (protocol: >= 200)")
    parser.add_argument("--restarts", type=int, default=None, help="random starts (protocol: >= 3)")
    parser.add_argument("--etas", type=float, nargs="+", default=None, help="relative noise levels")
    parser.add_argument("--validation", type=int, default=None, help="validation images for alpha and lambda")
    parser.add_argument("--resume", action="store_true", help="keep methods already measured with these settings")
    parser.add_argument("--results-dir", default=None, help="default benchmarks/results")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--cost", action="store_true",
                        help="measure each method's seconds per search step at the protocol's batch (on --images "
                             "images, default 2, scaled) and the protocol time they imply: stability_cost.json")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="only these methods, by name (with --resume the others measured earlier are kept)")
    args = parser.parse_args(argv)
    if args.cost:
        payload = run_cost(results_dir=args.results_dir or RESULTS, tasks=tuple(args.tasks), threads=args.threads,
                           images=args.images or 2, methods=args.methods, reference_dir=RESULTS)
        for t in payload["tasks"]:
            print(f"{t['task']}: the protocol takes {t['hours_at_min_steps']:.1f}-{t['hours_at_cap']:.1f} h here")
        return
    payload = run(quick=args.quick, tasks=tuple(args.tasks), results_dir=args.results_dir, threads=args.threads,
                  resume=args.resume, images=args.images, steps=args.steps, restarts=args.restarts, etas=args.etas,
                  validation=args.validation, methods=args.methods)
    for r in payload["tasks"]:
        print(f"\n{r['task']} ({r['images']} images)")
        for m in r["methods"]:
            last = m["per_eta"][-1]
            print(f"  {m['method']:<40} clean {m['clean_psnr']['mean']:6.2f}  eta {last['eta']:g}: random "
                  f"{last['random_psnr']['mean']:6.2f} adversarial {last['adversarial_x_psnr']['mean']:6.2f}  "
                  f"max ratio {m['empirical_lipschitz']:.3f} bound {m['lipschitz_bound']} violations {m['violations']}")
        for t in r["targets"]:
            print(f"  target {'MET   ' if t['met'] else 'MISSED'} {t['model']}: {t['target']} ({t['value']})")


if __name__ == "__main__":
    main()
