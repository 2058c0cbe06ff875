"""Stability of any reconstructor ``y -> x``: random and adversarial perturbations, empirical Lipschitz ratios.

Works on any differentiable callable on batched tensors (an invstable model, a deepinv model, a baseline
written in torch); the searches follow Antun et al. (2020) and Genzel, Macdonald & März (2022): projected
Adam on the perturbation, several random starts, the worst kept.

The protocol built on these searches (the first test images of a task, several noise levels, both objectives, the
empirical ratio against the certified bound) is ``invstable.evaluate(reconstructor, task=..., stability=True)``.
:func:`check_certificate` holds pairs against a model's certificate in floating point (the Lipschitz bound plus the
rounding term of what the code computes) and flags perturbations below the dtype's resolution.
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


@dataclasses.dataclass
class LevelResult:
    """One noise level of :func:`adversarial_search` (per sample of the batch).

    Attributes
    ----------
    eta : float
        The relative level: ``||delta_i|| <= eta ||y_i||``.
    delta : torch.Tensor
        The worst perturbation found over every start, shape of ``y``.
    objective : torch.Tensor
        ``||R(y + delta) - R(y)||`` (or ``||R(y + delta) - target||``) per sample.
    ratio : torch.Tensor
        ``||R(y + delta) - R(y)|| / ||delta||`` per sample (always against ``R(y)``).
    steps : torch.Tensor
        Adam steps each start actually ran, shape ``(restarts, B)`` (int64): at least ``min_steps``, at most
        ``steps``; fewer than ``steps`` where the search stopped early.
    warm : bool
        Whether start 0 of this level began at the previous level's worst perturbation (scaled to this radius).
    """

    eta: float
    delta: torch.Tensor
    objective: torch.Tensor
    ratio: torch.Tensor
    steps: torch.Tensor
    warm: bool


def _call(reconstruct, y, aux, rows):
    return reconstruct(y) if aux is None else reconstruct(y, aux[rows])


def adversarial_search(reconstruct: Callable, y: torch.Tensor, etas, *, target: torch.Tensor | None = None,
                       steps: int = 200, restarts: int = 3, min_steps: int | None = None, patience: int = 20,
                       rel_tol: float = 1e-3, lr: float = 0.05, seed: int = 0, warm_start: bool = True,
                       base: torch.Tensor | None = None, aux: torch.Tensor | None = None) -> list[LevelResult]:
    r"""Worst perturbations at several noise levels in one batched search (projected Adam, early stopping).

    The ``B`` samples of ``y`` and the ``restarts`` starts are stacked into one batch of ``restarts * B``, so the
    reconstructor is called once per Adam step on all of them; :math:`R(y)` is computed once. The levels run in
    increasing order of ``eta``: at every level after the first, start 0 begins at the previous level's worst
    perturbation scaled to the new radius (``warm_start``), the others at fresh random points of the sphere. Each
    start maximises :math:`\|R(y + \delta) - R(y)\|` (or :math:`\|R(y + \delta) - \mathrm{target}\|`) over
    :math:`\|\delta_i\| \le \eta \|y_i\|` and keeps the best point it visited; a start stops once it has run
    ``min_steps`` steps and its best objective has not risen by a relative ``rel_tol`` in the last ``patience``
    steps; ``steps`` is the cap. The worst over the starts is kept per sample.

    With ``min_steps=steps`` (no early stopping) and one level, the starts and the steps are those of
    :func:`adversarial_perturbation` with the same seed, and the result is at least as large (the best point
    visited, not only the last).

    Parameters
    ----------
    reconstruct : callable
        ``R``, differentiable in ``y``; with ``aux`` it is called as ``R(y_rows, aux_rows)`` (e.g. a solver
        warm-started at ``aux = R(y)``), the rows of ``aux`` aligned with those of ``y``.
    y : torch.Tensor
        Batched real measurements ``(B, ...)``, no sample all zeros.
    etas : sequence of float
        Relative levels (sorted here in increasing order).
    target : torch.Tensor, optional
        The point to move away from (e.g. the truth), shape of ``R(y)``; default ``R(y)``.
    steps, restarts : int
        Cap on the Adam steps per start and the number of starts per sample and level.
    min_steps : int, optional
        Steps every start runs before it may stop (default ``min(steps, 50)``; ``steps`` disables stopping).
    patience, rel_tol : int, float
        Early-stopping window and relative rise of the best objective that counts as progress.
    lr : float
        Adam step relative to the radius.
    seed : int
        Seed of the random starts.
    warm_start : bool
        Start 0 of each level after the first at the previous level's worst perturbation.
    base : torch.Tensor, optional
        ``R(y)`` when the caller has it (not recomputed).
    aux : torch.Tensor, optional
        Per-sample data passed to ``reconstruct`` as its second argument.

    Returns
    -------
    list of LevelResult
        One per level, in the order of ``etas`` as given.
    """
    etas = list(etas)
    if not etas:
        raise ValueError("etas must be a non-empty list of relative levels, e.g. [0.01, 0.05]")
    for e in etas:
        _check(y, e, steps, restarts, lr=lr)
    min_steps = min(steps, 50) if min_steps is None else min_steps
    for name, v in (("min_steps", min_steps), ("patience", patience)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not (isinstance(rel_tol, numbers.Real) and math.isfinite(rel_tol) and rel_tol >= 0):
        raise ValueError(f"rel_tol must be a finite number >= 0, got {rel_tol!r}")
    y = y.detach()
    B = y.shape[0]
    if B == 0:
        empty = y.new_zeros(0)
        return [LevelResult(float(e), y.clone(), empty, empty.clone(), torch.zeros(restarts, 0, dtype=torch.long),
                            False) for e in etas]
    rows_all = torch.arange(B, device=y.device)
    if base is None:
        with torch.no_grad():
            base = _call(reconstruct, y, aux, rows_all)
    base = base.detach()
    if target is not None and (not isinstance(target, torch.Tensor) or tuple(target.shape) != tuple(base.shape)):
        raise ValueError(
            f"target must be a tensor of the reconstruction's shape {tuple(base.shape)}, got "
            f"{tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__}"
        )
    ref = base if target is None else target.detach()
    S, N = restarts, restarts * B
    sample = torch.arange(N, device=y.device) % B  # row s * B + b is start s of sample b
    y_rep, ref_rep = y[sample], ref[sample]
    ynorm = _norm(y)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step_size = lr / y[0].numel() ** 0.5  # as adversarial_perturbation: Adam on the unit-ball parameter
    results: dict[float, LevelResult] = {}
    previous = None
    for k, eta in enumerate(sorted(set(float(e) for e in etas))):
        radius = (eta * ynorm)[sample]
        starts = []
        for s in range(S):
            if s == 0 and previous is not None and warm_start:
                starts.append(previous / _view(_norm(previous).clamp_min(1e-30), previous))
            else:  # level 0 uses the seeds of adversarial_perturbation; later levels fresh ones
                r_seed = seed * 1009 + s if k == 0 else seed * 1009 + 7919 * k + s
                starts.append(random_perturbation(y, 1.0, seed=r_seed) / _view(ynorm, y))
        u = torch.cat(starts)
        m, v = torch.zeros_like(u), torch.zeros_like(u)
        best_obj = torch.full((N,), -1.0, device=y.device, dtype=y.dtype)
        best_u = u.clone()
        mark = torch.full((N,), -1.0, device=y.device, dtype=y.dtype)
        last_rise = torch.zeros(N, dtype=torch.long, device=y.device)
        used = torch.zeros(N, dtype=torch.long, device=y.device)
        active = torch.ones(N, dtype=torch.bool, device=y.device)
        for t in range(steps):
            idx = torch.nonzero(active).flatten()
            if idx.numel() == 0:
                break
            u_sub = u[idx].clone().requires_grad_(True)
            obj = _norm(_call(reconstruct, y_rep[idx] + u_sub * _view(radius[idx], u_sub), aux, sample[idx])
                        - ref_rep[idx])
            (grad,) = torch.autograd.grad(-obj.sum(), u_sub)
            with torch.no_grad():
                obj = obj.detach()
                better = obj > best_obj[idx]
                best_obj[idx] = torch.where(better, obj, best_obj[idx])
                best_u[idx[better]] = u[idx[better]]
                rose = best_obj[idx] > mark[idx] * (1 + rel_tol)
                mark[idx[rose]] = best_obj[idx[rose]]
                last_rise[idx[rose]] = t
                m[idx] = beta1 * m[idx] + (1 - beta1) * grad
                v[idx] = beta2 * v[idx] + (1 - beta2) * grad * grad
                m_hat, v_hat = m[idx] / (1 - beta1 ** (t + 1)), v[idx] / (1 - beta2 ** (t + 1))
                u[idx] = _project(u[idx] - step_size * m_hat / (v_hat.sqrt() + eps), torch.ones_like(radius[idx]))
                used[idx] += 1
                stop = (used[idx] >= min_steps) & (t - last_rise[idx] >= patience)
                active[idx[stop]] = False
        with torch.no_grad():  # the last point of every start, then the worst of the starts per sample
            obj = _norm(_call(reconstruct, y_rep + u * _view(radius, u), aux, sample) - ref_rep)
            better = obj > best_obj
            best_obj = torch.where(better, obj, best_obj)
            best_u[better] = u[better]
            pick = best_obj.view(S, B).argmax(dim=0) * B + rows_all
            delta = best_u[pick] * _view(eta * ynorm, y)
            ratio = _norm(_call(reconstruct, y + delta, aux, rows_all) - base) / _norm(delta).clamp_min(1e-30)
        results[eta] = LevelResult(eta, delta, best_obj[pick], ratio, used.view(S, B).cpu(),
                                   previous is not None and warm_start)
        previous = delta
    return [results[float(e)] for e in etas]


def lipschitz_search(reconstruct: Reconstructor, y: torch.Tensor, *, radius: float = 0.05, steps: int = 200,
                     restarts: int = 3, lr: float = 0.05, seed: int = 0) -> torch.Tensor:
    r"""Largest ratio :math:`\|R(y_1) - R(y_2)\| / \|y_1 - y_2\|` found near each ``y`` (per sample).

    Both points move: :math:`y_{1,2} = y + \delta_{1,2}` with :math:`\|\delta_{1,2}\| \le` ``radius`` ``||y||``;
    Adam ascends the ratio itself from ``restarts`` random starts. A lower bound on the local Lipschitz
    constant, to hold a certified bound against: a certificate below it is wrong, as long as ``||y_1 - y_2||`` is
    well above the dtype's resolution; closer pairs differ mostly by rounding, which ``lipschitz_bound()`` does
    not cover and ``model.certificate()`` does (:func:`check_certificate`).

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


