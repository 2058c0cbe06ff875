"""``invstable benchmark``: run the benchmarks of ``benchmarks/`` (quality, stability, speed) at a chosen size
and regenerate ``docs/benchmarks.md`` from their JSON.

The benchmarks live in the source checkout, not in the installed package: the command finds them beside the
``invstable`` package (an editable install, ``pip install -e .``) and says so when they are not there.
"""

from __future__ import annotations

import importlib
import sys
import time
import warnings
from pathlib import Path

from .._warnings import ConvergenceWarning

BENCHMARKS = ("quality", "stability", "speed")


def _checkout() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__init__.py").is_file():
        raise FileNotFoundError(
            f"invstable benchmark needs the source checkout (the benchmarks/ folder beside the package), but "
            f"{root / 'benchmarks'} is not there; clone the repository and install it with `pip install -e .`")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def _run(args) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = _run_all(args)
    capped = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    for text in dict.fromkeys(str(w.message) for w in caught if w not in capped):
        print(f"warning: {text}", file=sys.stderr)
    if capped:
        print(f"note: {len(capped)} Tikhonov CG solves stopped at their iteration cap (max_iter is recorded in each "
              f"JSON's tuning); their figures are those of the capped solves", file=sys.stderr)
    return code


def _check_flags(args) -> None:
    """Flags that are missing or would be ignored, refused before any benchmark starts."""
    if args.quick and args.results_dir is None:
        raise ValueError("--quick writes to a scratch folder, never over the published results: pass --results-dir "
                         "DIR (e.g. --results-dir /tmp/invstable-bench)")
    stability = [flag for flag, value in (("--images", args.images), ("--steps", args.steps),
                                          ("--restarts", args.restarts)) if value is not None]
    if stability and "stability" not in args.only:
        raise ValueError(f"{', '.join(stability)} only apply to the stability benchmark, which --only "
                         f"{' '.join(args.only)} does not run")
    if args.resume and not {"quality", "stability"} & set(args.only):
        raise ValueError("--resume applies to the quality and stability benchmarks, which --only "
                         f"{' '.join(args.only)} does not run")


def _run_all(args) -> int:
    _check_flags(args)
    _checkout()
    results = None if args.results_dir is None else Path(args.results_dir)
    for name in args.only:
        module = importlib.import_module(f"benchmarks.{name}")
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        kwargs = {"quick": args.quick, "results_dir": results, "threads": args.threads}
        if args.tasks:
            kwargs["tasks"] = tuple(args.tasks)
        if name in ("quality", "stability"):
            kwargs["resume"] = args.resume
        if name == "stability":
            kwargs.update(images=args.images, steps=args.steps, restarts=args.restarts)
        module.run(**kwargs)
        print(f"== {name}: {time.perf_counter() - start:.0f} s", flush=True)
    report = importlib.import_module("benchmarks.report")
    print(f"written {report.render(results)}")
    return 0


def add_parser(sub) -> None:
    from ..data._tasks import TASKS
    from .train import integer, output_folder

    positive = integer(1)
    p = sub.add_parser(
        "benchmark", help="run the benchmarks (quality, stability, speed) and regenerate docs/benchmarks.md",
        description="Run the benchmarks of PROTOCOLS.md and write benchmarks/results/<name>.json, the figures and "
                    "docs/benchmarks.md. --quick runs them at a small size in a few minutes on 2 cores (into "
                    "--results-dir, never over the published results); the full size takes hours on a CPU.")
    p.add_argument("--quick", action="store_true", help="small size: a few images, short searches, few repeats")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), metavar="NAME",
                   help=f"which benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", choices=sorted(TASKS),
                   help="protocol tasks (default: each benchmark's own: ct-30 blur-g2, and ct-180 for quality)")
    p.add_argument("--results-dir", default=None, type=output_folder,
                   help="folder where the JSON and figures go, created if missing (default benchmarks/results; "
                        "required with --quick); the page goes to DIR/benchmarks.md, or docs/benchmarks.md for the "
                        "default folder")
    p.add_argument("--threads", type=positive, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--images", type=positive, default=None,
                   help="stability: first N test images (protocol: 20; a smaller N is recorded as below the protocol)")
    p.add_argument("--steps", type=positive, default=None, help="stability: Adam steps per search (protocol: 200)")
    p.add_argument("--restarts", type=positive, default=None,
                   help="stability: random starts per search (protocol: 3)")
    p.add_argument("--resume", action="store_true",
                   help="quality and stability: keep the tasks (quality) and methods (stability) an earlier run "
                        "measured with the same settings")
    p.set_defaults(func=_run)
