"""The source checkout's defaults for the benchmark scripts: the published results folder ``benchmarks/results``.

The benchmarks themselves live in the package (:mod:`invstable.evaluation`, also ``invstable benchmark``); the
scripts of this folder call them with these defaults and keep the results and the page of the repository.
"""

from __future__ import annotations

from pathlib import Path

from invstable.evaluation import environment as environment
from invstable.evaluation import time_interleaved as time_interleaved
from invstable.evaluation import write_result as _write_result

ROOT = Path(__file__).resolve().parent.parent
#: the published results (JSON, figures, the deepinv peer's weights)
RESULTS = ROOT / "benchmarks" / "results"
#: the page generated from them
DOCS = ROOT / "docs" / "benchmarks.md"


def write_result(name: str, payload: dict, *, results_dir=None) -> Path:
    """:func:`invstable.evaluation.write_result` into ``results_dir``, by default the published folder."""
    return _write_result(name, payload, results_dir=RESULTS if results_dir is None else results_dir)
