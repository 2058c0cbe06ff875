"""Noise rules and the on-the-fly paired dataset (x, y = A x + noise)."""

from __future__ import annotations

import json
import math
from dataclasses import KW_ONLY, dataclass

import torch

from ._phantoms import _check_index
from ._random import check_seed, noise_generator

NOISE_KINDS = ("gaussian",)


@dataclass(frozen=True)
class Noise:
    r"""Additive white Gaussian noise with a fixed or a per-sample relative level.

    Parameters
    ----------
    level : float
        The standard deviation (``relative=False``) or its ratio to the mean absolute
        clean measurement (``relative=True``).
    relative : bool
        If true, sample :math:`i` gets :math:`\sigma_i = \text{level}\cdot\operatorname{mean}|A x_i|`.
    kind : str
        Noise family; only ``"gaussian"`` (deepinv's ``GaussianNoise``) for now.

    Examples
    --------
    >>> import torch
    >>> from invstable.data import Noise
    >>> Noise(0.05, relative=True).std(torch.full((2, 1, 3, 3), 2.0))
    tensor([0.1000, 0.1000])
    """

    level: float
    _: KW_ONLY
    relative: bool = False
    kind: str = "gaussian"

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {self.kind!r}; valid kinds are {NOISE_KINDS}")
        if isinstance(self.level, bool) or not isinstance(self.level, (int, float)) or not (
            math.isfinite(self.level) and self.level >= 0
        ):
            raise ValueError(f"noise level must be a finite float >= 0, got {self.level!r}")
        object.__setattr__(self, "level", float(self.level))
        object.__setattr__(self, "relative", bool(self.relative))

    def std(self, clean: torch.Tensor) -> torch.Tensor:
        """Per-sample standard deviations, shape (B,), for clean measurements of shape (B, ...)."""
        if self.relative:
            return self.level * clean.abs().flatten(1).mean(dim=1)
        return torch.full((clean.shape[0],), self.level, dtype=clean.dtype, device=clean.device)

    def __call__(self, clean: torch.Tensor, *, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy measurements and the per-sample standard deviations, drawn from ``rng``."""
        from deepinv.physics import GaussianNoise

        sigma = self.std(clean)
        return GaussianNoise(sigma=sigma, rng=rng)(clean, sigma=sigma), sigma

    def config(self) -> dict:
        """JSON description; ``Noise(**config)`` rebuilds it."""
        return {"kind": self.kind, "level": self.level, "relative": self.relative}


def operator_config(operator) -> dict:
    """The operator's ``config()``, checked to be a JSON-serialisable ``{"name", "params"}`` dict."""
    if not hasattr(operator, "config"):
        raise TypeError(
            f"operator {type(operator).__name__} has no config(); use an invstable.operators operator "
            "(or any linear physics with config() -> {'name': str, 'params': dict})"
        )
    cfg = operator.config()
    if not isinstance(cfg, dict) or set(cfg) != {"name", "params"}:
        raise ValueError(f"operator.config() must be {{'name': str, 'params': dict}}, got {cfg!r}")
    try:
        return json.loads(json.dumps(cfg))
    except TypeError as error:
        raise ValueError(f"operator.config() is not JSON-serialisable: {error}") from None


class PairedDataset(torch.utils.data.Dataset):
    """Pairs (x, y) with y = A x + noise, made on the fly and deterministic per index.

    Parameters
    ----------
    source : Dataset
        Yields clean images of shape (C, H, W) (an invstable source, or any dataset of tensors).
    operator : deepinv.physics.LinearPhysics
        The forward model A, applied as ``operator.A(x[None])``.
    noise : Noise
        The noise rule.
    seed : int
        Seed of the noise stream, in [0, 2**31 - 1].
    fixed_noise : bool
        If true (default) item ``i`` gets the same noise in every epoch. If false the noise
        also depends on the epoch set with :meth:`set_epoch` (still reproducible).

    Notes
    -----
    Item ``i`` draws its noise from a generator seeded from ``(seed, epoch, i)`` only, so it
    is the same in any order and in any DataLoader worker; no global random state is used.
    Items are ``(x, y)`` with x of shape (C, H, W) and y of the operator's measurement shape
    without the batch axis; :meth:`sample` also returns the noise standard deviation.

    Examples
    --------
    >>> import torch, deepinv
    >>> from invstable.data import EllipsePhantoms, Noise, PairedDataset
    >>> pairs = PairedDataset(EllipsePhantoms(16, count=3, seed=0), deepinv.physics.Denoising(),
    ...                       Noise(0.1), seed=0)
    >>> x, y = pairs[2]
    >>> bool(torch.equal(y, pairs[2][1]))
    True
    """

    def __init__(self, source, operator, noise: Noise, *, seed: int, fixed_noise: bool = True):
        if not isinstance(noise, Noise):
            raise TypeError(f"noise must be an invstable.data.Noise, got {type(noise).__name__}")
        if not hasattr(operator, "A"):
            raise TypeError(f"operator must be a deepinv LinearPhysics (with .A), got {type(operator).__name__}")
        self.source, self.operator, self.noise = source, operator, noise
        self.seed = check_seed(seed)
        self.fixed_noise = bool(fixed_noise)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the noise of ``epoch`` (only used when ``fixed_noise=False``)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, y, sigma)`` for item ``index``; sigma is the noise standard deviation (0-d)."""
        index = _check_index(index, len(self), type(self).__name__)
        x = self.source[index]
        if not isinstance(x, torch.Tensor) or x.ndim != 3:
            raise ValueError(f"source item {index} must be a tensor of shape (C, H, W), got {getattr(x, 'shape', type(x))}")
        epoch = 0 if self.fixed_noise else self.epoch
        rng = noise_generator(self.seed, epoch, index, 0x6E6F697365)  # last word: "noise"
        with torch.no_grad():
            clean = self.operator.A(x.unsqueeze(0))
            y, sigma = self.noise(clean, rng=rng)
        return x, y.squeeze(0), sigma.squeeze(0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self.sample(index)
        return x, y
