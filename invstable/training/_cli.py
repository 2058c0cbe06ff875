"""The ``invstable train`` command (also under ``torchrun``: ``torchrun --nproc-per-node 2 -m invstable train ...``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..data._cli import _key_value
from ..data._tasks import TASKS
from ..models._unrolled import FAMILIES, INITS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train a learned unrolled inverse on a protocol task",
        description="Train an unrolled learned inverse (data-consistency steps and stable flows) on a task of "
                    "PROTOCOLS.md by the mean squared error; keeps the best model on the validation split. "
                    "Checkpoints are written atomically; rerun with --resume after an interruption. Under "
                    "torchrun each process takes a share of every batch (gloo on CPU, NCCL on GPU).")
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="protocol task (operator, noise, splits)")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    m = p.add_argument_group("model")
    m.add_argument("--family", default="gradient_flow", choices=sorted(FAMILIES),
                   help="family of the regularising blocks (default: %(default)s)")
    m.add_argument("--iterations", type=int, default=6, help="unrolled iterations K (default: %(default)s)")
    m.add_argument("--channels", type=int, default=8, help="width of the state (default: %(default)s)")
    m.add_argument("--depth", type=int, default=2, help="layers per block at the first level (default: %(default)s)")
    m.add_argument("--step", type=float, default=1.0, help="layer step h (default: %(default)s)")
    m.add_argument("--max-step", type=float, default=0.5,
                   help="data-consistency step as a fraction of 2/||A||^2 at most (default: %(default)s)")
    m.add_argument("--init", default="tikhonov", choices=INITS, help="first guess (default: %(default)s)")
    m.add_argument("--init-alpha", type=float, default=0.02, help="alpha of the first guess (default: %(default)s)")
    m.add_argument("--init-degree", type=int, default=30,
                   help="polynomial degree of the first guess (default: %(default)s)")
    m.add_argument("--option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="layer option, VALUE read as JSON (repeatable), e.g. --option hidden=16")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, default=2000, help="optimisation steps (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=8, help="global batch (default: %(default)s)")
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, cosine decay (default: %(default)s)")
    t.add_argument("--final-lr-ratio", type=float, default=0.05, help="final / peak learning rate (default: %(default)s)")
    t.add_argument("--smoothness", type=float, default=0.0, help="weight of the time-smoothness term (default: %(default)s)")
    t.add_argument("--levels", type=int, default=1,
                   help="multi-level training: the depth doubles between levels (default: %(default)s)")
    t.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip, 0 for none (default: %(default)s)")
    t.add_argument("--train-count", type=int, default=None, help="training pairs (default: the task's 10 000)")
    t.add_argument("--data", help="training pairs from an HDF5 file of `invstable dataset make` instead of on the fly")
    t.add_argument("--validation-data", help="validation pairs from an HDF5 file instead of on the fly")
    t.add_argument("--validation-count", type=int, default=32,
                   help="validation pairs scored (first ones of the split; default: %(default)s)")
    t.add_argument("--validate-every", type=int, default=100, help="in steps (default: %(default)s)")
    t.add_argument("--checkpoint", help="checkpoint file (default: OUT.ckpt)")
    t.add_argument("--checkpoint-every", type=int, default=100, help="in steps (default: %(default)s)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    t.add_argument("--seed", type=int, default=0, help="seed of the weights and of the batches (default: %(default)s)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: %(default)s)")
    t.add_argument("--amp", action="store_true", help="bfloat16 mixed precision (GPU)")
    t.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import torch

    from ..data import HDF5PairedDataset, task
    from ..models import UnrolledInverse
    from ._loop import TrainConfig, evaluate, train
    from ._distributed import distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = task(args.task)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, final_lr_ratio=args.final_lr_ratio,
                      smoothness=args.smoothness, levels=args.levels,
                      grad_clip=args.grad_clip if args.grad_clip > 0 else None,
                      validate_every=args.validate_every, checkpoint_every=args.checkpoint_every, seed=args.seed,
                      device=args.device, amp=args.amp, progress=not args.no_progress)
    train_data = (HDF5PairedDataset(args.data, operator=spec.operator) if args.data
                  else spec.pairs("train", count=args.train_count))
    validation = (HDF5PairedDataset(args.validation_data, operator=spec.operator) if args.validation_data
                  else spec.pairs("validation"))
    if args.validation_count is not None:
        validation = torch.utils.data.Subset(validation, range(min(args.validation_count, len(validation))))
    model = UnrolledInverse(spec.operator, family=args.family, iterations=args.iterations, channels=args.channels,
                            depth=args.depth, step=args.step, max_step=args.max_step, init=args.init,
                            init_alpha=args.init_alpha, init_degree=args.init_degree, seed=args.seed,
                            **dict(args.option))
    checkpoint = args.checkpoint or f"{args.out}.ckpt"
    start = time.perf_counter()
    with distributed(cfg.device) as (rank, _world):
        result = train(model, train_data, validation=validation, config=cfg, checkpoint=checkpoint,
                       resume=args.resume)
        if rank == 0:
            model = result.model.refresh(reseed=True)  # as save() does: the figures below are the file's
            record = {"task": args.task, "command": "invstable train " + " ".join(_argv(args)),
                      "steps": result.steps, "best_step": result.best_step,
                      "validation_psnr": round(evaluate(model, validation), 3),
                      "lipschitz_bound": model.lipschitz_bound(),
                      "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__}
            path = model.save(args.out, training=record)
            print(json.dumps({"model": str(Path(path).resolve()), **record}))
    return 0


def _argv(args) -> list[str]:
    """The options of this run, as a command line (recorded in the model file)."""
    out = []
    for key, value in sorted(vars(args).items()):
        if key in ("func", "command") or value is None or value is False or value == []:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif key == "option":
            out += [f"--option {k}={json.dumps(v)}" for k, v in value]
        else:
            out.append(f"{flag} {value}")
    return out


