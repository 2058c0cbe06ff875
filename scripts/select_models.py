"""Choose the recommended certified model of each protocol task on validation data (never on test data).

Every certified model shipped for a task (the unrolled models trained on it, and the "universal" regulariser with
the task's preset) reconstructs the same first ``--count`` validation images of the task; the one with the
highest mean PSNR is written, with every candidate's score and certified bound, to
invstable/models/pretrained/recommended.json, which ``invstable.load_model(task=...)`` reads.

Usage:
    python scripts/select_models.py [--tasks ct-30 blur-g2] [--count 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "invstable" / "models" / "pretrained" / "recommended.json"


def candidates(task: str) -> list[str]:
    """Shipped certified models for ``task``: unrolled models trained on it with a finite bound, and "universal"
    when it has a preset for the task."""
    from invstable.models import list_models, model_info

    out = []
    for name in list_models():
        info = model_info(name)
        if info["operator"] is None:
            if task in info.get("presets", {}):
                out.append(name)
        elif info.get("training", {}).get("task") == task and info["model"].get("family") != "unconstrained":
            out.append(name)
    return out


def file_digest(name: str) -> str:
    """SHA-256 of a shipped model's file (a score is reused only for the very same file)."""
    from invstable.models._pretrained import _pretrained_path

    return hashlib.sha256(_pretrained_path(name).read_bytes()).hexdigest()


@torch.no_grad()
def score(name: str, task: str, count: int, batch: int = 8) -> dict:
    """Mean validation PSNR (reconstructions clipped to [0, 1]) and certified bound of one candidate."""
    import invstable
    from invstable.data import task as protocol_task
    from invstable.models._pretrained import REGULARISERS
    from invstable.training import psnr

    spec = protocol_task(task)
    if name in REGULARISERS:
        model = invstable.load_model(name, operator=spec.operator, preset=task)
    else:
        model = invstable.load_model(name)
    pairs = spec.pairs("validation")
    values = []
    for start in range(0, count, batch):
        xs, ys = zip(*(pairs[i] for i in range(start, min(count, start + batch))))
        x, y = torch.stack(xs), torch.stack(ys)
        values += psnr(model(y).clamp(0, 1).double(), x.double()).tolist()
    bound = model.lipschitz_bound()
    return {"validation_psnr": round(sum(values) / len(values), 3),
            "lipschitz_bound": None if not math.isfinite(bound) else round(bound, 4), "file_sha256": file_digest(name)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["ct-30", "blur-g2"])
    p.add_argument("--count", type=int, default=32, help="validation images scored (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = json.loads(OUT.read_text()) if OUT.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    for task in args.tasks:
        scores = {}
        earlier = table.get(task, {})
        for name in candidates(task):
            old = earlier.get("candidates", {}).get(name)
            if old is not None and earlier.get("validation_count") == args.count \
                    and old.get("file_sha256") == file_digest(name):
                scores[name] = old  # the same file on the same images: its score stands
            else:
                scores[name] = score(name, task, args.count)
            print(task, name, scores[name], flush=True)
        best = max(scores, key=lambda n: scores[n]["validation_psnr"])
        table[task] = {"name": best, "validation_count": args.count, "candidates": scores,
                       "command": "python scripts/select_models.py --tasks " + " ".join(args.tasks),
                       "commit": commit, "date": datetime.date.today().isoformat()}
    from invstable.models._io import atomic_write

    atomic_write(OUT, lambda tmp: Path(tmp).write_text(json.dumps(table, indent=1) + "\n"))
    print(json.dumps({t: v["name"] for t, v in table.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
