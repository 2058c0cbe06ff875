"""Supervised training of learned inverses: Adam with a cosine schedule, validation, atomic checkpoints, DDP."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from .._files import atomic_write
from ..models._io import ModelFileError, content_digest
from ..models._unrolled import UnrolledInverse
from ..operators._base import config_of

#: checkpoints with a digest of their content and a record of the run's inputs (operator, data, context)
CHECKPOINT_FORMAT = "invstable.checkpoint/2"
#: checkpoints written before: read, with a warning that their content and inputs cannot be checked
LEGACY_CHECKPOINT_FORMAT = "invstable.checkpoint/1"


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`.

    Attributes
    ----------
    steps : int
        Optimisation steps in total (over every level).
    batch_size : int
        Global batch (split across processes under ``torchrun``).
    lr : float
        Peak learning rate of Adam; cosine decay to ``lr * final_lr_ratio``.
    final_lr_ratio : float
    smoothness : float
        Weight of the time-smoothness regulariser (:meth:`UnrolledInverse.time_smoothness`).
    levels : int
        Multi-level training: the steps are split into ``levels`` equal parts and the depth of every
        block doubles (:meth:`UnrolledInverse.prolong`) between two parts.
    grad_clip : float or None
        Clip the gradient norm (``None``: off).
    validate_every, checkpoint_every : int
        In steps; validation keeps the best model (highest mean PSNR).
    seed : int
        Seeds the batches drawn at each step (so a resumed run draws the same ones).
    device : str
        "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    amp : bool
        Mixed precision (bfloat16 autocast) for the regularising blocks.
    progress : bool
        Show a progress bar with the loss and the validation PSNR.
    """

    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    final_lr_ratio: float = 0.05
    smoothness: float = 0.0
    levels: int = 1
    grad_clip: float | None = 1.0
    validate_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "levels", "validate_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 < self.final_lr_ratio <= 1:
            raise ValueError(f"final_lr_ratio must be in (0, 1], got {self.final_lr_ratio!r}")
        if self.smoothness < 0:
            raise ValueError(f"smoothness must be >= 0, got {self.smoothness!r}")
        if self.levels > 1 and self.steps < self.levels:
            raise ValueError(f"steps ({self.steps}) must be at least levels ({self.levels})")


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the best model on validation and the history."""

    model: UnrolledInverse
    history: list[dict]
    best_step: int
    best_psnr: float
    steps: int


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as torch reads it, with a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r} is not a torch device ({err}); use 'auto', 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu or auto")
    return dev


def batch_indices(seed: int, step: int, size: int, batch: int) -> torch.Tensor:
    """The sample indices of global step ``step``: a function of (seed, step) only, so resuming is exact.

    Each pass over the data is a random permutation; batches run through it in order.
    """
    per_epoch = max(1, size // batch)
    epoch, j = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2 ** 63))
    perm = torch.randperm(size, generator=gen)
    if size < batch:
        perm = perm.repeat(-(-batch // size))
    return perm[j * batch:(j + 1) * batch]


def _stack(dataset, indices, device):
    xs, ys = zip(*(dataset[int(i)] for i in indices))
    return torch.stack(xs).to(device), torch.stack(ys).to(device)


def psnr(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each image of a batch (data range 1, no clipping)."""
    mse = (x_hat - x).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-20))


@torch.no_grad()
def evaluate(model: nn.Module, dataset, *, batch_size: int = 16, device=None) -> float:
    """Mean PSNR of ``model`` over ``dataset`` (pairs ``(x, y)``) in eval mode."""
    if len(dataset) == 0:
        raise ValueError("evaluate() needs at least one pair; the dataset is empty")
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    values = []
    for start in range(0, len(dataset), batch_size):
        x, y = _stack(dataset, range(start, min(len(dataset), start + batch_size)), device)
        values.append(psnr(model(y).float(), x.float()))
    model.train(was_training)
    return float(torch.cat(values).mean())


def _level_bounds(cfg: TrainConfig) -> list[int]:
    """First step of each level."""
    return [cfg.steps * j // cfg.levels for j in range(cfg.levels)]


def _lr_lambda(cfg: TrainConfig):
    def factor(step):
        t = min(step / max(1, cfg.steps), 1.0)
        return cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return factor


def _make_optimizer(model, cfg, step):
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg), last_epoch=-1)
    for group in opt.param_groups:
        group["lr"] = cfg.lr * _lr_lambda(cfg)(step)
    sched.last_epoch = step
    return opt, sched


