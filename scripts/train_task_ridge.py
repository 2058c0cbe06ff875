"""Recipe of the task-tuned ridge regularisers (invstable/models/pretrained/<task-prefix>-ridge.safetensors).

Starts from the shipped universal regulariser and its preset for the task, and fine-tunes its filters, its
activations, lam and scale through the minimiser on the task's training patches (invstable.training.finetune_ridge;
the certified bound is held at --max-lipschitz). Checkpoints to checkpoints/<name>/checkpoint.pt (small; committed
so that a later session continues it with --resume), then writes the model file (the weights best on validation)
and its learning curve (benchmarks/results/training-<name>.json and .png).

Usage:
    python scripts/train_task_ridge.py --task blur-g2 --steps 800 [--until 800] [--resume] [--threads 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from invstable.training import TaskRidgeConfig, finetune_ridge, save_task_ridge, write_task_ridge_curve

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"blur-g2": "blur-ridge"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="blur-g2", choices=sorted(NAMES))
    p.add_argument("--steps", type=int, default=TaskRidgeConfig.steps)
    p.add_argument("--until", type=int, help="stop at this step of the --steps schedule (continue later with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint (same recipe)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pool", type=int, default=TaskRidgeConfig.pool, help="training patches (each keeps its minimiser)")
    p.add_argument("--lr-weights", type=float, default=TaskRidgeConfig.lr_weights, help="learning rate of log lam, log mu")
    p.add_argument("--validate-every", type=int, default=TaskRidgeConfig.validate_every)
    p.add_argument("--name", default=None, help="model name (default: blur-ridge for blur-g2): the file, checkpoint "
                                                "and curve are named after it")
    args = p.parse_args(argv)
    name = args.name or NAMES[args.task]
    config = TaskRidgeConfig(task=args.task, steps=args.steps, pool=args.pool, lr_weights=args.lr_weights,
                             validate_every=args.validate_every)
    model, record = finetune_ridge(config, checkpoint=ROOT / "checkpoints" / name / "checkpoint.pt",
                                   resume=args.resume, threads=args.threads, until=args.until)
    if record["steps"] < config.steps:
        print(f"stopped at step {record['steps']} of {config.steps}; continue with --resume")
        return 0
    record["recipe"] = (f"python scripts/train_task_ridge.py --task {args.task} --steps {args.steps} --pool {args.pool} "
                        f"--lr-weights {args.lr_weights:g} --validate-every {args.validate_every}")
    out = ROOT / "invstable" / "models" / "pretrained" / f"{name}.safetensors"
    save_task_ridge(model, record, out, overwrite=args.overwrite)
    curve = write_task_ridge_curve(record, ROOT / "benchmarks" / "results" / f"training-{name}.json", name=name)
    print(f"wrote {out} and {curve}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
