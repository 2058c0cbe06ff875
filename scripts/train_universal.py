"""Recipe of the shipped "universal" convex ridge regulariser (invstable/models/pretrained/universal.safetensors).

Trains the regulariser as a denoiser on patches (invstable.training.train_ridge), checkpointing to
checkpoints/universal/checkpoint.pt (small; committed so that a later session continues it with --resume), then
writes the model file and its learning curve (benchmarks/results/universal_training.json and .png).

Usage:
    python scripts/train_universal.py --steps 5000 [--resume] [--threads 2]
    python scripts/train_universal.py --steps 5000 --export-only    # model file from the finished checkpoint
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from invstable.training import RidgeConfig, save_universal, train_ridge, write_learning_curve

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=RidgeConfig.steps)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "universal" / "checkpoint.pt")
    p.add_argument("--out", type=Path, default=ROOT / "invstable" / "models" / "pretrained" / "universal.safetensors")
    p.add_argument("--curve", type=Path, default=ROOT / "benchmarks" / "results" / "universal_training.json")
    p.add_argument("--until", type=int, help="stop at this step of the --steps schedule (continue later with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint (same recipe)")
    p.add_argument("--export-only", action="store_true", help="only write the model file from a finished checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--presets", type=Path, help="benchmarks/results/universal.json: ship the validation tuning of "
                                                "its protocol tasks as presets")
    args = p.parse_args(argv)
    config = RidgeConfig(steps=args.steps)
    until = args.until if args.until is not None else config.steps
    model, record = train_ridge(config, checkpoint=args.checkpoint, resume=args.resume or args.export_only,
                                threads=args.threads, until=0 if args.export_only else until)
    if record["steps"] < until:
        raise SystemExit(f"the checkpoint holds {record['steps']} of {until} steps; run without --export-only")
    record["recipe"] = f"python scripts/train_universal.py --steps {args.steps} --until {record['steps']}"
    presets = {}
    if args.presets is not None:
        protocol = json.loads(args.presets.read_text())["protocol"]
        presets = {task: {k: row.get(k, 0.0) for k in ("lam", "scale", "strong_convexity", "reference", "bounds")}
                   | {"validation_psnr": row["tuning"]["validation_psnr"], "n_validation": row["tuning"]["n_validation"]}
                   for task, row in protocol.items()}
    save_universal(model, record, args.out, overwrite=args.overwrite, presets=presets)
    write_learning_curve(record, args.curve)
    print(f"wrote {args.out} and {args.curve}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