def save_checkpoint(path, *, model, optimizer, scheduler, step, best, history, cfg, inputs=None) -> None:
    """Everything a resumed run needs, written atomically (``torch.save``; read back with weights_only), with the
    run's ``inputs`` (:func:`run_inputs`) and a SHA-256 digest of the whole content."""
    payload = {
        "format": CHECKPOINT_FORMAT, "step": step, "config": dataclasses.asdict(cfg),
        "model_config": model.config(), "operator_config": model.operator.config(),
        "model": model.weights(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "best": best, "history": history, "inputs": inputs,
    }
    payload["digest"] = content_digest(payload)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path) -> dict:
    """Read a checkpoint without running code (``torch.load(weights_only=True)``) and check its digest; a clear
    error (:class:`ModelFileError` naming the file) otherwise."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as err:  # noqa: BLE001 (torch raises many types for bad files: report them all alike)
        raise ModelFileError(f"{str(path)!r} is not a readable invstable checkpoint (truncated, corrupted, or "
                             f"it holds objects that would need code to load): {type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}") from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt not in (CHECKPOINT_FORMAT, LEGACY_CHECKPOINT_FORMAT):
        raise ModelFileError(f"{str(path)!r} is not an invstable checkpoint (format "
                             f"{fmt if isinstance(payload, dict) else type(payload).__name__!r})")
    if fmt == LEGACY_CHECKPOINT_FORMAT:
        warnings.warn(f"checkpoint {str(path)!r} has the legacy format {fmt!r}, written before checkpoints carried "
                      "a digest and a record of their data: its content and its data cannot be checked",
                      UserWarning, stacklevel=2)
        return payload
    stored = payload.pop("digest", None)
    if stored is None or stored != content_digest(payload):
        raise ModelFileError(f"checkpoint {str(path)!r} does not match the digest it holds (the file is damaged); "
                             "start a new run (--overwrite) or resume from an intact copy")
    return payload


# ---------------------------------------------------------------------------------------------- inputs of a run
def describe_data(dataset) -> dict | None:
    """A JSON description of a dataset of pairs, as precise as the dataset allows: what a resumed run must find
    again to reproduce the uninterrupted one.

    A file of ``invstable dataset make`` (:class:`invstable.data.HDF5PairedDataset`) is described by its content
    checksum (not its path: a moved copy is the same data), task, split and count; pairs made on the fly
    (:class:`invstable.data.PairedDataset`) by their source's configuration, operator, noise and seed; a
    ``Subset`` by what it selects; a ``ConcatDataset`` by its parts; any other dataset by its length only.
    """
    from torch.utils.data import ConcatDataset, Subset

    from ..data import HDF5PairedDataset, PairedDataset

    if dataset is None:
        return None
    if isinstance(dataset, Subset):
        indices = [int(i) for i in dataset.indices]
        return {"subset": {"of": describe_data(dataset.dataset), "count": len(indices),
                           "indices": hashlib.sha256(json.dumps(indices).encode()).hexdigest()[:16]}}
    if isinstance(dataset, ConcatDataset):
        return {"concat": [describe_data(d) for d in dataset.datasets]}
    if isinstance(dataset, HDF5PairedDataset):
        meta = dataset.meta
        return {"file": {"checksum": dataset.checksum, "task": meta.get("task"), "split": meta.get("split"),
                         "count": len(dataset)}}
    if isinstance(dataset, PairedDataset):
        source = dataset.source
        source_config = source.config() if callable(getattr(source, "config", None)) else {
            "type": type(source).__qualname__, "count": len(source)}
        return {"pairs": _json({"source": source_config, "operator": config_of(dataset.operator) or
                                type(dataset.operator).__name__, "noise": dataset.noise.config(),
                                "seed": dataset.seed, "fixed_noise": dataset.fixed_noise, "count": len(dataset)})}
    # of another dataset only its length is known (its class may be a wrapper, e.g. one that logs or fails)
    return {"dataset": {"count": len(dataset)}}


def _json(value):
    return json.loads(json.dumps(value, default=str))


def run_inputs(model, train_data, validation=None, context: dict | None = None) -> dict:
    """What a run is made from besides its settings: the operator's configuration, :func:`describe_data` of the
    training and validation pairs, and ``context`` (e.g. ``{"task": "ct-30"}``). Stored in every checkpoint;
    a resumed run must have the same."""
    operator = config_of(model.operator) or type(model.operator).__name__
    return _json({**(context or {}), "operator": operator, "training data": describe_data(train_data),
                  "validation data": describe_data(validation)})


def _differences(old, new, prefix: str = "") -> list[str]:
    """``"key: checkpoint X, now Y"`` for every leaf that differs between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        if "name" in old and "name" in new and old["name"] != new["name"]:  # e.g. another operator: its name says it
            return _differences(old["name"], new["name"], f"{prefix}.name" if prefix else "name")
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    if old == new:
        return []
    return [f"{prefix or 'value'}: checkpoint {_short(old)}, now {_short(new)}"]


