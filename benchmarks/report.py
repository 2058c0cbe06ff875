"""Generate ``docs/benchmarks.md`` from the JSON results (never by hand), with
:func:`invstable.evaluation.render_report`.

Usage: python -m benchmarks.report [--results-dir DIR] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks._common import DOCS, RESULTS, ROOT
from invstable.evaluation import render_report


def render(folder=None, out=None) -> Path:
    """The page of ``folder`` (default ``benchmarks/results``) written to ``out`` (default ``docs/benchmarks.md``
    for the published folder, else ``folder/benchmarks.md``)."""
    folder = Path(folder) if folder is not None else RESULTS
    if out is None and folder.resolve() == RESULTS.resolve():
        out = DOCS
    return render_report(folder, out, source=os.path.relpath(folder.resolve(), ROOT))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default=None, help="default benchmarks/results")
    parser.add_argument("--out", default=None, help="default docs/benchmarks.md (or DIR/benchmarks.md)")
    args = parser.parse_args(argv)
    print(f"written {render(args.results_dir, args.out)}")


if __name__ == "__main__":
    main()
