"""The deepinv peer: what a user would pick instead of invstable (PROTOCOLS.md, "Methods compared").

deepinv's unrolled proximal gradient descent (``deepinv.unfolded.unfolded_builder("PGD")``) with a DnCNN
prior shared by the iterations and learned step sizes, trained on the same data, with the same batch size,
optimiser, schedule, gradient clipping and validation as the shipped invstable models. The DnCNN is sized like
the invstable models (depth 5, 16 features, 7 265 weights; the universal regulariser has 6 600 filter weights):
the comparison is at equal size and budget, not against deepinv's full-size DnCNN (668 k weights).

Budget (``BUDGET``): the recommended model of both tasks is the universal regulariser, trained for 3 300 steps
in 4 775 s on one CPU thread (benchmarks/results/universal_training.json). One peer step costs 1.43 s (CT-30)
and 1.44 s (Blur-G2) on the same thread, so 3 300 steps are the same compute; the record keeps the seconds
actually spent. The first peers had the budget of the small shipped models (1 500 and 1 000 steps), which
their curves showed was still rising. Training writes a resumable checkpoint (``checkpoint=``, under 1 MB)
at every validation and at the end of a run, so a run split over sessions follows the same schedule and batches as one run.

Sizing (PROTOCOLS.md asks for the largest peer that the budget trains well): on CT-30 a DnCNN of depth 7 with 24
features (26 509 weights, 3.2 s per step on one quiet thread) trained for the same compute (1 500 steps, cosine
schedule; ``python -m benchmarks.peer --task ct-30 --depth 7 --features 24 --steps 1500``) reached 28.89 dB on the
validation images (in 5 891 s on a core shared with two other runs), against 29.85 dB for depth 5 and 16
features at 3 300 steps: at this budget the smaller
DnCNN is the stronger peer, and stays (curve: ``benchmarks/results/training-peer-ct-30-d7f24.png``).

Nothing here is written by hand that deepinv already does; this module only trains, stores and loads it.

Weights: ``<folder>/peer-<task>.safetensors`` (safetensors; the header records the recipe and the validation
PSNR; the source checkout keeps them in ``benchmarks/results``). Loading never runs code.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from ..data import task as get_task
from ..models._io import atomic_write
from ..training import batch_indices, psnr

FORMAT = "invstable.benchmarks.peer/1"
#: training steps: the compute of the recommended model (the universal regulariser, 3 300 steps, 4 775 s at one
#: thread); see the module's docstring
BUDGET = 3300
#: per task: the unrolled iterations (those of the first shipped models, scripts/train_pretrained.sh) and steps
RECIPE = {
    "ct-30": {"iterations": 6, "steps": BUDGET},
    "blur-g2": {"iterations": 5, "steps": BUDGET},
}
COMMON = {"depth": 5, "features": 16, "batch_size": 8, "lr": 2e-3, "final_lr_ratio": 0.05, "grad_clip": 1.0,
          "validate_every": 100, "validation_count": 32, "seed": 0}


class DeepinvPeer(nn.Module):
    """``y -> x`` with deepinv's unrolled PGD + DnCNN on a fixed operator (a plain reconstructor callable)."""

    def __init__(self, operator, *, iterations: int, depth: int = 5, features: int = 16):
        super().__init__()
        from deepinv.models import DnCNN  # noqa: PLC0415
        from deepinv.optim import PnP  # noqa: PLC0415
        from deepinv.optim.data_fidelity import L2  # noqa: PLC0415
        from deepinv.unfolded import unfolded_builder  # noqa: PLC0415

        denoiser = DnCNN(1, 1, depth=depth, nf=features, pretrained=None)
        self.net = unfolded_builder(
            "PGD", params_algo={"stepsize": [1.0] * iterations, "g_param": [0.01] * iterations},
            trainable_params=["stepsize", "g_param"], data_fidelity=L2(), prior=PnP(denoiser=denoiser),
            max_iter=iterations)
        self.operator = operator
        self.recipe = {"iterations": iterations, "depth": depth, "features": features}

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y, self.operator)


def weights_path(task: str, folder: str | Path) -> Path:
    """Where the peer of ``task`` is stored in ``folder``: ``folder/peer-<task>.safetensors``."""
    return Path(folder) / f"peer-{task}.safetensors"


def _pairs(dataset, indices, device):
    xs, ys = zip(*(dataset[int(i)] for i in indices))
    return torch.stack(xs).to(device), torch.stack(ys).to(device)


