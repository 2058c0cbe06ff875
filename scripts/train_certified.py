"""Recipes of the shipped certified unrolled models (and their unconstrained twins) of issue 12.

Each recipe is an :class:`invstable.UnrolledInverse` with wide gradient-flow blocks (the state's channels mapped
to ``hidden`` features: free for the certificate), a learned spectral first guess, and contractive blocks whose
contraction is chosen so that the certified bound of the whole map cannot exceed the task's budget (twice
Tikhonov's exact constant at its validation alpha), whatever the training does to the steps (see
docs/models.md, "Certificates that do not grow with the iterations").

Training checkpoints go to checkpoints/<name>/full.pt (not committed: the power-iteration vectors make it about
100 MB); at the end of each run a compact copy without those vectors, checkpoints/<name>/checkpoint.pt (under
1 MB), is written and committed, so that a later session continues the same schedule with --resume (the vectors
are then re-derived from the weights by converged power iterations: the continuation differs from an
uninterrupted run only through those warm starts, not through the weights, the optimiser or the batches); at the
end of each run the best model on the validation split is written to
invstable/models/pretrained/<name>.safetensors and the learning curve to
benchmarks/results/training-<name>.json and .png.

Usage:
    python scripts/train_certified.py ct30-wide --until 2000 [--resume] [--threads 1]
    python scripts/train_certified.py --list
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

#: Tikhonov's exact Lipschitz constant at its validation-best alpha (identity regulariser; docs/benchmarks.md)
TIKHONOV_CONSTANT = {"ct-30": 8.891, "blur-g2": 5.000}

_WIDE = {"channels": 8, "depth": 1, "hidden": 32, "iterations": 10, "init": "learned"}
_SCHEDULE = {"steps": 3000, "levels": 2, "lr": 2e-3, "batch_size": 8}
#: name -> (task, model options, training options). Blur-G2's budget (10.0) is tight: a more regularised first
#: guess (B_0 = 1 / (2 sqrt(0.04)) = 2.5) and smaller data steps leave room for ten iterations.
RECIPES = {
    "ct30-wide": ("ct-30", {**_WIDE, "init_alpha": 0.008, "max_step": 0.5}, _SCHEDULE),
    "blur-wide": ("blur-g2", {**_WIDE, "init_alpha": 0.04, "max_step": 0.3}, _SCHEDULE),
    "ct30-wide-unconstrained": ("ct-30", {**_WIDE, "init_alpha": 0.008, "max_step": 0.5, "family": "unconstrained"},
                                _SCHEDULE),
    "blur-wide-unconstrained": ("blur-g2", {**_WIDE, "init_alpha": 0.04, "max_step": 0.3,
                                            "family": "unconstrained"}, _SCHEDULE),
}


def worst_bound(contraction: float, iterations: int, gain: float, first: float) -> float:
    """Largest certified bound ``B_K`` an unrolled model can reach: blocks of Lipschitz constant ``c``, steps
    ``tau_k ||A|| <= gain``, a first guess of norm ``first``: ``c^K B_0 + c gain (1 - c^K) / (1 - c)``."""
    c, k = contraction, iterations
    if c == 1.0:
        return first + k * gain
    return c ** k * first + c * gain * (1 - c ** k) / (1 - c)


def contraction_for(budget: float, iterations: int, gain: float, first: float) -> float:
    """The largest contraction ``c <= 1`` whose :func:`worst_bound` is at most ``budget`` (bisection)."""
    if worst_bound(1.0, iterations, gain, first) <= budget:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if worst_bound(mid, iterations, gain, first) <= budget else (lo, mid)
    return lo


def build(name: str):
    """The untrained model of recipe ``name``, its task and its training configuration."""
    from invstable.data import task
    from invstable.models import UnrolledInverse
    from invstable.training import TrainConfig

    task_name, model_opts, train_opts = RECIPES[name]
    spec = task(task_name)
    opts = dict(model_opts)
    family = opts.pop("family", "gradient_flow")
    model = UnrolledInverse(spec.operator, family=family, seed=0, **opts)
    if family != "unconstrained":
        # contraction of the blocks from the budget (1 where the budget allows): the steps at their ceiling and
        # 5 % of the budget kept for the learned first guess to grow (the certificate is the exact recursion)
        norm_a = model.operator_norm()
        gain = model.max_step * 2.0 / norm_a ** 2 * norm_a
        first = model._filter()[2]
        budget = 2.0 * TIKHONOV_CONSTANT[task_name]
        c = contraction_for(0.95 * budget - 0.05 * first, model.iterations, gain, first)
        if c < 1.0:
            model = UnrolledInverse(spec.operator, family=family, seed=0, contraction=c ** (1.0 / model.depth),
                                    **opts)
    config = TrainConfig(validate_every=100, checkpoint_every=100, seed=0, device="auto", progress=False,
                         **train_opts)
    return spec, model, config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", choices=sorted(RECIPES))
    p.add_argument("--list", action="store_true", help="print the recipes and exit")
    p.add_argument("--until", type=int, help="stop at this step of the schedule (continue later with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the committed checkpoint")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--validation-count", type=int, default=32)
    args = p.parse_args(argv)
    if args.list or args.name is None:
        for name, (task_name, model_opts, train_opts) in RECIPES.items():
            print(name, task_name, json.dumps(model_opts), json.dumps(train_opts))
        return 0

    from invstable.training import train
    from invstable.training._loop import evaluate

    torch.set_num_threads(args.threads)
    spec, model, config = build(args.name)
    validation = torch.utils.data.Subset(spec.pairs("validation"), range(args.validation_count))
    folder = ROOT / "checkpoints" / args.name
    checkpoint, compact_copy = folder / "full.pt", folder / "checkpoint.pt"
    folder.mkdir(parents=True, exist_ok=True)
    if (checkpoint.exists() or compact_copy.exists()) and not args.resume:
        raise SystemExit(f"{folder} holds a checkpoint: continue it with --resume (or delete it to start over)")
    if args.resume and not checkpoint.exists():
        if not compact_copy.exists():
            raise SystemExit(f"--resume: no checkpoint in {folder}")
        expand(compact_copy, checkpoint, model)
    start = time.perf_counter()
    result = train(model, spec.pairs("train"), validation=validation, config=config, checkpoint=checkpoint,
                   resume=args.resume, until=args.until)
    compact(checkpoint, compact_copy)
    best = result.model.refresh(reseed=True)
    curve = [{"step": h["step"], "seconds": h.get("seconds"), "validation_psnr": h["val_psnr"]}
             for h in result.history if "val_psnr" in h]
    record = {
        "task": RECIPES[args.name][0],
        "recipe": f"python scripts/train_certified.py {args.name} --until {result.steps}",
        "schedule_steps": config.steps, "steps": result.steps, "best_step": result.best_step,
        "validation_psnr": round(evaluate(best, validation), 3), "validation_count": args.validation_count,
        "lipschitz_bound": best.lipschitz_bound(),
        "tikhonov_constant": TIKHONOV_CONSTANT[RECIPES[args.name][0]],
        "parameters": sum(p.numel() for p in best.parameters()),
        "device": str(next(best.parameters()).device), "threads": args.threads, "torch": torch.__version__,
        "seconds_this_run": round(time.perf_counter() - start, 1),
    }
    out = ROOT / "invstable" / "models" / "pretrained" / f"{args.name}.safetensors"
    best.cpu().save(out, training=record)
    _write_curve(args.name, record, curve)
    print(json.dumps({"model": str(out), **record}))
    return 0


def _is_vector(key: str) -> bool:
    from invstable.models._unrolled import VECTORS

    return key.endswith(VECTORS)


def compact(full: Path, out: Path) -> None:
    """Write ``full`` without the power-iteration vectors (derived from the weights) to ``out``, with its digest."""
    from invstable.models._io import atomic_write, content_digest
    from invstable.training import load_checkpoint

    state = load_checkpoint(full)
    state["model"] = {k: v for k, v in state["model"].items() if not _is_vector(k)}
    if state["best"].get("weights") is not None:
        state["best"]["weights"] = {k: v for k, v in state["best"]["weights"].items() if not _is_vector(k)}
    state.pop("digest", None)
    state["digest"] = content_digest(state)
    atomic_write(out, lambda tmp: torch.save(state, tmp))


def expand(compact_path: Path, out: Path, model) -> None:
    """A full checkpoint from a compact one: the model's power-iteration vectors re-derived from its weights."""
    from invstable.models._io import atomic_write, content_digest
    from invstable.training import load_checkpoint

    state = load_checkpoint(compact_path)
    while model.depth < state["model_config"]["depth"]:
        model = model.prolong()
    model.load_state_dict(state["model"], strict=False)
    model.image_shape = tuple(state["model_config"]["image_shape"])
    model.refresh(reseed=True)
    state["model"] = model.weights()
    state.pop("digest", None)
    state["digest"] = content_digest(state)
    atomic_write(out, lambda tmp: torch.save(state, tmp))


def _write_curve(name: str, record: dict, curve: list[dict]) -> None:
    from invstable.training import write_curve

    payload = {"what": f"learning curve of {name}: validation PSNR (first {record['validation_count']} "
                       "validation images) against steps and seconds", **record, "curve": curve}
    write_curve(ROOT / "benchmarks" / "results" / f"training-{name}.json", payload,
                title=f"{name}: learning curve (bound {record['lipschitz_bound']:.2f})")


if __name__ == "__main__":
    raise SystemExit(main())