def _short(value) -> str:
    if isinstance(value, list) and (len(value) > 8 or any(isinstance(v, (list, dict)) for v in value)):
        return f"<list of {len(value)}>"
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_resume_inputs(path, state: dict, inputs: dict) -> None:
    if state.get("inputs") is None:  # a legacy checkpoint: its operator at least is known
        stored, inputs = {"operator": state.get("operator_config")}, {"operator": inputs.get("operator")}
    else:
        stored = state["inputs"]
    differ = _differences(stored, inputs)
    if differ:
        raise ValueError(f"the checkpoint {str(path)!r} was made from other inputs, so resuming would not reproduce "
                         f"the run ({'; '.join(differ[:8])}{'; ...' if len(differ) > 8 else ''}); resume with the "
                         "same task, operator and data, or start a new run (overwrite=True, --overwrite)")


def _check_splits(train_data, validation) -> None:
    """Refuse dataset files whose recorded split breaks the protocol: training pairs from another split than
    "train", validation pairs from the "test" split (test data are for the final scores only)."""
    for role, data, allowed in (("training", train_data, ("train", None)),
                                ("validation", validation, ("train", "validation", None))):
        for file in _files(data):
            split = file.meta.get("split")
            if split not in allowed:
                raise ValueError(
                    f"the {role} pairs {str(file.path)!r} are the {split!r} split of {file.meta.get('task')!r} "
                    f"(made with --split {split}); {role} on {split} data breaks the protocol (test data are for the "
                    "final scores only, validation data for choosing the model): make the file with --split "
                    f"{'train' if role == 'training' else 'validation'}")


def _files(dataset):
    """The dataset files inside ``dataset`` (through Subset and ConcatDataset)."""
    from torch.utils.data import ConcatDataset, Subset

    from ..data import HDF5PairedDataset

    if isinstance(dataset, Subset):
        yield from _files(dataset.dataset)
    elif isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            yield from _files(part)
    elif isinstance(dataset, HDF5PairedDataset):
        yield dataset


