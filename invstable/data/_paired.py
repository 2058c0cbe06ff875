"""Noise rules and the on-the-fly paired dataset (x, y = A x + noise)."""

from __future__ import annotations

import json
import math
from dataclasses import KW_ONLY, dataclass

import torch

from ._phantoms import _check_index
from ._random import check_seed, noise_generator

NOISE_KINDS = ("gaussian", "poisson", "log-poisson")
#: A detector bin that counts no photon is read as this many photons, so that -log(count / N0) stays finite
#: (the rule of LoDoPaB-CT, Leuschner et al. 2021); with the photon counts of the low-dose task it never happens.
ZERO_COUNT = 0.1


def _positive(value, name: str, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"kind={kind!r} needs {name} > 0 (a finite number), got {value!r}")
    return float(value)


@dataclass(frozen=True, repr=False)
class Noise:
    r"""The measurement noise rule: additive Gaussian, Poisson photon counts, or log-Poisson CT noise.

    Every kind is drawn by deepinv's noise model (``GaussianNoise``, ``PoissonNoise``, ``LogPoissonNoise``)
    from the generator that :class:`PairedDataset` passes, so a pair is reproducible from its seed.

    Parameters
    ----------
    level : float
        Gaussian only: the standard deviation (``relative=False``) or its ratio to the mean absolute
        clean measurement (``relative=True``). Must stay 0 for the photon-counting kinds.
    relative : bool
        Gaussian only: sample :math:`i` gets :math:`\sigma_i = \text{level}\cdot\operatorname{mean}|A x_i|`.
    kind : {"gaussian", "poisson", "log-poisson"}
        ``"gaussian"``: :math:`y = A x + \sigma n`, :math:`n` standard normal.
        ``"poisson"``: photon counts of the measurement itself,
        :math:`y = \mathcal{P}(N_0\, A x) / N_0` (needs :math:`A x \ge 0`).
        ``"log-poisson"``: low-dose CT. :math:`A x` is read as line integrals of the attenuation in units of
        :math:`1/\mu`; a detector bin counts :math:`k \sim \mathcal{P}(N_0 e^{-\mu (A x)_j})` photons and the
        measurement is the log of the transmission, :math:`y_j = -\log(k / N_0) / \mu` (a bin with no
        photon is read as :data:`ZERO_COUNT` photons).
    photons : float
        Poisson kinds: :math:`N_0`, the mean photon count per detector bin of an unattenuated ray (log-Poisson),
        or per unit of :math:`A x` (Poisson). More photons, less noise: the dose.
    attenuation : float
        Log-Poisson: :math:`\mu`, the line integral of the attenuation that one unit of :math:`A x` stands for
        (with a normalised CT operator, it sets how much of the beam the object absorbs: the transmission of a
        ray is :math:`e^{-\mu (A x)_j}`).

    Notes
    -----
    :meth:`std` gives each sample's noise standard deviation, the root mean square over its entries. For the
    photon-counting kinds it is the first-order (delta-method) value, :math:`\sqrt{\operatorname{mean}(A x)/N_0}`
    (Poisson) and :math:`\sqrt{\operatorname{mean}\, e^{\mu A x}} / (\mu \sqrt{N_0})` (log-Poisson): the
    :math:`\sigma` that the discrepancy principle compares :math:`\|A \hat x - y\| / \sqrt m` with.

    References
    ----------
    J. Leuschner, M. Schmidt, D. O. Baguer and P. Maass, "LoDoPaB-CT, a benchmark dataset for low-dose computed
    tomography reconstruction", Scientific Data 8, 109 (2021): log-Poisson noise with :math:`N_0 = 4096`.

    Examples
    --------
    >>> import torch
    >>> from invstable.data import Noise
    >>> Noise(0.05, relative=True).std(torch.full((2, 1, 3, 3), 2.0))
    tensor([0.1000, 0.1000])
    >>> low_dose = Noise(kind="log-poisson", photons=4096, attenuation=2.0)
    >>> y, sigma = low_dose(torch.zeros(1, 1, 4, 3), rng=torch.Generator().manual_seed(0))
    >>> bool((sigma - 1 / (2.0 * 64)).abs().max() < 1e-6)  # no object: 1 / (mu sqrt(N0))
    True
    """

    level: float = 0.0
    _: KW_ONLY
    relative: bool = False
    kind: str = "gaussian"
    photons: float | None = None
    attenuation: float | None = None

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {self.kind!r}; valid kinds are {NOISE_KINDS}")
        if isinstance(self.level, bool) or not isinstance(self.level, (int, float)) or not (
            math.isfinite(self.level) and self.level >= 0
        ):
            raise ValueError(f"noise level must be a finite float >= 0, got {self.level!r}")
        object.__setattr__(self, "level", float(self.level))
        object.__setattr__(self, "relative", bool(self.relative))
        if self.kind == "gaussian":
            given = [n for n in ("photons", "attenuation") if getattr(self, n) is not None]
            if given:
                raise ValueError(f"{' and '.join(given)} set photon-counting noise; pass kind='poisson' or "
                                 f"kind='log-poisson', or drop {' and '.join(given)} for Gaussian noise")
            return
        if self.level != 0 or self.relative:
            raise ValueError(f"level and relative describe Gaussian noise; kind={self.kind!r} is set by photons"
                             + (" and attenuation" if self.kind == "log-poisson" else "") + ", so leave them out")
        object.__setattr__(self, "photons", _positive(self.photons, "photons", self.kind))
        if self.kind == "log-poisson":
            object.__setattr__(self, "attenuation", _positive(self.attenuation, "attenuation", self.kind))
        elif self.attenuation is not None:
            raise ValueError("attenuation is for kind='log-poisson' (CT line integrals); kind='poisson' counts "
                             "photons of A x itself, so drop attenuation")

    def std(self, clean: torch.Tensor) -> torch.Tensor:
        """Per-sample standard deviations, shape (B,), for clean measurements of shape (B, ...) (see Notes)."""
        if self.kind == "poisson":
            return (clean.clamp(min=0).flatten(1).mean(dim=1) / self.photons).sqrt()
        if self.kind == "log-poisson":
            spread = torch.exp(self.attenuation * clean).flatten(1).mean(dim=1).sqrt()
            return spread / (self.attenuation * math.sqrt(self.photons))
        if self.relative:
            return self.level * clean.abs().flatten(1).mean(dim=1)
        return torch.full((clean.shape[0],), self.level, dtype=clean.dtype, device=clean.device)

    def __call__(self, clean: torch.Tensor, *, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy measurements and the per-sample standard deviations, drawn from ``rng``.

        Raises
        ------
        ValueError
            For Poisson noise of a measurement with negative entries (photon counts cannot be negative).
        """
        from deepinv.physics import GaussianNoise, LogPoissonNoise, PoissonNoise

        sigma = self.std(clean)
        if self.kind == "gaussian":
            return GaussianNoise(sigma=sigma, rng=rng)(clean, sigma=sigma), sigma
        if self.kind == "poisson":
            low = float(clean.min())
            if low < 0:
                raise ValueError(f"Poisson noise counts photons of A x, which must be >= 0, but its smallest entry is "
                                 f"{low:.4g}; use an operator with non-negative output, or kind='gaussian'")
            return PoissonNoise(gain=1.0 / self.photons, normalize=True, rng=rng)(clean), sigma
        y = LogPoissonNoise(N0=self.photons, mu=self.attenuation, rng=rng)(clean)
        floor = -math.log(ZERO_COUNT / self.photons) / self.attenuation  # the reading of a bin without photons
        return torch.where(torch.isposinf(y), torch.full_like(y, floor), y), sigma

    def config(self) -> dict:
        """JSON description; ``Noise(**config)`` rebuilds it."""
        if self.kind == "gaussian":
            return {"kind": self.kind, "level": self.level, "relative": self.relative}
        if self.kind == "poisson":
            return {"kind": self.kind, "photons": self.photons}
        return {"kind": self.kind, "photons": self.photons, "attenuation": self.attenuation}

    def describe(self) -> str:
        """One line for people, e.g. ``"log-Poisson, 4096 photons per detector bin, attenuation 2"``."""
        if self.kind == "poisson":
            return f"Poisson, {self.photons:g} photons per unit of A x"
        if self.kind == "log-poisson":
            return f"log-Poisson, {self.photons:g} photons per detector bin, attenuation {self.attenuation:g}"
        return f"gaussian, std {self.level:g}" + (" x mean|A x| per sample" if self.relative else "")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "kind")
        return f"Noise({fields}, kind={self.kind!r})"


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
