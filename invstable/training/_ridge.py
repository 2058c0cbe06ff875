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


def _lr_factor(config: RidgeConfig, step: int) -> float:
    return config.final_lr_ratio + (1 - config.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * step / config.steps))


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
    opt = torch.optim.Adam([
        {"params": list(model.regularizer.kernels.parameters()), "lr": config.lr},
        {"params": [model.regularizer.activation.raw_slopes], "lr": config.lr_spline},
        {"params": [model.log_lam, model.log_mu], "lr": config.lr_weights},
    ])
    base_lrs = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(config.seed)
    curve, step, elapsed = [], 0, 0.0
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.exists():
        if not resume:
            raise FileExistsError(f"checkpoint {str(path)!r} exists; pass resume=True (--resume) to continue it, or "
                                  "choose another path")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != RIDGE_CHECKPOINT or json.loads(state["config"]) != config.to_dict():
            raise ValueError(f"checkpoint {str(path)!r} was made with another configuration; resume needs the same "
                             "recipe (or start a new checkpoint)")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    payload = {"what": "universal convex ridge regulariser, trained as a denoiser on 40x40 patches",
               "device": record.get("device"), "threads": record.get("threads"), "recipe": record.get("recipe"),
               "config": record["config"], "curve": record["curve"]}
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [c["step"] for c in record["curve"]]
    secs = [c["seconds"] for c in record["curve"]]
    for level in record["curve"][0]["validation_psnr"]:
        vals = [c["validation_psnr"][level] for c in record["curve"]]
        axes[0].plot(steps, vals, label=f"sigma = {level}/255")
        axes[1].plot(secs, vals, label=f"sigma = {level}/255")
    axes[0].set_xlabel("training steps")
    axes[1].set_xlabel(f"seconds ({record.get('device')}, {record.get('threads')} threads)")
    for ax in axes:
        ax.set_ylabel("validation denoising PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("universal regulariser: learning curve")
    fig.tight_layout()
    png = path.with_suffix(".png")
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return path