def _distributed():
    """``(rank, world)`` under an initialised process group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def train(model: UnrolledInverse, train_data, *, validation=None, config: TrainConfig | None = None,
          checkpoint: str | os.PathLike | None = None, resume: bool = False,
          until: int | None = None, overwrite: bool = False, context: dict | None = None) -> TrainResult:
    """Train ``model`` on pairs ``(x, y)`` by the mean squared error of ``model(y)`` against ``x``.

    Parameters
    ----------
    model : UnrolledInverse
    train_data : Dataset of pairs ``(x, y)``
        E.g. ``invstable.data.task("ct-30").pairs("train")`` (on the fly) or an
        :class:`invstable.data.HDF5PairedDataset`.
    validation : Dataset of pairs, optional
        Scored (mean PSNR) every ``validate_every`` steps and at the end; the best model is kept. Without
        it, the last model is returned.
    config : TrainConfig
    checkpoint : path, optional
        Written atomically every ``checkpoint_every`` steps and at the end.
    resume : bool
        Continue from ``checkpoint``, which must exist and match the model's configuration, the training
        settings and the run's inputs (:func:`run_inputs`: operator, training and validation data, ``context``);
        anything else is refused, since it would not reproduce the run. The result is the same as that of an
        uninterrupted run with the same seed.
    until : int, optional
        Stop after this step of the ``config.steps`` schedule (the checkpoint is written there); a later call
        with ``resume=True`` continues the same schedule. Default: ``config.steps``.
    overwrite : bool
        Without ``resume``, an existing ``checkpoint`` is refused (FileExistsError) unless this is true.
    context : dict, optional
        JSON values that a resumed run must match too, e.g. ``{"task": "ct-30"}`` (recorded in the checkpoint).

    Under ``torchrun`` (an initialised default process group), each process takes its share of every global
    batch and the gradients are averaged (DistributedDataParallel); rank 0 validates and writes.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        Bad settings, an empty training or validation set, dataset files of a split that breaks the protocol
        (training on anything but "train", validating on "test"), or a checkpoint made from other settings or
        inputs.
    FileNotFoundError, FileExistsError
        ``resume`` without a checkpoint; an existing checkpoint without ``resume`` or ``overwrite``.
    """
    cfg = config or TrainConfig()
    rank, world = _distributed()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the number of processes ({world})")
    device = resolve_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if cfg.levels > 1 and model.family == "dense":
        raise ValueError("multi-level training (levels > 1) cannot prolong the dense family (its memory weights "
                         "couple every pair of layers); use levels=1")
    if len(train_data) == 0:
        raise ValueError("the training set is empty")
    if validation is not None and len(validation) == 0:
        raise ValueError("the validation set is empty; give at least one pair (--validation-count >= 1) or "
                         "validation=None")
    _check_splits(train_data, validation)
    if checkpoint is not None and not resume and not overwrite and Path(checkpoint).exists():
        raise FileExistsError(f"checkpoint {str(checkpoint)!r} exists; continue it with resume=True (--resume) or "
                              "start over with overwrite=True (--overwrite)")
    inputs = run_inputs(model, train_data, validation, context)
    model = model.to(device).train()
    step, history, best = 0, [], {"step": -1, "psnr": -math.inf, "weights": None}
    levels = _level_bounds(cfg)
    state = None
    if resume:
        if checkpoint is None or not Path(checkpoint).exists():
            raise FileNotFoundError(f"--resume needs an existing checkpoint, got {checkpoint!r}")
        state = load_checkpoint(checkpoint)
        changed = sorted(k for k, v in dataclasses.asdict(cfg).items()
                         if k not in ("progress", "device") and state["config"].get(k) != v)
        if changed:
            raise ValueError(f"the checkpoint was made with other training settings ({changed}); resume with the "
                             "same settings or start a new run")
        mine = {k: v for k, v in model.config().items() if k not in ("depth", "step", "image_shape")}
        # the checkpoint's configuration as this version reads it (settings added since take their defaults)
        theirs = _normalised_config(state["model_config"], model)
        theirs = {k: v for k, v in theirs.items() if k not in ("depth", "step", "image_shape")}
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if differ:
            raise ValueError(f"the checkpoint holds another model (different {differ}); resume with the model it "
                             "was made for or start a new run")
        _check_resume_inputs(checkpoint, state, inputs)
        step, history, best = state["step"], state["history"], state["best"]
        # the checkpoint may be at a finer level than the model passed in
        while model.depth < state["model_config"]["depth"]:
            model = model.prolong().to(device)
        model.load_state_dict(state["model"], strict=False)
    if step == 0 and state is None:
        model.refresh()
    opt, sched = _make_optimizer(model, cfg, step)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    ddp = _wrap(model, device, world)

    bar = None
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc="train", dynamic_ncols=True)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if cfg.amp
                else contextlib.nullcontext())
    last_psnr = best["psnr"]
    stop = cfg.steps if until is None else min(int(until), cfg.steps)
    # wall-clock seconds of training, carried over a resume (the learning curve against time)
    clock = time.perf_counter() - (history[-1].get("seconds", 0.0) if history else 0.0)
    while step < stop:
        if step in levels[1:]:  # a new level: every block gets twice the layers at half the step
            model = model.prolong().to(device).train()
            opt, sched = _make_optimizer(model, cfg, step)
            ddp = _wrap(model, device, world)
        idx = batch_indices(cfg.seed, step, len(train_data), cfg.batch_size)[rank::world]
        x, y = _stack(train_data, idx, device)
        with autocast:
            loss = (ddp(y).float() - x).pow(2).mean()
            if cfg.smoothness:
                loss = loss + cfg.smoothness * model.time_smoothness()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        record = {"step": step, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"],
                  "seconds": round(time.perf_counter() - clock, 3)}
        if validation is not None and (step % cfg.validate_every == 0 or step == cfg.steps) and rank == 0:
            last_psnr = evaluate(model, validation, device=device)
            record["val_psnr"] = last_psnr
            if last_psnr > best["psnr"]:
                best = {"step": step, "psnr": last_psnr, "weights": _cpu(model.weights()),
                        "model_config": model.config()}
        history.append(record)
        if bar is not None:
            bar.set_postfix(loss=f"{record['loss']:.2e}", val_psnr=f"{last_psnr:.2f}")
            bar.update(1)
        if checkpoint is not None and rank == 0 and (step % cfg.checkpoint_every == 0 or step in (stop, cfg.steps)):
            save_checkpoint(checkpoint, model=model, optimizer=opt, scheduler=sched, step=step, best=best,
                            history=history, cfg=cfg, inputs=inputs)
    if bar is not None:
        bar.close()
    if best["weights"] is not None:
        final = UnrolledInverse.from_config(best["model_config"], operator=model.operator).to(device)
        final.load_state_dict(best["weights"], strict=False)
    else:
        final = model
    return TrainResult(model=final.eval(), history=history, best_step=best["step"], best_psnr=best["psnr"],
                       steps=step)


def _normalised_config(config: dict, model: UnrolledInverse) -> dict:
    """``config`` (a checkpoint's) rebuilt by this version: keys it lacks get their current defaults."""
    try:
        return type(model).from_config(config, operator=model.operator).config()
    except (TypeError, ValueError):
        return dict(config)  # not buildable here: compared as it is (the difference is then reported)


def _cpu(weights: dict) -> dict:
    return {k: v.detach().to("cpu").clone() for k, v in weights.items()}


def _wrap(model, device, world):
    if world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
