"""Stability of any reconstructor ``y -> x``: random and adversarial perturbations, empirical Lipschitz ratios.

Works on any differentiable callable on batched tensors (an invstable model, a deepinv model, a baseline
written in torch); the searches follow Antun et al. (2020) and Genzel, Macdonald & März (2022): projected
Adam on the perturbation, several random starts, the worst kept.

The protocol built on these searches (the first test images of a task, several noise levels, both objectives, the
empirical ratio against the certified bound) is ``invstable.evaluate(reconstructor, task=..., stability=True)``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable

import numpy as np
import torch

Reconstructor = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class AttackResult:
    """Result of :func:`adversarial_perturbation` (per sample of the batch).

    Attributes
    ----------
    delta : torch.Tensor
        The worst perturbation found, ``||delta_i|| <= eta ||y_i||``.
    objective : torch.Tensor
        ``||R(y + delta) - R(y)||`` (or ``||R(y + delta) - target||``) per sample.
    ratio : torch.Tensor
        ``||R(y + delta) - R(y)|| / ||delta||`` per sample (always against ``R(y)``).
    """

    delta: torch.Tensor
    objective: torch.Tensor
    ratio: torch.Tensor


def _norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view((-1,) + (1,) * (like.ndim - 1))


def _project(d: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    n = _norm(d).clamp_min(1e-30)
    return d * _view(torch.clamp(radius / n, max=1.0), d)


def _check(y, eta, steps, restarts, *, eta_name: str = "eta", lr: float = 0.05) -> None:
    """Validate the arguments of the searches; every message names what was received and what to pass."""
    if isinstance(y, np.ndarray):
        raise TypeError(
            f"y must be a torch.Tensor, got a numpy array of shape {y.shape}; convert it with "
            f"torch.from_numpy(y) (the searches differentiate the reconstructor, so they work on tensors)"
        )
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a batched torch.Tensor (B, ...), got {type(y).__name__}")
    if y.ndim < 2:
        raise ValueError(f"y must be a batched tensor (B, ...), got shape {tuple(y.shape)}; add the batch axis, "
                         f"e.g. y[None]")
    if y.is_complex() or not y.is_floating_point():
        raise TypeError(f"y has dtype {y.dtype}; the searches need real floating-point measurements, e.g. y.float()")
    finite = torch.isfinite(y.detach()).flatten(1).all(dim=1)
    if not bool(finite.all()):
        raise ValueError(f"y contains NaN or Inf in sample(s) {_which(~finite)}; clean or drop them")
    zero = y.detach().flatten(1).norm(dim=1) == 0
    if bool(zero.any()):
        raise ValueError(
            f"sample(s) {_which(zero)} of y are all zeros: the perturbations are relative ({eta_name} * ||y_i||), so "
            f"there is nothing to perturb there; drop those samples or pass non-zero measurements"
        )
    if isinstance(eta, bool) or not (isinstance(eta, numbers.Real) and math.isfinite(eta) and eta > 0):
        raise ValueError(f"{eta_name} must be a finite number > 0 (relative to ||y||), got {eta!r}")
    for name, v in (("steps", steps), ("restarts", restarts)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if isinstance(lr, bool) or not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0 (a step relative to the radius), got {lr!r}")


def _which(mask: torch.Tensor) -> str:
    index = torch.nonzero(mask).flatten().tolist()
    return ", ".join(map(str, index[:10])) + (f" (and {len(index) - 10} more)" if len(index) > 10 else "")


def random_perturbation(y: torch.Tensor, eta: float, *, seed: int = 0) -> torch.Tensor:
    """Gaussian perturbation scaled to norm ``eta ||y_i||`` for each sample."""
    _check(y, eta, 1, 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    d = torch.randn(y.shape, generator=gen, dtype=y.dtype).to(y.device)
    return d * _view(eta * _norm(y) / _norm(d), d)


def adversarial_perturbation(reconstruct: Reconstructor, y: torch.Tensor, eta: float, *,
                             target: torch.Tensor | None = None, steps: int = 200, restarts: int = 3,
                             lr: float = 0.05, seed: int = 0) -> AttackResult:
    r"""Worst perturbation of norm at most ``eta ||y||`` found by projected Adam.

    Maximises :math:`\|R(y + \delta) - R(y)\|` (or :math:`\|R(y + \delta) - \mathrm{target}\|`, e.g. the
    ground truth) over :math:`\|\delta_i\| \le \eta \|y_i\|`, from ``restarts`` random starts on the sphere,
    ``steps`` Adam steps each (step ``lr`` relative to the radius), keeping the worst per sample.

    ``y`` is a batched real tensor; an empty batch gives an empty result. A sample that is all zeros is refused
    (a ``ValueError`` naming it): its radius ``eta ||y_i||`` is zero.
    """
    _check(y, eta, steps, restarts, lr=lr)
    y = y.detach()
    if y.shape[0] == 0:  # an empty batch: nothing to search
        empty = y.new_zeros(0)
        return AttackResult(y.clone(), empty, empty.clone())
    with torch.no_grad():
        base = reconstruct(y)
    if target is not None:
        if not isinstance(target, torch.Tensor) or tuple(target.shape) != tuple(base.shape):
            raise ValueError(
                f"target must be a tensor of the reconstruction's shape {tuple(base.shape)}, got "
                f"{tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__}"
            )
    radius = eta * _norm(y)
    ref = base if target is None else target.detach()
    best_obj = torch.full((y.shape[0],), -1.0, device=y.device, dtype=y.dtype)
    best_delta = torch.zeros_like(y)
    for r in range(restarts):
        u = random_perturbation(y, 1.0, seed=seed * 1009 + r) / _view(_norm(y), y)  # unit norm
        u = u.clone().requires_grad_(True)
        opt = torch.optim.Adam([u], lr=lr / u[0].numel() ** 0.5)
        for _ in range(steps):
            d = u * _view(radius, u)
            obj = _norm(reconstruct(y + d) - ref)
            opt.zero_grad()
            (-obj.sum()).backward()
            opt.step()
            with torch.no_grad():
                u.copy_(_project(u, torch.ones_like(radius)))
        with torch.no_grad():
            d = u * _view(radius, u)
            obj = _norm(reconstruct(y + d) - ref)
            better = obj > best_obj
            best_obj = torch.where(better, obj, best_obj)
            best_delta[better] = d[better]
    with torch.no_grad():
        ratio = _norm(reconstruct(y + best_delta) - base) / _norm(best_delta).clamp_min(1e-30)
    return AttackResult(best_delta, best_obj, ratio)


def lipschitz_search(reconstruct: Reconstructor, y: torch.Tensor, *, radius: float = 0.05, steps: int = 200,
                     restarts: int = 3, lr: float = 0.05, seed: int = 0) -> torch.Tensor:
    r"""Largest ratio :math:`\|R(y_1) - R(y_2)\| / \|y_1 - y_2\|` found near each ``y`` (per sample).

    Both points move: :math:`y_{1,2} = y + \delta_{1,2}` with :math:`\|\delta_{1,2}\| \le` ``radius`` ``||y||``;
    Adam ascends the ratio itself from ``restarts`` random starts. A lower bound on the local Lipschitz
    constant, to hold a certified bound against: a certificate below it is wrong.

    ``y`` is a batched real tensor with no sample all zeros (the radius is relative to ``||y_i||``); an empty
    batch gives an empty result.
    """
    _check(y, radius, steps, restarts, eta_name="radius", lr=lr)
    y = y.detach()
    if y.shape[0] == 0:  # an empty batch: nothing to search
        return y.new_zeros(0)
    rad = radius * _norm(y)
    best = torch.zeros(y.shape[0], device=y.device, dtype=y.dtype)
    for r in range(restarts):
        d1 = random_perturbation(y, radius, seed=seed * 1009 + 2 * r).requires_grad_(True)
        d2 = (random_perturbation(y, radius, seed=seed * 1009 + 2 * r + 1) * 0.1).requires_grad_(True)
        opt = torch.optim.Adam([d1, d2], lr=lr * float(rad.mean()) / y[0].numel() ** 0.5)
        for _ in range(steps):
            ratio = _norm(reconstruct(y + d1) - reconstruct(y + d2)) / _norm(d1 - d2).clamp_min(1e-12)
            opt.zero_grad()
            (-ratio.sum()).backward()
            opt.step()
            with torch.no_grad():
                d1.copy_(_project(d1, rad))
                d2.copy_(_project(d2, rad))
        with torch.no_grad():
            ratio = _norm(reconstruct(y + d1) - reconstruct(y + d2)) / _norm(d1 - d2).clamp_min(1e-12)
            best = torch.maximum(best, ratio)
    return best
