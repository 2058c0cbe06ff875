"""Checking an operator before anything is certified on it: adjointness and a spectral-norm bound."""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import torch

from ._base import state_version

#: default relative safety margin on a power-iteration estimate of ||A|| (power iteration approaches the
#: norm from below; the margin turns a converged estimate into an upper bound in practice)
POWER_MARGIN = 0.01


class AdjointMismatchError(ValueError):
    """The adjoint of an operator does not match its forward map."""


@dataclasses.dataclass(frozen=True)
class OperatorReport:
    """What :func:`check_operator` measured.

    Attributes
    ----------
    adjoint_mismatch : float
        Largest ``|<Ax, y> - <x, A^T y>| / (||Ax|| ||y||)`` over the random probes.
    dtype : torch.dtype
        Precision of that measurement (float64 where the operator allows it).
    tol : float
        Tolerance the mismatch was held to.
    norm_bound : float
        Upper bound on ``||A||_2``.
    norm_estimate : float
        The estimate the bound was made from.
    norm_method : str
        ``"exact"`` (the operator's own ``norm_bound()``) or ``"power iteration"``.
    margin : float
        Relative margin between estimate and bound.
    iterations : int
        Power iterations used (0 when exact).
    converged : bool
        Whether the power iteration met its residual criterion (always true when exact).
    in_shape, out_shape : tuple of int
        Shapes of one image and one measurement (no batch axis).
    """

    adjoint_mismatch: float
    dtype: torch.dtype
    tol: float
    norm_bound: float
    norm_estimate: float
    norm_method: str
    margin: float
    iterations: int
    in_shape: tuple
    out_shape: tuple
    converged: bool = True


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.conj() * b).real.sum() if a.is_complex() else (a * b).sum()


def _probe(op, in_shape, dtype, device, generator):
    x = torch.randn((1, *in_shape), dtype=dtype, generator=generator).to(device)
    ax = op.A(x)
    if not isinstance(ax, torch.Tensor):
        raise ValueError(f"A returned a {type(ax).__name__}; an operator must return torch tensors")
    if ax.dtype != dtype:
        raise TypeError(f"A returned {ax.dtype} for {dtype} input")
    y = torch.randn(ax.shape, dtype=dtype, generator=generator).to(device)
    aty = op.A_adjoint(y)
    if tuple(aty.shape) != tuple(x.shape):
        raise ValueError(
            f"A_adjoint returned shape {tuple(aty.shape)} for a measurement of shape {tuple(y.shape)}, but images "
            f"have shape {tuple(x.shape)}; the adjoint must map measurements back to images"
        )
    lhs, rhs = _inner(ax, y), _inner(x, aty)
    scale = float(ax.norm() * y.norm())
    if scale == 0.0:
        scale = float(x.norm() * aty.norm()) or 1.0
    return float((lhs - rhs).abs()) / scale, tuple(ax.shape[1:])


def _device_of(op) -> torch.device:
    for t in list(op.parameters()) + list(op.buffers()):
        return t.device
    return torch.device("cpu")


def power_norm(op, in_shape, *, max_iter: int = 500, rtol: float = 1e-6, dtype=torch.float64,
               generator: torch.Generator | None = None) -> tuple[float, int, bool]:
    """Power iteration on ``A^T A``.

    Returns the estimate of ``||A||_2`` (a lower bound), the iterations used, and whether it converged: the
    residual ``||A^T A v - lambda v||`` fell below ``rtol * lambda`` (a change of the estimate alone can stall
    on a plateau well below the norm).
    """
    device = _device_of(op)
    v = torch.randn((1, *in_shape), dtype=dtype, generator=generator).to(device)
    v = v / v.norm()
    lam, it = 0.0, 0
    with torch.no_grad():
        for it in range(1, max_iter + 1):
            w = op.A_adjoint(op.A(v))
            lam = float(_inner(v, w))
            norm_w = float(w.norm())
            if norm_w == 0.0:
                return 0.0, it, True
            if float((w - lam * v).norm()) <= rtol * max(lam, 1e-300):
                return math.sqrt(max(lam, 0.0)), it, True
            v = w / norm_w
    return math.sqrt(max(lam, 0.0)), it, False