def _snapshot(model) -> dict:
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def train_peer(task: str, *, out: str | Path, steps: int | None = None, threads: int | None = None,
               validation_count: int | None = None, device: str = "cpu", checkpoint: str | Path | None = None,
               resume: bool = False, until: int | None = None, depth: int | None = None,
               features: int | None = None, log=print) -> dict:
    """Train the peer of ``task`` (``RECIPE``); return the training record.

    ``checkpoint``: a file rewritten (atomically) at every validation and at the end with the weights, the optimiser, the
    schedule, the best weights so far and the curve; with ``resume`` the run continues from it (the batches are a
    function of the step, so the continuation is the run that was not interrupted). ``until``: stop after that
    step (the schedule stays that of ``steps``). ``depth`` and ``features`` size the DnCNN (default ``COMMON``:
    5 and 16); they are part of the recipe, so a checkpoint of another size is refused. The weights (the best on validation) are written to
    ``out/peer-<task>.safetensors`` only when the schedule is complete; the record says ``complete``.
    """
    from safetensors.torch import save_file  # noqa: PLC0415

    if task not in RECIPE:
        raise ValueError(f"task must be one of {sorted(RECIPE)}, got {task!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint file to continue from (checkpoint=PATH)")
    if threads:
        torch.set_num_threads(threads)
    cfg = dict(COMMON, **RECIPE[task])
    if steps is not None:
        cfg["steps"] = steps
    if validation_count is not None:
        cfg["validation_count"] = validation_count
    for name, value in (("depth", depth), ("features", features)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"{name} must be an int >= 2 (the DnCNN's layers / channels), got {value!r}")
            cfg[name] = value
    spec = get_task(task)
    dev = torch.device(device)
    torch.manual_seed(cfg["seed"])  # the initial weights, so that a run is reproduced by its recipe
    model = DeepinvPeer(spec.operator, iterations=cfg["iterations"], depth=cfg["depth"],
                        features=cfg["features"]).to(dev)
    train_data, val_data = spec.pairs("train"), spec.pairs("validation")
    n_val = min(cfg["validation_count"], len(val_data))
    xv, yv = _pairs(val_data, range(n_val), dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    r = cfg["final_lr_ratio"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: r + (1 - r) * 0.5 * (1 + math.cos(math.pi * min(s / cfg["steps"], 1.0))))

    def validate():
        model.eval()
        with torch.no_grad():
            value = float(torch.cat([psnr(model(yv[i:i + 8]), xv[i:i + 8]) for i in range(0, n_val, 8)]).mean())
        model.train()
        return value

    best = {"psnr": -math.inf, "step": 0, "state": None}
    history, first, spent = [], 0, 0.0
    if resume:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"no peer checkpoint at {path} to resume from; start without --resume")
        saved = torch.load(path, map_location=dev, weights_only=True)
        if saved.get("format") != FORMAT + "-checkpoint" or saved.get("cfg") != cfg:
            raise ValueError(f"{path} is a checkpoint of another run (task or recipe {saved.get('cfg')!r}, "
                             f"this run {cfg!r}); start without --resume or pass the same --steps")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["schedule"])
        best, history, first, spent = saved["best"], saved["history"], saved["step"], saved["seconds"]
        log(f"peer {task}: resumed at step {first} ({spent:.0f} s spent)")
    last = cfg["steps"] if until is None else min(until, cfg["steps"])
    start = time.perf_counter()

    def seconds():  # the training time of the whole schedule so far, the earlier runs included
        return spent + time.perf_counter() - start

    def save_checkpoint(step):
        state = {"format": FORMAT + "-checkpoint", "cfg": cfg, "step": step, "model": _snapshot(model),
                 "optimizer": opt.state_dict(), "schedule": sched.state_dict(), "best": best, "history": history,
                 "seconds": seconds()}
        atomic_write(Path(checkpoint), lambda tmp: torch.save(state, tmp))

    for step in range(first, last):
        x, y = _pairs(train_data, batch_indices(cfg["seed"], step, len(train_data), cfg["batch_size"]), dev)
        loss = (model(y) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        sched.step()
        if (step + 1) % cfg["validate_every"] == 0 or step + 1 == cfg["steps"]:
            value = validate()
            history.append({"step": step + 1, "loss": float(loss.detach()), "validation_psnr": value,
                            "seconds": round(seconds(), 1)})
            log(f"peer {task} step {step + 1}/{cfg['steps']} loss {float(loss.detach()):.5f} validation PSNR {value:.2f}")
            if value > best["psnr"]:
                best = {"psnr": value, "step": step + 1, "state": _snapshot(model)}
            if checkpoint is not None:
                save_checkpoint(step + 1)
    if checkpoint is not None and last > first:
        save_checkpoint(last)
    complete = last == cfg["steps"]
    record = {"format": FORMAT, "task": task, "recipe": cfg, "best_step": best["step"],
              "validation_psnr": best["psnr"], "train_seconds": round(seconds(), 1),
              "threads": torch.get_num_threads(), "complete": complete, "history": history}
    if complete:
        atomic_write(weights_path(task, out),
                     lambda tmp: save_file(best["state"], tmp, metadata={"invstable": json.dumps(record)}))
    return record


def load_peer(task: str, path: str | Path) -> tuple[DeepinvPeer, dict]:
    """The trained peer of ``task`` stored at ``path`` and its training record; a clear error when there is none.

    Safetensors (tensors and a JSON header): loading never runs code.
    """
    from safetensors import safe_open  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no deepinv peer weights at {path}; train them with "
                                f"`python -m benchmarks.peer --task {task}`")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("invstable", "{}"))
        state = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != FORMAT or meta.get("task") != task:
        raise ValueError(f"{path} is not deepinv-peer weights for {task!r} "
                         f"(format {meta.get('format')!r}, task {meta.get('task')!r})")
    recipe = meta["recipe"]
    model = DeepinvPeer(get_task(task).operator, iterations=recipe["iterations"], depth=recipe["depth"],
                        features=recipe["features"])
    model.load_state_dict(state, strict=True)
    return model.eval(), meta
