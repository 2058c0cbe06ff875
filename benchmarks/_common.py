"""Shared plumbing of the benchmarks: environment record, interleaved timing, atomic JSON output.

Every benchmark writes ``benchmarks/results/<name>.json`` with the machine, device, torch version, thread
count, git commit and date (PROTOCOLS.md), through :func:`write_result`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch

from invstable.models._io import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"


def environment(device: str | torch.device = "cpu") -> dict:
    """The facts a timing or a figure needs next to it to be read honestly."""
    device = torch.device(device)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "machine": platform.node(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "git_commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]], *, repeats: int = 20, warmup: int = 2,
    device: str | torch.device = "cpu",
) -> dict[str, dict]:
    """Time several callables round-robin, so that machine noise falls on all of them alike.

    Returns, per name, the median and the interquartile range of the wall-clock seconds of one call.
    """
    device = torch.device(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    out = {}
    for name, s in samples.items():
        q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0]] * 3
        out[name] = {"median_s": statistics.median(s), "q1_s": q[0], "q3_s": q[2], "repeats": len(s)}
    return out


def write_result(name: str, payload: dict, *, results_dir: str | Path | None = None) -> Path:
    """Write ``<results_dir>/<name>.json`` atomically (temporary file in the same folder, then rename)."""
    folder = Path(results_dir) if results_dir is not None else RESULTS

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False)
            f.write("\n")

    return atomic_write(folder / f"{name}.json", write)
