"""Checking an operator before anything is certified on it: adjointness and a spectral-norm bound."""

from __future__ import annotations

import dataclasses
import warnings

import torch

from .._warnings import ConvergenceWarning
from ._base import Operator, device_of, memo, remember, require_operator, shape_tuple, state_version
from ._norms import POWER_MARGIN, as_double, inner, power_norm

__all__ = ["AdjointMismatchError", "OperatorReport", "POWER_MARGIN", "check_operator", "default_tolerance",
           "norm_bound", "power_norm", "require_operator", "verify_adjoint"]


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
        Precision the operator computes in: the least precise of the probes' dtype (float64 where the operator
        accepts it, else float32) and the dtypes of what ``A`` and ``A_adjoint`` return.
    tol : float
        Tolerance the mismatch was held to (by default it follows ``dtype``).
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


#: largest accepted relative adjoint mismatch for an operator that computes in each precision
_TOLERANCES = {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def default_tolerance(precision: torch.dtype) -> float:
    """The adjoint tolerance for an operator computing in ``precision``: ``1e-8`` in float64, ``1e-4`` in
    float32 (a relative mismatch a few thousand times the rounding unit)."""
    return _TOLERANCES.get(precision, 1e-4)


def _lowest(*dtypes: torch.dtype) -> torch.dtype:
    """The least precise of floating-point (or complex) dtypes."""
    def eps(d):
        return torch.finfo(d.to_real() if d.is_complex else d).eps
    return max(dtypes, key=eps)


def _probe(op, in_shape, dtype, device, generator):
    """One relative mismatch, the measurement shape, and the precision the operator computed in: the least
    precise of the input dtype and the dtypes of what ``A`` and ``A_adjoint`` returned."""
    with torch.no_grad():
        x = torch.randn((1, *in_shape), dtype=dtype, generator=generator).to(device)
        ax = op.A(x)
        if not isinstance(ax, torch.Tensor):
            raise ValueError(f"A returned a {type(ax).__name__}; an operator must return torch tensors")
        if not (ax.is_floating_point() or ax.is_complex()):
            raise TypeError(f"A returned {ax.dtype} for {dtype} input; an operator must return floating-point tensors")
        y = torch.randn(ax.shape, dtype=ax.dtype, generator=generator).to(device)
        aty = op.A_adjoint(y)
        if not isinstance(aty, torch.Tensor) or not (aty.is_floating_point() or aty.is_complex()):
            raise TypeError(f"A_adjoint returned {getattr(aty, 'dtype', type(aty).__name__)}; an operator must return "
                            f"floating-point tensors")
        if tuple(aty.shape) != tuple(x.shape):
            raise ValueError(
                f"A_adjoint returned shape {tuple(aty.shape)} for a measurement of shape {tuple(y.shape)}, but images "
                f"have shape {tuple(x.shape)}; the adjoint must map measurements back to images"
            )
        lhs, rhs = inner(ax, y), inner(x, aty)
        scale = float(as_double(ax).norm() * as_double(y).norm())
        if scale == 0.0:
            scale = float(as_double(x).norm() * as_double(aty).norm()) or 1.0
    return float((lhs - rhs).abs()) / scale, tuple(ax.shape[1:]), _lowest(dtype, ax.dtype, aty.dtype)


def _measure(op, in_shape, *, dtypes, n_probes, generator, device):
    """``(mismatch, out_shape, precision, probe dtype)`` of the operator as it is (never a cast copy: the
    precision is that of the operator the caller uses), in the first of ``dtypes`` it accepts."""
    last_error = None
    for dtype in dtypes:
        try:
            probes = [_probe(op, in_shape, dtype, device, generator) for _ in range(n_probes)]
        except (RuntimeError, TypeError) as err:
            last_error = err
            continue
        return max(p[0] for p in probes), probes[0][1], _lowest(*(p[2] for p in probes)), dtype
    raise TypeError(
        f"could not apply {type(op).__name__} to a batch of shape (1, *{in_shape}) in "
        f"{' or '.join(str(d).replace('torch.', '') for d in dtypes)}: {last_error}"
    )


def _mismatch_message(op, mismatch, precision, tol, what: str = "") -> str:
    hint = ""
    if precision == torch.float64 and mismatch <= default_tolerance(torch.float32):
        hint = (" The mismatch is at the level of float32 rounding: if the operator computes in float32 inside "
                "(some of its tensors are float32 although it returns float64), pass tol=1e-4.")
    return (
        f"{type(op).__name__}: relative adjoint mismatch {mismatch:.3e} (the operator computes in "
        f"{str(precision).replace('torch.', '')}) exceeds the tolerance {tol:.1e}{what}; A_adjoint is not the adjoint "
        f"of A. Fix the adjoint (deepinv's adjoint_function can derive one by automatic differentiation) or, if the "
        f"mismatch is rounding, pass a larger tol.{hint}"
    )


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
        Largest accepted relative mismatch; by default it follows the precision the operator computes in (the
        dtype of its output): ``1e-8`` in float64, ``1e-4`` in float32. The operator is measured as it is, in
        float64 when it accepts float64 input, else in float32.
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
    TypeError
        When ``op`` is not an operator (a plain function, say), or cannot be applied in float64 or float32.

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
    require_operator(op)
    in_shape = shape_tuple(in_shape)
    generator = rng if isinstance(rng, torch.Generator) else torch.Generator().manual_seed(0 if rng is None else int(rng))
    mismatch, out_shape, dtype, probe_dtype = _measure(op, in_shape, dtypes=(torch.float64, torch.float32),
                                                       n_probes=n_probes, generator=generator, device=device_of(op))
    if tol is None:
        tol = default_tolerance(dtype)
    if not mismatch <= tol:
        raise AdjointMismatchError(_mismatch_message(op, mismatch, dtype, tol))
    bound = own_norm_bound(op)
    if bound is not None:
        return OperatorReport(mismatch, dtype, tol, bound, bound, "exact", 0.0, 0, in_shape, out_shape)
    estimate, iterations, converged = power_norm(op, in_shape, max_iter=max_iter, dtype=probe_dtype,
                                                 rtol=1e-6 if dtype == torch.float64 else 1e-4, generator=generator)
    if not converged:
        warnings.warn(
            f"{type(op).__name__}: the power iteration for ||A|| did not converge in {max_iter} iterations "
            f"(estimate {estimate:.6g}); the norm bound {estimate * (1 + margin):.6g} may be too small. Raise "
            f"max_iter or give the operator an exact norm_bound()", ConvergenceWarning, stacklevel=2)
    return OperatorReport(mismatch, dtype, tol, estimate * (1 + margin), estimate, "power iteration", margin,
                          iterations, in_shape, out_shape, converged)


def own_norm_bound(op) -> float | None:
    """The operator's own bound on ``||A||_2``, or ``None`` when it has none.

    Every :class:`Operator` declares ``norm_bound()`` (raising ``NotImplementedError`` when it knows none); any
    other operator may define one too: that is how a user's deepinv physics gives invstable its exact norm.
    """
    own = op.norm_bound if isinstance(op, Operator) else getattr(op, "norm_bound", None)
    if not callable(own):
        return None
    try:
        return float(own())
    except NotImplementedError:
        return None


def norm_bound(op, in_shape=None, *, margin: float = POWER_MARGIN) -> float:
    """Upper bound on ``||A||_2``: the operator's own exact bound, or power iteration with a margin (cached).

    ``in_shape`` (one image, no batch axis) is needed only for operators without ``norm_bound()``.
    """
    own = own_norm_bound(op)
    if own is not None:
        return own
    if in_shape is None:
        raise ValueError(
            f"{type(op).__name__} has no norm_bound(); pass in_shape (one image, no batch axis) so that its norm "
            f"can be estimated by power iteration"
        )
    require_operator(op)
    in_shape = shape_tuple(in_shape)
    # remembered beside the operator for its current state (a changed parameter or buffer measures it again)
    return remember(op, "norm", (in_shape, margin, _version(op)),
                    lambda: check_operator(op, in_shape, margin=margin).norm_bound)


def _version(op) -> tuple:
    return state_version(op) if isinstance(op, torch.nn.Module) else ()


def verify_adjoint(op, *, in_shape=None, y_shape=None, dtype: torch.dtype = torch.float32, device=None,
                   name: str = "op") -> None:
    """Refuse an operator whose ``A_adjoint`` is not the adjoint of ``A``, cheaply: the verdict is measured once per
    operator, shape, dtype and state (3 random probes, as :func:`check_operator`) and remembered.

    Give the shape of one image (``in_shape``) or of one measurement (``y_shape``), both without batch axis. The
    probes run in ``dtype`` (the precision of the caller's data) and the tolerance follows the precision the
    operator computes in. Used by the baselines, whose results are silently wrong with a wrong adjoint.

    Raises
    ------
    AdjointMismatchError
        With the measured mismatch; the same verdict is given again, without measuring, for the same operator.
    """
    require_operator(op, name)
    shape = tuple(in_shape if in_shape is not None else y_shape)
    if 0 in shape:
        return  # nothing to measure on an empty image
    dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    device = torch.device(device) if device is not None else device_of(op)
    version = _version(op)
    key = ("image" if in_shape is not None else "measurement", shape, dtype, str(device), version)
    cache = memo(op, "adjoint")
    if cache is not None and key in cache:
        verdict = cache[key]
    else:
        if in_shape is None:
            with torch.no_grad():
                in_shape = tuple(op.A_adjoint(torch.zeros((1, *shape), dtype=dtype, device=device)).shape[1:])
        # in the caller's dtype first; the other one only for an operator that refuses it (whose use will fail
        # on its own, with its own message)
        other = torch.float32 if dtype == torch.float64 else torch.float64
        mismatch, out_shape, precision, _ = _measure(op, in_shape, dtypes=(dtype, other), n_probes=3,
                                                     generator=torch.Generator().manual_seed(0), device=device)
        tol = default_tolerance(precision)
        verdict = None if mismatch <= tol else _mismatch_message(
            op, mismatch, precision, tol, f" (measured before {name} is used in a reconstruction, which would be "
            f"silently wrong with it)")
        if cache is not None:
            if len(cache) > 16:  # states and shapes seen before: keep the cache small
                cache.clear()
            # one measurement answers for the image shape and for the measurement shape it maps to
            for kind, seen in (("image", tuple(in_shape)), ("measurement", tuple(out_shape))):
                cache[(kind, seen, dtype, str(device), version)] = verdict
    if verdict is not None:
        raise AdjointMismatchError(verdict)