def check_operator(op, in_shape, *, tol: float | None = None, margin: float = POWER_MARGIN, n_probes: int = 3,
                   max_iter: int = 500, rng: torch.Generator | int | None = None) -> OperatorReport:
    r"""Measure the adjoint mismatch of an operator and bound its spectral norm.

    Parameters
    ----------
    op : deepinv.physics.LinearPhysics
        The operator (see :func:`as_operator` for other kinds of input).
    in_shape : tuple of int
        Shape of one image, without batch axis, e.g. ``(1, 128, 128)``.
    tol : float, optional
        Largest accepted relative mismatch; default ``1e-8`` when measured in float64, ``1e-4`` in float32.
    margin : float, default 0.01
        Relative safety margin added to a power-iteration estimate of the norm.
    n_probes : int, default 3
        Random ``(x, y)`` pairs; the largest mismatch is reported.
    max_iter : int, default 500
        Cap on the power iterations; they stop earlier when the residual ``||A^T A v - lambda v||`` is below
        ``1e-6 lambda``, and a :class:`RuntimeWarning` says when the cap is hit.
    rng : torch.Generator or int, optional
        Randomness of the probes and of the power-iteration start.

    Returns
    -------
    OperatorReport

    Raises
    ------
    AdjointMismatchError
        When the mismatch exceeds ``tol``: a certified learned model is only as sound as its adjoint.

    Notes
    -----
    The mismatch is :math:`|\langle Ax, y\rangle - \langle x, A^T y\rangle| / (\|Ax\|\,\|y\|)` for Gaussian
    ``x`` and ``y``. The norm bound is the operator's own exact ``norm_bound()`` where it has one (FFT blur,
    CT by Lanczos, dense matrices), else ``(1 + margin)`` times the converged power-iteration estimate. Power
    iteration approaches the norm from below; the margin makes the bound an upper bound in practice, not a
    proof: when the top of the spectrum is clustered within the margin of a random start's reach, or the start
    is nearly orthogonal to the top singular vector, it can fall short. Give an operator of your own an exact
    ``norm_bound()`` when you know its norm.
    """
    from ._wrap import _shape_tuple  # noqa: PLC0415

    in_shape = _shape_tuple(in_shape)
    generator = rng if isinstance(rng, torch.Generator) else torch.Generator().manual_seed(0 if rng is None else int(rng))
    device = _device_of(op)

    measured = None
    for dtype in (torch.float64, torch.float32):
        candidates = [op] if dtype == torch.float32 else [op, None]
        for candidate in candidates:
            try:
                target = candidate if candidate is not None else copy.deepcopy(op).to(torch.float64)
                mismatch, out_shape = max(_probe(target, in_shape, dtype, device, generator) for _ in range(n_probes))
            except (RuntimeError, TypeError) as err:
                last_error = err
                continue
            measured = (target, dtype, mismatch, out_shape)
            break
        if measured is not None:
            break
    if measured is None:
        raise TypeError(
            f"could not apply {type(op).__name__} to a batch of shape (1, *{in_shape}) in float64 or float32: "
            f"{last_error}"
        )
    target, dtype, mismatch, out_shape = measured
    if tol is None:
        tol = 1e-8 if dtype == torch.float64 else 1e-4
    if not mismatch <= tol:
        raise AdjointMismatchError(
            f"{type(op).__name__}: relative adjoint mismatch {mismatch:.3e} (in {dtype}) exceeds the tolerance "
            f"{tol:.1e}; A_adjoint is not the adjoint of A. Fix the adjoint (deepinv's "
            f"adjoint_function can derive one by automatic differentiation) or, if the mismatch is rounding, "
            f"pass a larger tol"
        )

    if callable(getattr(op, "norm_bound", None)):
        try:
            bound = float(op.norm_bound())
        except NotImplementedError:
            bound = None
        if bound is not None:
            return OperatorReport(mismatch, dtype, tol, bound, bound, "exact", 0.0, 0, in_shape, out_shape)
    estimate, iterations, converged = power_norm(target, in_shape, max_iter=max_iter, dtype=dtype,
                                                 rtol=1e-6 if dtype == torch.float64 else 1e-4, generator=generator)
    if not converged:
        warnings.warn(
            f"{type(op).__name__}: the power iteration for ||A|| did not converge in {max_iter} iterations "
            f"(estimate {estimate:.6g}); the norm bound {estimate * (1 + margin):.6g} may be too small. Raise "
            f"max_iter or give the operator an exact norm_bound()", RuntimeWarning, stacklevel=2)
    return OperatorReport(mismatch, dtype, tol, estimate * (1 + margin), estimate, "power iteration", margin,
                          iterations, in_shape, out_shape, converged)


def norm_bound(op, in_shape=None, *, margin: float = POWER_MARGIN) -> float:
    """Upper bound on ``||A||_2``: the operator's own exact bound, or power iteration with a margin (cached).

    ``in_shape`` (one image, no batch axis) is needed only for operators without ``norm_bound()``.
    """
    own = getattr(op, "norm_bound", None)
    if callable(own):
        try:
            return float(own())
        except NotImplementedError:
            pass
    if in_shape is None:
        raise ValueError(
            f"{type(op).__name__} has no norm_bound(); pass in_shape (one image, no batch axis) so that its norm "
            f"can be estimated by power iteration"
        )
    cache = op.__dict__.setdefault("_invstable_norm_cache", {})
    key = (tuple(in_shape), margin, state_version(op))  # a changed parameter or buffer invalidates the entry
    if key not in cache:
        cache.clear()
        cache[key] = check_operator(op, in_shape, margin=margin).norm_bound
    return cache[key]
