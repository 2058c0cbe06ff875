"""Learning curves of every training recipe: validation scores against steps and seconds, as JSON and PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .._files import atomic_write


def write_curve(path: str | Path, payload: dict, *, title: str, ylabel: str = "validation PSNR (dB)",
                series: dict[str, Callable[[dict], float]] | None = None) -> Path:
    """Write ``payload`` (its ``"curve"``: entries with ``"step"``, ``"seconds"`` and the scores) as JSON at
    ``path`` and, beside it, a PNG of each series against steps and against seconds.

    ``series``: legend label -> the value of an entry (default: one unlabelled series, ``entry["validation_psnr"]``).
    ``payload["device"]`` and ``payload["threads"]`` label the seconds axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    curve = payload["curve"]
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))
    series = series or {"": lambda entry: entry["validation_psnr"]}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "step", "training steps"),
                           (axes[1], "seconds", f"seconds ({payload.get('device')}, {payload.get('threads')} threads)")):
        for name, value in series.items():
            ax.plot([c[key] for c in curve], [value(c) for c in curve], marker=".", label=name or None)
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path.with_suffix(".png"), lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return path
