"""``invstable benchmark``: run the benchmark protocols (quality, stability, speed) at a chosen size and write
their JSON, figures and page.

The benchmarks are part of the package (:mod:`invstable.evaluation`): the command runs from any folder of any
installation. Results go to ``--results-dir``; without it, to ``./benchmarks/results`` when the current folder
has one (the source checkout, whose page is then ``docs/benchmarks.md``).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from .._warnings import ConvergenceWarning

BENCHMARKS = ("quality", "stability", "speed")
#: the source checkout's published results, relative to the folder the command runs in
CHECKOUT_RESULTS = Path("benchmarks") / "results"


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


def _existing_folder(text: str) -> str:
    """An argparse ``type``: a folder that exists."""
    import argparse  # noqa: PLC0415

    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder" if Path(text).exists() else f"{text!r} does not exist")
    return text


def _folders(args) -> tuple[Path, Path, Path]:
    """The results folder, the reference folder (earlier results to reuse) and the page."""
    checkout = CHECKOUT_RESULTS.is_dir()
    if args.results_dir is None:
        if not checkout:
            raise ValueError(f"no results folder: pass --results-dir DIR (the default, ./{CHECKOUT_RESULTS.as_posix()}, "
                             f"is only used when the current folder has one, as the source checkout does; "
                             f"{Path.cwd()} has none)")
        results = CHECKOUT_RESULTS
    else:
        results = Path(args.results_dir)
    if args.reference_dir is not None:
        reference = Path(args.reference_dir)
    else:
        reference = CHECKOUT_RESULTS if checkout else results
    docs = Path("docs")
    published = args.results_dir is None or results.resolve() == CHECKOUT_RESULTS.resolve()
    page = docs / "benchmarks.md" if published and docs.is_dir() else results / "benchmarks.md"
    return results, reference, page


def _command(args, name: str) -> str:
    """The command line recorded in a benchmark's JSON."""
    parts = ["invstable benchmark", "--quick" if args.quick else "", f"--only {name}",
             f"--tasks {' '.join(args.tasks)}" if args.tasks else "", f"--threads {args.threads}",
             "--resume" if args.resume and name != "speed" else ""]
    if name == "stability":
        parts += [f"--{k} {v}" for k, v in (("images", args.images), ("steps", args.steps),
                                            ("restarts", args.restarts)) if v is not None]
    return " ".join(p for p in parts if p)


def _run_all(args) -> int:
    from ..evaluation import BENCHMARKS as RUNNERS  # noqa: PLC0415 (keeps `invstable --help` light)
    from ..evaluation import render_report  # noqa: PLC0415

    _check_flags(args)
    results, reference, page = _folders(args)
    results.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        kwargs = {"quick": args.quick, "results_dir": results, "threads": args.threads,
                  "reference_dir": reference, "command": _command(args, name)}
        if args.tasks:
            kwargs["tasks"] = tuple(args.tasks)
        if name in ("quality", "stability"):
            kwargs["resume"] = args.resume
        if name == "stability":
            kwargs.update(images=args.images, steps=args.steps, restarts=args.restarts)
        RUNNERS[name](**kwargs)
        print(f"== {name}: {time.perf_counter() - start:.0f} s", flush=True)
    print(f"written {render_report(results, page)}")
    return 0


def add_parser(sub) -> None:
    from ..data._tasks import TASKS
    from .train import integer, output_folder

    positive = integer(1)
    p = sub.add_parser(
        "benchmark", help="run the benchmarks (quality, stability, speed) and write their JSON, figures and page",
        description="Run the benchmarks of PROTOCOLS.md on every method and write <results-dir>/<name>.json, the "
                    "figures and the page. Works from any folder of any installation; the results folder is "
                    "--results-dir, or ./benchmarks/results when the current folder has one (the source checkout, "
                    "whose page is docs/benchmarks.md). --quick runs them at a small size in a few minutes on 2 cores "
                    "(into --results-dir, never over the published results); the full size takes hours on a CPU. "
                    "To score your own reconstructor on the same protocols, use invstable.evaluate in Python.")
    p.add_argument("--quick", action="store_true", help="small size: a few images, short searches, few repeats")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), metavar="NAME",
                   help=f"which benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", choices=sorted(TASKS),
                   help="protocol tasks (default: each benchmark's own: ct-30 blur-g2, and ct-180 for quality)")
    p.add_argument("--results-dir", default=None, type=output_folder,
                   help="folder where the JSON, the figures and the page (DIR/benchmarks.md) go, created if missing; "
                        "required with --quick, and wherever the current folder has no benchmarks/results (the "
                        "default there, with the page in docs/benchmarks.md)")
    p.add_argument("--reference-dir", default=None, type=_existing_folder,
                   help="earlier results to reuse: the deepinv peer's weights (peer-<task>.safetensors) and the "
                        "quality run's tuning (default: ./benchmarks/results when it exists, else the results folder)")
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