@dataclasses.dataclass
class CertificateCheck:
    """Result of :func:`check_certificate` (per sample, float64 on the CPU).

    Attributes
    ----------
    ratio : torch.Tensor
        ``||R(y1) - R(y2)|| / ||y1 - y2||``, the plain empirical ratio.
    allowed : torch.Tensor
        ``certificate.bound(y1, y2) / ||y1 - y2||``: the largest ratio the certificate allows for this pair, its
        Lipschitz constant plus the solver and rounding terms over ``||y1 - y2||``.
    violation : torch.Tensor
        ``||R(y1) - R(y2)|| > certificate.bound(y1, y2)`` (bool): the certificate is wrong for this pair.
    below_resolution : torch.Tensor
        ``||y1 - y2|| / ||y1||`` below ``100 eps`` of the dtype (bool): at that size the rounding term dominates
        ``allowed`` and the ratio says little about the model.
    """

    ratio: torch.Tensor
    allowed: torch.Tensor
    violation: torch.Tensor
    below_resolution: torch.Tensor


def check_certificate(model, y1: torch.Tensor, y2: torch.Tensor, *, certificate=None) -> CertificateCheck:
    r"""Hold the pairs ``(y1, y2)`` against the model's certificate in floating point.

    A pair is a violation only if :math:`\|R(y_1) - R(y_2)\| > L\|y_1 - y_2\| + \text{additive} +
    \rho(\|y_1\| + \|y_2\|) + 2\epsilon_0` (``model.certificate().bound(y1, y2)``): the computed map differs
    from the certified one by its rounding error, which the plain ratio against ``lipschitz_bound()`` ignores and
    which dominates for perturbations near the dtype's resolution (docs/models.md, "Certificates in floating
    point"); such pairs are flagged in ``below_resolution``.

    Parameters
    ----------
    model : a model with ``certificate()`` (:class:`invstable.UnrolledInverse`, :class:`invstable.VariationalInverse`)
    y1, y2 : torch.Tensor
        Batched measurements of one shape and dtype.
    certificate : invstable.models.Certificate, optional
        Default: ``model.certificate(y1.dtype)`` after both reconstructions (a solver's term follows its last solve).

    Raises
    ------
    TypeError
        If the model has no ``certificate()`` and none is given.
    ValueError
        If ``y1`` and ``y2`` differ in shape or dtype, or a pair is identical.
    """
    from .models._certificate import resolution  # noqa: PLC0415 (the models import this module's searches)

    _check(y1, 1.0, 1, 1)
    if not isinstance(y2, torch.Tensor) or y2.shape != y1.shape or y2.dtype != y1.dtype:
        raise ValueError(f"y2 must be a tensor of y1's shape {tuple(y1.shape)} and dtype {y1.dtype}, got "
                         f"{tuple(getattr(y2, 'shape', ())) } {getattr(y2, 'dtype', type(y2).__name__)}")
    if certificate is None and not callable(getattr(model, "certificate", None)):
        raise TypeError(f"{type(model).__name__} has no certificate(); pass certificate= (an "
                        "invstable.models.Certificate) or use lipschitz_search for a plain ratio")
    with torch.no_grad():
        change = _norm((model(y1) - model(y2)).double()).cpu()
    if certificate is None:
        certificate = model.certificate(y1.dtype)
    dist = _norm(y1.double() - y2.double()).cpu()
    if bool((dist == 0).any()):
        raise ValueError(f"pair(s) {_which(dist == 0)} are identical (y1 == y2): there is no ratio to check")
    bound = certificate.bound(y1, y2).cpu()
    relative = dist / _norm(y1.double()).cpu()
    return CertificateCheck(change / dist, bound / dist, change > bound, relative < resolution(y1.dtype))
