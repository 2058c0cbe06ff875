"""Short-trial ablation of the certified unrolled design (issue 12): what width, contraction and the learned first
guess each change, at a fixed small budget, on one task.

Every variant is an :class:`invstable.UnrolledInverse` trained by :func:`invstable.training.train` with the same
seed, batches, schedule (Adam, cosine) and step count; the score is the mean PSNR on the first ``--validation``
validation images of the task (never test images), with the certified bound. A short trial ranks designs; it
does not predict where a long run ends (see the learning curves of the shipped models).

Usage: python -m benchmarks.ablation [--task ct-30] [--steps 200] [--variants wide narrow ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks._common import RESULTS, environment, write_result

BASE = {"iterations": 10, "channels": 8, "depth": 1, "hidden": 32, "max_step": 0.5, "init": "tikhonov"}
INIT_ALPHA = {"ct-30": 0.005, "blur-g2": 0.01}
#: name -> (what it changes, options over BASE)
VARIANTS = {
    "wide": ("hidden 32, non-expansive blocks, Tikhonov first guess (the reference)", {}),
    "narrow": ("hidden 8 (the width of the first shipped models)", {"hidden": 8}),
    "contraction-0.9": ("blocks contract by 0.9 (a bound that does not grow with K)", {"contraction": 0.9}),
    "learned-first-guess": ("the first guess's Chebyshev coefficients learned", {"init": "learned"}),
    "contraction-0.9-anchored": ("blocks contract by 0.9 towards the first guess (anchor 0.1)",
                                 {"contraction": 0.9, "anchor": 0.1}),
    "multiscale": ("every other block at half resolution (pixel unshuffle)", {"scales": (1, 2)}),
    "spline": ("learned monotone spline activations instead of ReLU", {"activation": "spline"}),
}


def trial(task_name: str, variant: str, *, steps: int, n_val: int) -> dict:
    from invstable.data import task
    from invstable.models import UnrolledInverse
    from invstable.training import TrainConfig, train

    spec = task(task_name)
    validation = torch.utils.data.Subset(spec.pairs("validation"), range(n_val))
    options = {**BASE, "init_alpha": INIT_ALPHA[task_name], **VARIANTS[variant][1]}
    model = UnrolledInverse(spec.operator, seed=0, **options)
    config = TrainConfig(steps=steps, batch_size=8, lr=2e-3, validate_every=max(1, steps // 4),
                         checkpoint_every=10 ** 9, seed=0, device="cpu", progress=False)
    start = time.perf_counter()
    result = train(model, spec.pairs("train"), validation=validation, config=config)
    curve = [{"step": h["step"], "validation_psnr": h["val_psnr"]} for h in result.history if "val_psnr" in h]
    return {"variant": variant, "what": VARIANTS[variant][0], "options": options, "steps": steps,
            "validation_psnr": max(c["validation_psnr"] for c in curve), "curve": curve,
            "lipschitz_bound": result.model.lipschitz_bound(),
            "parameters": sum(p.numel() for p in result.model.parameters()),
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="ct-30", choices=sorted(INIT_ALPHA))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--validation", type=int, default=16, help="validation images scored (default: %(default)s)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results-dir", default=None)
    p.add_argument("--resume", action="store_true",
                   help="keep the variants an earlier run of the same task, steps and validation count measured")
    args = p.parse_args(argv)
    if args.steps < 1 or args.validation < 1:
        p.error("--steps and --validation must be positive")
    torch.set_num_threads(args.threads)
    payload = {"benchmark": "ablation", "environment": environment("cpu"), "task": args.task,
               "command": "python -m benchmarks.ablation --task " + args.task + f" --steps {args.steps} "
                          f"--validation {args.validation} --variants " + " ".join(args.variants),
               "complete": False, "rows": []}
    kept = {}
    path = (RESULTS if args.results_dir is None else Path(args.results_dir)) / f"ablation-{args.task}.json"
    if args.resume and path.is_file():
        earlier = json.loads(path.read_text())
        kept = {r["variant"]: {**r, "measured_at": r.get("measured_at", earlier["environment"]["git_commit"])}
                for r in earlier["rows"] if r["steps"] == args.steps and earlier.get("validation") == args.validation}
        payload["rows"] = [r for v, r in kept.items() if v not in args.variants]
        payload["command"] += " --resume"
    payload["validation"] = args.validation
    for v in args.variants:
        payload["rows"].append(trial(args.task, v, steps=args.steps, n_val=args.validation))
        payload["complete"] = len(payload["rows"]) == len(args.variants)
        write_result(f"ablation-{args.task}", payload, results_dir=args.results_dir)
        r = payload["rows"][-1]
        print(f"{v:<22} {r['validation_psnr']:.2f} dB  bound {r['lipschitz_bound']:.2f}  {r['seconds']:.0f} s",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
