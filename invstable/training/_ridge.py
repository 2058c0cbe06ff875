r"""Training a convex ridge regulariser as a denoiser on patches (the recipe of the shipped "universal" model).

The regulariser is trained as the ``t``-step accelerated gradient denoiser of
:math:`\tfrac12\|x - y\|^2 + \lambda_j R_{\mu_j}(x)` at a few noise levels :math:`\sigma_j` (one learned
:math:`\lambda_j, \mu_j` per level, as in CRR-NN), on patches of the protocol's training images and random-ellipse
phantoms (never a validation or test image). Checkpoints are written atomically and resumed exactly; the learning
curve (validation denoising PSNR against steps and seconds) is kept in the checkpoint and written as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._files import atomic_write
from ..nn._ridge import ConvexRidgeRegularizer
from ._curves import write_curve
from ._loop import psnr

RIDGE_CHECKPOINT = "invstable.ridge-checkpoint/1"


@dataclasses.dataclass
class RidgeConfig:
    """Hyper-parameters of :func:`train_ridge` (recorded in the model file)."""

    channels: tuple = (1, 8, 32)
    kernel_size: int = 5
    knots: int = 41
    span: float = 1.0
    sigmas: tuple = (5 / 255, 10 / 255, 25 / 255)
    denoise_steps: int = 12
    patch: int = 40
    batch_size: int = 16
    natural_patches: int = 6000
    phantom_patches: int = 3000
    validation_patches: int = 96
    steps: int = 2000
    lr: float = 2e-3
    lr_spline: float = 2e-2
    lr_weights: float = 2e-2
    final_lr_ratio: float = 0.1
    validate_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def _phantom_patches(count: int, size: int, seed: int) -> torch.Tensor:
    from ..data import EllipsePhantoms

    rng = np.random.default_rng(seed)
    source = EllipsePhantoms(128, count=max(1, count // 8), seed=seed)
    out = []
    for i in range(count):
        img = source[i % len(source)]
        r, c = rng.integers(0, 128 - size + 1, size=2)
        out.append(img[:, r:r + size, c:c + size])
    return torch.stack(out)


def patches(config: RidgeConfig, split: str) -> torch.Tensor:
    """The fixed patch pool of a split: crops of the training images' training (or validation) region and of
    random-ellipse phantoms of the training seed 0 (validation: the protocol's validation seed 1)."""
    from ..data import TRAIN_IMAGES, ImageCrops

    if split == "train":
        n_nat, n_ph, seed, region = config.natural_patches, config.phantom_patches, 0, "train"
    elif split == "validation":
        n_nat = n_ph = config.validation_patches // 2
        seed, region = 1, "validation"
    else:
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    crops = ImageCrops(TRAIN_IMAGES, size=config.patch, count=n_nat, seed=seed, region=region)
    natural = torch.stack([crops[i] for i in range(len(crops))])
    return torch.cat([natural, _phantom_patches(n_ph, config.patch, seed + 7919)]).float()


class RidgeDenoiser(nn.Module):
    """The regulariser and one learned ``(log lambda_j, log mu_j)`` per training noise level."""

    def __init__(self, config: RidgeConfig) -> None:
        super().__init__()
        self.config = config
        self.regularizer = ConvexRidgeRegularizer(
            tuple(config.channels), kernel_size=config.kernel_size, knots=config.knots, span=config.span,
            rng=torch.Generator().manual_seed(config.seed))
        sig = torch.tensor(config.sigmas, dtype=torch.float64)
        # start: mu maps the filtered noise (about 0.3 sigma) to about half the spline's threshold, lambda ~ 20 sigma
        self.log_lam = nn.Parameter(torch.log(sig * 20.0).float())
        self.log_mu = nn.Parameter(torch.log(0.17 / sig).float())

    def denoise(self, y: torch.Tensor, level: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """``steps`` accelerated gradient steps on the denoising objective, from ``y`` (differentiable)."""
        steps = self.config.denoise_steps if steps is None else steps
        reg = self.regularizer
        lam = self.log_lam.exp()[level].view(-1, 1, 1, 1)
        mu = self.log_mu.exp()[level].view(-1, 1, 1, 1)
        kernel = reg.kernel()
        with torch.no_grad():
            smooth = reg.activation.max_slope() * reg.operator_norm(tuple(y.shape[-2:])) ** 2
        step = 1.0 / (1.0 + lam * smooth)
        x_prev = x = y
        for k in range(steps):
            z = x + (k / (k + 3)) * (x - x_prev)
            x_prev, x = x, z - step * (z - y + lam * reg.gradient(z, mu, kernel=kernel))
        return x


def _noisy(x: torch.Tensor, sigmas: torch.Tensor, gen: torch.Generator):
    level = torch.randint(0, len(sigmas), (x.shape[0],), generator=gen)
    noise = torch.randn(x.shape, generator=gen) * sigmas[level].view(-1, 1, 1, 1)
    return x + noise, level


@torch.no_grad()
def validate(model: RidgeDenoiser, val: torch.Tensor) -> dict:
    """Denoising PSNR of the validation patches at each training noise level (fixed noise, seed 1)."""
    gen = torch.Generator().manual_seed(1)
    out = {}
    for j, s in enumerate(model.config.sigmas):
        y = val + s * torch.randn(val.shape, generator=gen)
        x = model.denoise(y, torch.full((len(val),), j, dtype=torch.long))
        mse = (x - val).pow(2).flatten(1).mean(1)
        out[f"{round(s * 255, 3)}"] = float((10 * torch.log10(1 / mse)).mean())
    return out


def _lr_factor(config, step: int) -> float:
    return config.final_lr_ratio + (1 - config.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * step / config.steps))


def _adam(regularizer: ConvexRidgeRegularizer, weights: list, config) -> torch.optim.Adam:
    """Adam on the filters (``config.lr``), the activations (``lr_spline``) and the scalar ``weights``
    (``lr_weights``): the groups both ridge recipes train."""
    return torch.optim.Adam([
        {"params": list(regularizer.kernels.parameters()), "lr": config.lr},
        {"params": [regularizer.activation.raw_slopes], "lr": config.lr_spline},
        {"params": weights, "lr": config.lr_weights},
    ])


def _open_checkpoint(path: Path | None, *, resume: bool, fmt: str, config) -> dict | None:
    """The state of the checkpoint at ``path`` to resume (None when there is none yet); an existing one without
    ``resume``, or one of another format or configuration, is refused."""
    if path is None or not path.exists():
        return None
    if not resume:
        raise FileExistsError(f"checkpoint {str(path)!r} exists; pass resume=True (--resume) to continue it, or "
                              "choose another path")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != fmt or json.loads(state["config"]) != config.to_dict():
        raise ValueError(f"checkpoint {str(path)!r} was made with another configuration; resume needs the same "
                         "recipe (or start a new checkpoint)")
    return state


def train_ridge(config: RidgeConfig, *, checkpoint: str | Path | None = None, resume: bool = False,
                log=print, threads: int | None = None, until: int | None = None) -> tuple[RidgeDenoiser, dict]:
    """Train :class:`RidgeDenoiser` with Adam and a cosine schedule; returns the model and the record.

    ``resume=True`` continues from ``checkpoint`` (its configuration must equal ``config``, else ValueError);
    without it an existing checkpoint is refused rather than overwritten. ``until`` stops at that step of the
    ``config.steps``-step schedule (the checkpoint is written there; a later call continues it exactly).
    """
    until = config.steps if until is None else min(int(until), config.steps)
    if threads:
        torch.set_num_threads(threads)
    model = RidgeDenoiser(config)
    opt = _adam(model.regularizer, [model.log_lam, model.log_mu], config)
    base_lrs = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(config.seed)
    curve, step, elapsed = [], 0, 0.0
    path = None if checkpoint is None else Path(checkpoint)
    state = _open_checkpoint(path, resume=resume, fmt=RIDGE_CHECKPOINT, config=config)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, elapsed, curve = int(state["step"]), float(state["seconds"]), json.loads(state["curve"])
        log(f"resumed at step {step} ({elapsed:.0f} s)")
    train_x = patches(config, "train")
    val_x = patches(config, "validation")
    sigmas = torch.tensor(config.sigmas, dtype=torch.float32)

    def save():
        if path is None:
            return
        state = {"format": RIDGE_CHECKPOINT, "config": json.dumps(config.to_dict()), "model": model.state_dict(),
                 "optimizer": opt.state_dict(), "generator": gen.get_state(), "step": step, "seconds": elapsed,
                 "curve": json.dumps(curve)}
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    if step == 0:
        curve.append({"step": 0, "seconds": 0.0, "validation_psnr": validate(model, val_x)})
    while step < until:
        start = time.perf_counter()
        idx = torch.randint(0, len(train_x), (config.batch_size,), generator=gen)
        x = train_x[idx]
        flips = torch.randint(0, 4, (1,), generator=gen).item()
        x = torch.rot90(x, flips, dims=(2, 3))
        y, level = _noisy(x, sigmas, gen)
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * _lr_factor(config, step)
        loss = (model.denoise(y, level) - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        elapsed += time.perf_counter() - start
        if step % config.validate_every == 0 or step == until:
            scores = validate(model, val_x)
            curve.append({"step": step, "seconds": round(elapsed, 2), "validation_psnr": scores,
                          "loss": loss.item()})
            log(f"step {step}: {elapsed:.0f} s, loss {loss.item():.3e}, validation PSNR {scores}, "
                f"lam {model.log_lam.exp().tolist()}, mu {model.log_mu.exp().tolist()}")
        if step % config.checkpoint_every == 0 or step == until:
            save()
    record = {"config": config.to_dict(), "steps": step, "seconds": round(elapsed, 1), "curve": curve,
              "device": "cpu", "threads": torch.get_num_threads(),
              "noise_levels": [{"sigma": s, "lam": float(l), "scale": float(m)} for s, l, m in
                               zip(config.sigmas, model.log_lam.exp().tolist(), model.log_mu.exp().tolist())]}
    return model, record


def save_universal(model: RidgeDenoiser, record: dict, path: str | Path, *, overwrite: bool = False,
                   presets: dict | None = None) -> Path:
    """Write the trained regulariser as a model file (:func:`invstable.models.save_regularizer`), with the
    training record (recipe, noise levels and their learned weights, final validation scores)."""
    from ..models._io import save_regularizer

    last = record["curve"][-1] if record.get("curve") else {}
    meta = {"training": {"kind": "denoiser on patches", "steps": record["steps"], "seconds": record["seconds"],
                         "device": record.get("device"), "threads": record.get("threads"),
                         "recipe": record.get("recipe"), "config": record["config"],
                         "validation_denoising_psnr": last.get("validation_psnr")},
            "noise_levels": record["noise_levels"], "presets": presets or {}}
    return save_regularizer(model.regularizer, path, metadata=meta, overwrite=overwrite)


def write_learning_curve(record: dict, path: str | Path) -> Path:
    """The learning curve as JSON and, beside it, a PNG (validation denoising PSNR against steps and seconds)."""
    payload = {"what": "universal convex ridge regulariser, trained as a denoiser on 40x40 patches",
               "device": record.get("device"), "threads": record.get("threads"), "recipe": record.get("recipe"),
               "config": record["config"], "curve": record["curve"]}
    levels = list(record["curve"][0]["validation_psnr"])
    return write_curve(path, payload, title="universal regulariser: learning curve",
                       ylabel="validation denoising PSNR (dB)",
                       series={f"sigma = {lv}/255": (lambda c, lv=lv: c["validation_psnr"][lv]) for lv in levels})


# ---------------------------------------------------------------------------------------------------------------
# Fine-tuning on a task: the regulariser through the exact minimiser (bilevel)

TASK_RIDGE_CHECKPOINT = "invstable.task-ridge-checkpoint/1"


@dataclasses.dataclass
class TaskRidgeConfig:
    r"""Hyper-parameters of :func:`finetune_ridge` (recorded in the model file and the checkpoint).

    The strong convexity is held at :math:`m = 1 / (4 L_{\max}^2)`, so the certified bound of the minimiser is
    ``max_lipschitz`` whatever the training does; ``lam`` and ``scale`` start at the start model's preset for the
    task and are learned with the filters and the activations.
    """

    task: str = "blur-g2"
    start: str = "universal"
    max_lipschitz: float = 10.0
    patch: int = 40
    pool: int = 512
    batch_size: int = 8
    steps: int = 800
    lr: float = 1e-4
    lr_spline: float = 1e-3
    lr_weights: float = 2e-3
    final_lr_ratio: float = 0.1
    tol: float = 1e-3
    derivative_tol: float = 1e-3
    validation_images: int = 16
    validate_every: int = 100
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _task_problem(config: TaskRidgeConfig):
    """The task's noise rule and its operator at the patch size (shift-invariant operators only: a crop of a
    blurred image is the blur of the crop up to the boundary, which the circular model makes exact)."""
    from ..data import task as get_task
    from ..data._tasks import TASKS
    from ..operators import make_operator

    if config.task not in TASKS or TASKS[config.task].kind != "blur":
        raise ValueError(f"fine-tuning on patches needs a shift-invariant (blur) task, got {config.task!r}; "
                         f"blur tasks: {sorted(t for t, s in TASKS.items() if s.kind == 'blur')}")
    spec = TASKS[config.task]
    params = dict(spec.operator["params"], image_size=config.patch)
    return get_task(config.task), make_operator(spec.operator["name"], **params)


def _start_model(config: TaskRidgeConfig, operator):
    """The start model with its preset for the task (lam, scale, reference, box) and ``m`` held at the budget."""
    from ..models import load_model

    m = 1.0 / (4.0 * config.max_lipschitz ** 2)
    model = load_model(config.start, operator=operator, preset=config.task, strong_convexity=m, tol=config.tol)
    model.derivative_tol = config.derivative_tol
    return model


def minimiser_loss(model, x: torch.Tensor, y: torch.Tensor, log_lam: torch.Tensor, log_scale: torch.Tensor, *,
                   x0: torch.Tensor | None = None, derivative_tol: float = 1e-3):
    r"""Mean squared error of the minimiser of ``model`` (a :class:`~invstable.models.VariationalInverse` whose
    ``lam`` and ``scale`` are ``exp(log_lam)``, ``exp(log_scale)``) against ``x``; its implicit gradient is
    accumulated into the ``.grad`` of the regulariser's weights, ``log_lam`` and ``log_scale``.

    With :math:`v` solving :math:`PHPv = P\nabla_{\hat x}\ell` (``H`` the Hessian at :math:`\hat x`, ``P`` the
    pixels off the box), :math:`\nabla_\theta \ell = -\nabla_\theta\langle v, \lambda\nabla R_{\mu,\theta}(\hat x)
    \rangle` at fixed :math:`\hat x` and :math:`v` (derivation: docs/universal.md). Returns ``(loss, x_hat, info)``.
    """
    model.lam, model.scale = float(log_lam.detach().exp()), float(log_scale.detach().exp())
    x_hat, info = model.solve(y, x0=x0)
    loss = (x_hat - x).pow(2).mean()
    v = model._hessian_solve(x_hat, 2.0 * (x_hat - x) / x.numel(), model.operator, rtol=derivative_tol)
    surrogate = -(log_lam.exp() * model.regularizer.gradient(x_hat, log_scale.exp()) * v).sum()
    surrogate.backward()
    return loss.detach(), x_hat, info


def finetune_ridge(config: TaskRidgeConfig, *, checkpoint: str | Path | None = None, resume: bool = False,
                   log=print, threads: int | None = None, until: int | None = None):
    r"""Fine-tune a shipped ridge regulariser on a task's training images through the minimiser it defines.

    The loss is the mean squared error of :math:`\hat x(y) = \arg\min_{x \in [0,1]^n} \tfrac12\|Ax - y\|^2 +
    \lambda R_{\mu,\theta}(x) + \tfrac m2\|x - c\|^2` on patches. Its gradient in the weights :math:`\theta`,
    :math:`\lambda` and :math:`\mu` is the implicit one (docs/universal.md, "Fine-tuning on a task"): with
    :math:`v` solving :math:`PHPv = P\nabla_x \ell` at :math:`\hat x`,
    :math:`\nabla_\theta \ell = -\nabla_\theta \langle v, \lambda \nabla R_{\mu,\theta}(\hat x)\rangle`.
    Each pair of a fixed pool keeps its last minimiser, from which its next solve starts (the weights move little
    between two visits). The certified bound stays ``config.max_lipschitz``: :math:`m` is not trained and the
    activations stay monotone and 1-Lipschitz (convex :math:`R`) at every step.

    Returns ``(model, record)``: the :class:`~invstable.models.VariationalInverse` with the best weights on the
    validation images (the task's own operator, the learned ``lam`` and ``scale``) and the training record.
    """
    from ..data import TRAIN_IMAGES, ImageCrops

    until = config.steps if until is None else min(int(until), config.steps)
    if threads:
        torch.set_num_threads(threads)
    spec, op = _task_problem(config)
    model = _start_model(config, op)
    reg = model.regularizer.requires_grad_(True)
    log_lam = nn.Parameter(torch.tensor(math.log(model.lam)))
    log_scale = nn.Parameter(torch.tensor(math.log(model.scale)))
    opt = _adam(reg, [log_lam, log_scale], config)
    base_lrs = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(config.seed)
    crops = ImageCrops(TRAIN_IMAGES, size=config.patch, count=config.pool, seed=config.seed, region="train")
    x_pool = torch.stack([crops[i] for i in range(len(crops))]).float()
    y_pool, _ = spec.noise(op.A(x_pool), rng=torch.Generator().manual_seed(config.seed + 1))
    start_pool = model._project(y_pool.clone())  # updated in place: never an alias of y_pool
    val = spec.pairs("validation")
    n_val = min(config.validation_images, len(val))
    x_val = torch.stack([val[i][0] for i in range(n_val)])
    y_val = torch.stack([val[i][1] for i in range(n_val)])
    full = _start_model(config, spec.operator)  # the task's operator: validation and the returned model
    full.regularizer = reg
    val_start = None  # each validation starts from the last one's minimisers (the score moves within tol)
    curve, step, elapsed, best = [], 0, 0.0, {"psnr": -math.inf, "step": 0, "state": None}
    path = None if checkpoint is None else Path(checkpoint)
    state = _open_checkpoint(path, resume=resume, fmt=TASK_RIDGE_CHECKPOINT, config=config)
    if state is not None:
        reg.load_state_dict(state["regularizer"])
        with torch.no_grad():
            log_lam.copy_(state["log_lam"])
            log_scale.copy_(state["log_scale"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start_pool = state["start_pool"]
        val_start = state.get("validation_start")
        step, elapsed, curve = int(state["step"]), float(state["seconds"]), json.loads(state["curve"])
        best = {"psnr": float(state["best_psnr"]), "step": int(state["best_step"]), "state": state["best_state"]}
        log(f"resumed at step {step} ({elapsed:.0f} s)")

    def settings():
        return {"lam": float(log_lam.detach().exp()), "scale": float(log_scale.detach().exp())}

    def validate():
        nonlocal val_start
        full.lam, full.scale = settings().values()
        batches = range(0, n_val, 8)
        starts = val_start or [None] * len(batches)
        with torch.no_grad():
            val_start = [full.solve(y_val[i:i + 8], x0=x0)[0] for i, x0 in zip(batches, starts)]
        return float(psnr(torch.cat(val_start), x_val).mean())

    def snapshot():
        return {**{k: v.detach().clone() for k, v in reg.state_dict().items()},
                "log_lam": log_lam.detach().clone(), "log_scale": log_scale.detach().clone()}

    def save():
        if path is None:
            return
        state = {"format": TASK_RIDGE_CHECKPOINT, "config": json.dumps(config.to_dict()),
                 "regularizer": reg.state_dict(), "log_lam": log_lam.detach(), "log_scale": log_scale.detach(),
                 "optimizer": opt.state_dict(), "generator": gen.get_state(), "start_pool": start_pool,
                 "validation_start": val_start,
                 "step": step, "seconds": elapsed, "curve": json.dumps(curve), "best_psnr": best["psnr"],
                 "best_step": best["step"], "best_state": best["state"]}
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    if step == 0:
        value = validate()
        curve.append({"step": 0, "seconds": 0.0, "validation_psnr": value, **settings()})
        best = {"psnr": value, "step": 0, "state": snapshot()}
        log(f"step 0: validation PSNR {value:.3f} dB ({n_val} images), {settings()}")
    while step < until:
        start = time.perf_counter()
        idx = torch.randint(0, len(x_pool), (config.batch_size,), generator=gen)
        x, y = x_pool[idx], y_pool[idx]
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * _lr_factor(config, step)
        opt.zero_grad(set_to_none=True)
        loss, x_hat, info = minimiser_loss(model, x, y, log_lam, log_scale, x0=start_pool[idx],
                                           derivative_tol=config.derivative_tol)
        start_pool[idx] = x_hat
        opt.step()
        step += 1
        elapsed += time.perf_counter() - start
        if step % config.validate_every == 0 or step == until:
            value = validate()
            curve.append({"step": step, "seconds": round(elapsed, 2), "validation_psnr": value,
                          "loss": loss.item(), "iterations": info.iterations, **settings()})
            if value > best["psnr"]:
                best = {"psnr": value, "step": step, "state": snapshot()}
            log(f"step {step}: {elapsed:.0f} s, loss {loss.item():.3e}, {info.iterations} solver iterations, "
                f"validation PSNR {value:.3f} dB, {settings()}")
            save()
    state = best["state"]
    reg.load_state_dict({k: v for k, v in state.items() if not k.startswith("log_")})
    full.lam, full.scale = float(state["log_lam"].exp()), float(state["log_scale"].exp())
    reg.requires_grad_(False)
    record = {"config": config.to_dict(), "steps": step, "seconds": round(elapsed, 1), "curve": curve,
              "device": "cpu", "threads": torch.get_num_threads(), "best_step": best["step"],
              "validation_psnr": best["psnr"], "validation_images": n_val,
              "settings": {"lam": full.lam, "scale": full.scale, "strong_convexity": full.strong_convexity,
                           "reference": full.reference, "bounds": list(full.bounds)}}
    return full, record


def save_task_ridge(model, record: dict, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a fine-tuned regulariser (:func:`finetune_ridge`) as a model file whose preset for its task holds the
    learned ``lam`` and ``scale`` and the held ``m``, with the training record (recipe, validation scores)."""
    from ..models._io import save_regularizer

    task = record["config"]["task"]
    preset = dict(record["settings"], validation_psnr=record["validation_psnr"],
                  n_validation=record["validation_images"])
    meta = {"training": {"kind": f"fine-tuned on {task} through the minimiser", "steps": record["steps"],
                         "seconds": record["seconds"], "device": record.get("device"),
                         "threads": record.get("threads"), "recipe": record.get("recipe"),
                         "config": record["config"], "best_step": record["best_step"],
                         "validation_psnr": record["validation_psnr"]},
            "presets": {task: preset}}
    return save_regularizer(model.regularizer, path, metadata=meta, overwrite=overwrite)


def write_task_ridge_curve(record: dict, path: str | Path, *, name: str) -> Path:
    """The learning curve of :func:`finetune_ridge` as JSON and, beside it, a PNG (validation PSNR of the task
    against steps and seconds)."""
    task = record["config"]["task"]
    payload = {"what": f"{name}: the universal regulariser fine-tuned on {task} through the minimiser",
               "device": record.get("device"), "threads": record.get("threads"), "recipe": record.get("recipe"),
               "config": record["config"], "curve": record["curve"]}
    return write_curve(path, payload, title=f"{name}: learning curve on {task}",
                       ylabel=f"validation PSNR, {record['validation_images']} images (dB)")
