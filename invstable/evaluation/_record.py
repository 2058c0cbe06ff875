"""What every benchmark writes next to its figures: the environment record, interleaved timings, atomic JSON.

Every benchmark writes ``<results_dir>/<name>.json`` with the machine, device, torch version, thread count, git
commit and date (PROTOCOLS.md), through :func:`write_result`.
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

from ..models._io import atomic_write

#: the folder holding the ``invstable`` package: a source checkout when it has a ``.git`` beside the package
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _commit() -> str:
    """The git commit of the source checkout the package runs from, or "unknown" for an installed copy.

    Only the folder right above the package is asked (an editable install); an installed copy inside some other
    repository must not record that repository's commit.
    """
    if not (_PACKAGE_ROOT / ".git").exists():
        return "unknown"
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=_PACKAGE_ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device: str | torch.device = "cpu") -> dict:
    """The facts a timing or a figure needs next to it to be read honestly."""
    from .._version import __version__  # noqa: PLC0415 (the version module, not the package: no circle)

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "machine": platform.node(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "git_commit": _commit(),
        "invstable": __version__,
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


def train_step_fn(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    """One training step (forward, MSE loss, backward, Adam update) of ``model`` on ``(x, target)``, as a callable
    to time."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
    return step


def results_folder(results_dir: str | Path | None) -> Path:
    """``results_dir`` as a path; a clear error when none is given (the package knows no default folder)."""
    if results_dir is None:
        raise ValueError("results_dir is None: pass the folder where the JSON and figures go (the package writes "
                         "nowhere by default; `python -m benchmarks.NAME` in the source checkout uses "
                         "benchmarks/results)")
    return Path(results_dir)


def shown(path: str | Path) -> str:
    """``path`` relative to the current folder when it lies inside it (what a JSON record should say), else
    absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def write_result(name: str, payload: dict, *, results_dir: str | Path) -> Path:
    """Write ``<results_dir>/<name>.json`` atomically (temporary file in the same folder, then rename)."""
    folder = results_folder(results_dir)

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False)
            f.write("\n")

    return atomic_write(folder / f"{name}.json", write)
