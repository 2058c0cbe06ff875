r"""Variational reconstruction with a learned convex regulariser, for any linear operator, with a certificate.

.. math::

    \hat x(y) = \operatorname*{argmin}_{x \in C} \; \tfrac12 \|A x - y\|^2 + \lambda R_\mu(x) + \tfrac m2 \|x\|^2

with :math:`R_\mu` a :class:`invstable.nn.ConvexRidgeRegularizer` and ``C`` a box (or the whole space). The
minimiser is :math:`\tfrac{1}{2\sqrt m}`-Lipschitz in ``y`` for every linear ``A`` (docs/universal.md derives it);
the solver stops when a certified bound on its distance to the minimiser is below the tolerance, and
:meth:`VariationalInverse.certificate` adds that distance to the bound.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import numpy as np
import torch
from deepinv.models import Reconstructor
from torch import nn

from .._warnings import ConvergenceWarning
from ._certificate import DTYPES, SAFETY, Certificate, measure_rounding, unit_roundoff
from ..baselines._io import as_measurement, as_start
from ..operators import as_operator, norm_bound
from ..operators._base import state_version

__all__ = ["VariationalInverse", "Certificate", "SolveInfo"]


@dataclasses.dataclass(frozen=True)
class SolveInfo:
    """What the last solve did: iterations, and per sample the certified distance to the exact minimiser."""

    iterations: int
    converged: bool
    error_bound: torch.Tensor  # (B,) certified ||x_returned - x*||
    tolerance: float  # the distance the solver stopped at (per image)


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _bounds(bounds):
    if bounds is None:
        return None
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be None or a pair (low, high) such as (0, 1), got {bounds!r}") from None
    lo = -math.inf if lo is None else float(lo)
    hi = math.inf if hi is None else float(hi)
    if not lo < hi:
        raise ValueError(f"bounds must satisfy low < high, got {bounds!r}")
    return lo, hi


class _ImplicitSolve(torch.autograd.Function):
    """``y -> x*(y)`` with the derivative of the minimiser (implicit function theorem on the free pixels)."""

    @staticmethod
    def forward(ctx, y, model, x0, op):
        with torch.no_grad():
            x, _ = model.solve(y, x0=x0, physics=op)
        ctx.model, ctx.op = model, op
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad_x):
        (x,) = ctx.saved_tensors
        with torch.no_grad():
            v = ctx.model._hessian_solve(x, grad_x, ctx.op, rtol=ctx.model.derivative_tol)
            grad_y = ctx.op.A(v)
        return grad_y, None, None, None


class VariationalInverse(Reconstructor):
    r"""Minimiser of :math:`\tfrac12\|Ax - y\|^2 + \lambda R_\mu(x) + \tfrac m2\|x\|^2` over a box, for any ``A``.

    Parameters
    ----------
    regularizer : invstable.nn.ConvexRidgeRegularizer
        Convex; its weights are not trained here.
    operator : deepinv.physics.LinearPhysics or anything :func:`invstable.operators.as_operator` takes
    lam : float
        Weight :math:`\lambda > 0` of the regulariser.
    scale : float, default 1
        :math:`\mu > 0` in :math:`R_\mu(x) = \mu^{-2} R(\mu x)`.
    strong_convexity : float
        :math:`m > 0`; the certified Lipschitz constant is at most :math:`1 / (2\sqrt m)`.
    reference : float, default 0
        Constant grey level ``c`` the strong convexity pulls towards: :math:`\tfrac m2\|x - c\|^2` (a constant
        does not change the certificate: it cancels in the difference of two solutions).
    bounds : (low, high) or None, default (0, 1)
        Box constraint on the pixels (None for none; either end may be None). A box keeps the certificate.
    tol : float, default 1e-3
        The solver stops when its certified distance to the exact minimiser, per image, is at most
        ``tol * sqrt(pixels)`` (an RMS error of ``tol`` per pixel).
    max_iter : int, default 2000
    image_shape : tuple, optional
        Shape of one image ``(1, H, W)``; taken from ``A^T y`` on the first call otherwise.

    Notes
    -----
    The model is a :class:`deepinv.models.Reconstructor`: ``model(y, physics)`` solves the problem with that
    deepinv physics (any linear one) in place of the model's operator, so ``deepinv.test`` and ``deepinv.Trainer``
    run it; the certified constant :math:`1/(2\sqrt m)` holds for every linear ``A``
    (``lipschitz_bound(physics)``).

    The solver is accelerated projected gradient (FISTA) with the gradient restart of O'Donoghue and Candès,
    step :math:`1/L` with the certified :math:`L = \|A\|^2 + \lambda s \|W\|^2 + m`. At a point ``z`` with
    gradient mapping :math:`G = L(z - P_C(z - \nabla F(z)/L))`, strong convexity gives
    :math:`\|z - x^*\| \le (1 + \sqrt{1 - m/L}) \|G\| / m \le 2\|G\|/m`, and the returned
    :math:`P_C(z - \nabla F(z) / L)` is no farther (the projected gradient step is non-expansive and fixes
    :math:`x^*`).

    References
    ----------
    .. [1] A. Goujon, S. Neumayer, P. Bohra, S. Ducotterd, M. Unser, "A neural-network-based convex regularizer for
       inverse problems", IEEE Trans. Comput. Imaging 9 (2023).
    .. [2] B. O'Donoghue, E. Candès, "Adaptive restart for accelerated gradient schemes", Found. Comput. Math. 15
       (2015).
    """

    def __init__(self, regularizer, operator, *, lam: float, scale: float = 1.0, strong_convexity: float,
                 reference: float = 0.0, bounds=(0.0, 1.0), tol: float = 1e-3, max_iter: int = 2000,
                 image_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.regularizer = regularizer.requires_grad_(False)
        self.operator = as_operator(operator)
        self.lam = _positive(lam, "lam")
        self.scale = _positive(scale, "scale")
        self.strong_convexity = _positive(strong_convexity, "strong_convexity")
        if isinstance(reference, bool) or not isinstance(reference, (int, float)) or not math.isfinite(reference):
            raise ValueError(f"reference must be a finite number (a constant grey level), got {reference!r}")
        self.reference = float(reference)
        self.bounds = _bounds(bounds)
        self.tol = _positive(tol, "tol")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
        self.max_iter = max_iter
        self.image_shape = None if image_shape is None else tuple(int(n) for n in image_shape)
        #: start each solve from the previous solution when it has the same shape (a sequence of nearby
        #: measurements, e.g. an adversarial search); the result differs only within the certified tolerance
        self.warm_start = False
        #: relative residual at which the conjugate gradients of the implicit derivative (``y`` requiring grad)
        #: stop; an adversarial search, which needs an ascent direction and not an exact gradient, may loosen it
        self.derivative_tol = 1e-6
        self._previous: torch.Tensor | None = None
        self.last_solve: SolveInfo | None = None
        self.tuning: dict | None = None
        self._cache: dict = {}

    def __repr__(self) -> str:
        return (f"VariationalInverse(operator={type(self.operator).__name__}, lam={self.lam:.4g}, "
                f"scale={self.scale:.4g}, strong_convexity={self.strong_convexity:.4g}, reference={self.reference:.3g}, "
                f"bounds={self.bounds})")

    # ------------------------------------------------------------------ certificate
    def operator_norm(self) -> float:
        """Certified upper bound on ``||A||`` (:func:`invstable.operators.norm_bound`)."""
        return norm_bound(self.operator, self.image_shape)

    def _operator(self, physics):
        """The operator of a solve: the model's own, or ``physics`` (a deepinv physics or what as_operator takes)."""
        return self.operator if physics is None or physics is self.operator else as_operator(physics)

    def lipschitz_bound(self, physics=None) -> float:
        r"""Certified Lipschitz constant of the exact minimiser in ``y``:
        :math:`\sup_{0 \le s \le \|A\|} s / (s^2 + m)`, i.e. :math:`1/(2\sqrt m)` when :math:`\sqrt m \le \|A\|`
        (Tikhonov's constant with :math:`\alpha = m`), for every convex regulariser.

        With ``physics`` (another operator than the model's, as in ``model(y, physics)``): :math:`1/(2\sqrt m)`,
        which bounds the supremum for every linear ``A``."""
        m = self.strong_convexity
        if physics is not None and physics is not self.operator:
            return 1.0 / (2.0 * math.sqrt(m))
        if self.image_shape is not None:
            a = self.operator_norm()
            if a < math.sqrt(m):
                return a / (a * a + m)
        return 1.0 / (2.0 * math.sqrt(m))

    def certificate(self, dtype: torch.dtype | None = None, *, safety: float = SAFETY,
                    rounding: bool = True) -> Certificate:
        r"""The Lipschitz bound, the additive term of a finite-tolerance solve and the rounding term of ``dtype``
        (see :class:`Certificate`).

        The additive term is twice the largest distance to the minimiser that the solver accepts
        (``tol * sqrt(pixels)``); when the last solve stopped at ``max_iter`` before reaching it, twice the
        distance it certified instead (the larger).

        The rounding term covers what the tolerance does not: the solver's stopping test is evaluated in
        floating point. It is **measured**, not proven: with :math:`x^*` approached by a float64 solve at a
        tenth of the tolerance (certified distance :math:`b_{64}`), the excess
        :math:`\|\hat x_{32}(y) - x_{64}(y)\| + b_{64} - \mathrm{tol}\sqrt{N}` of a float32 solve, per unit of
        :math:`\|y\|` over measurements of random images and Gaussian ones at scales 0.1 to 10 (and at
        ``y = 0`` for the floor), times ``safety``; scaled by the ratio of the unit roundoffs for float64. Zero
        when no probe exceeds the tolerance. 10 batched solves at the model's image size (about ten times one
        solve), cached per weights, operator, size and the solver settings; ``rounding=False`` skips it (no
        rounding term: the certificate of exact arithmetic, as before).

        Parameters
        ----------
        dtype : torch.float32 or torch.float64, optional
            The dtype of the measurements the model solves with; default: that of its regulariser's weights.
        safety : float, default :data:`invstable.models._certificate.SAFETY`
        rounding : bool, default True
            Measure and include the rounding term (False: the certificate of exact arithmetic, at no cost).
        """
        if self.image_shape is None:
            raise ValueError("the image size is not known yet; call the model on a measurement first")
        if dtype is None:
            dtype = next(iter(self.regularizer.parameters()), torch.zeros(())).dtype
        if dtype not in DTYPES:
            raise ValueError(f"the rounding term is measured for {DTYPES}, got dtype={dtype!r}")
        if not (isinstance(safety, (int, float)) and math.isfinite(safety) and safety >= 1):
            raise ValueError(f"safety must be a number >= 1 (a factor on the measured error), got {safety!r}")
        per_image = self.tol * math.sqrt(math.prod(self.image_shape))
        if self.last_solve is not None and not self.last_solve.converged:
            per_image = max(per_image, float(self.last_solve.error_bound.max()))
        key = (self.image_shape, float(safety), self.lam, self.scale, self.strong_convexity, self.reference,
               self.bounds, self.tol, self.max_iter, state_version(self.regularizer), id(self.operator),
               state_version(self.operator) if isinstance(self.operator, nn.Module) else None)
        if not rounding:
            return Certificate(self.lipschitz_bound(), 2.0 * per_image)
        if self._cache.get("rounding_key") != key:
            self._cache["rounding"] = self._measure_rounding(safety)
            self._cache["rounding_key"] = key
        rate, floor = self._cache["rounding"]
        scale = unit_roundoff(dtype) / unit_roundoff(torch.float32)
        return Certificate(self.lipschitz_bound(), 2.0 * per_image, rate * scale, floor * scale, dtype)

    def _measure_rounding(self, safety: float) -> tuple[float, float]:
        """``(rho, epsilon_0)`` of float32 solves beyond the tolerance (see :meth:`certificate`)."""
        shape = self.image_shape
        low, high = copy.deepcopy(self).float(), copy.deepcopy(self).double()  # regulariser and operator too
        for m in (low, high):
            m.warm_start, m._previous, m.last_solve, m._cache = False, None, None, {}
        high.tol, high.max_iter = self.tol / 10, 10 * self.max_iter  # its certified distance enters the excess
        target = self.tol * math.sqrt(math.prod(shape))
        last = {}

        def run(y):
            return low.solve(y.float())[0].double()

        def reference(y):
            x, info = high.solve(y)
            last["high"] = info.error_bound.to(x)
            return x

        gen = torch.Generator().manual_seed(0)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            rough = torch.rand((2,) + shape, generator=gen, dtype=torch.float64)
            batches = [high.operator.A(rough)]
            white = torch.randn(batches[0].shape, generator=gen, dtype=torch.float64)
            batches.append(white * (batches[0].flatten(1).norm(dim=1) / white.flatten(1).norm(dim=1)).view(-1, 1, 1, 1))
            batches += [b * torch.tensor([0.1, 10.0], dtype=torch.float64).view(-1, 1, 1, 1) for b in list(batches)]
            return measure_rounding(run, reference, batches, safety=safety,
                                    excess=lambda err: err + last["high"] - target)

    # ------------------------------------------------------------------ solver
    def _smoothness(self, like: torch.Tensor, op) -> float:
        """Certified Lipschitz constant of the gradient of the smooth part (cached per weights, operator and size)."""
        key = (tuple(like.shape[-2:]), self.lam, self.strong_convexity, state_version(self.regularizer), id(op),
               state_version(op) if isinstance(op, nn.Module) else None)
        if self._cache.get("L_key") != key:
            smooth_r = self.regularizer.smoothness(tuple(like.shape[-2:]))
            self._cache["L"] = norm_bound(op, tuple(like.shape[1:])) ** 2 + self.lam * smooth_r + self.strong_convexity
            self._cache["L_key"] = key
        return self._cache["L"]

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.bounds is None else x.clamp(*self.bounds)

    def _gradient(self, x, aty, kernel, op):
        return (op.A_adjoint(op.A(x)) - aty + self.lam * self.regularizer.gradient(x, self.scale, kernel=kernel)
                + self.strong_convexity * (x - self.reference))

    def _start(self, y: torch.Tensor, op):
        aty = op.A_adjoint(y)
        if aty.ndim != 4 or aty.shape[1] != 1:
            raise ValueError(f"A^T y has shape {tuple(aty.shape)}; the universal regulariser reconstructs "
                             f"grayscale images (B, 1, H, W)")
        if op is self.operator:  # ||A|| and the certificate follow the size of the last solve with the own operator
            self.image_shape = tuple(aty.shape[1:])
        return aty

    @torch.no_grad()
    def solve(self, y: torch.Tensor, *, x0: torch.Tensor | None = None,
              physics=None) -> tuple[torch.Tensor, SolveInfo]:
        """Minimise to the tolerance; returns the image and a :class:`SolveInfo` (also kept in ``last_solve``).

        ``physics``: solve with this operator instead of the model's (a deepinv physics or anything
        :func:`invstable.operators.as_operator` takes)."""
        op = self._operator(physics)
        aty = self._start(y, op)
        kernel = self.regularizer.kernel().detach().to(aty)
        big_l = self._smoothness(aty, op)
        m = self.strong_convexity
        factor = 2.0 / m  # ||z - x*|| <= (1 + sqrt(1 - m / L)) ||G(z)|| / m <= 2 ||G(z)|| / m (docs/universal.md)
        target = self.tol * math.sqrt(math.prod(aty.shape[1:]))
        if x0 is None and self.warm_start and self._previous is not None and self._previous.shape == aty.shape:
            x0 = self._previous
        x = self._project(torch.zeros_like(aty) if x0 is None else x0.to(aty))
        z = x.clone()
        t = torch.ones(aty.shape[0], 1, 1, 1, dtype=aty.dtype, device=aty.device)
        err = torch.full((aty.shape[0],), math.inf, dtype=aty.dtype, device=aty.device)
        it, converged = 0, False
        for it in range(1, self.max_iter + 1):
            x_new = self._project(z - self._gradient(z, aty, kernel, op) / big_l)
            step = z - x_new
            err = factor * big_l * step.flatten(1).norm(dim=1)
            if bool((err <= target).all()):
                x, converged = x_new, True
                break
            restart = ((step * (x_new - x)).flatten(1).sum(dim=1) > 0).view(-1, 1, 1, 1)
            t = torch.where(restart, torch.ones_like(t), t)
            t_next = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
            z = torch.where(restart, x_new, x_new + ((t - 1.0) / t_next) * (x_new - x))
            x, t = x_new, t_next
        if self.warm_start:
            self._previous = x.detach()
        info = SolveInfo(iterations=it, converged=converged, error_bound=err.detach().cpu(), tolerance=target)
        self.last_solve = info
        if not converged:
            warnings.warn(f"VariationalInverse stopped at max_iter={self.max_iter} with a certified distance to the "
                          f"minimiser of {float(err.max()):.3g} (tolerance {target:.3g}); certificate() includes it. "
                          "Raise max_iter or tol", ConvergenceWarning, stacklevel=3)
        return x, info

    @torch.no_grad()
    def _hessian_solve(self, x: torch.Tensor, b: torch.Tensor, op, *, iterations: int = 300,
                       rtol: float = 1e-6) -> torch.Tensor:
        """``v`` with ``(P H P) v = P b`` by conjugate gradients: ``H`` the Hessian of the objective at ``x``, ``P``
        the pixels not at an active bound (those move with ``y``; the others stay at the bound)."""
        reg = self.regularizer
        kernel = reg.kernel().detach().to(x)
        curvature = reg.curvature(x, self.scale, kernel=kernel)  # fixed at x: once, not once per CG iteration
        free = torch.ones_like(x)
        if self.bounds is not None:
            lo, hi = self.bounds
            eps = 1e-6 * max(1.0, abs(lo) if math.isfinite(lo) else 1.0, abs(hi) if math.isfinite(hi) else 1.0)
            free = ((x > lo + eps) & (x < hi - eps)).to(x)

        def hess(v):
            v = v * free
            hv = op.A_adjoint(op.A(v)) + self.lam * reg.hessian_vector(x, v, kernel=kernel, curvature=curvature) \
                + self.strong_convexity * v
            return hv * free

        b = b * free
        v = torch.zeros_like(b)
        r, p = b.clone(), b.clone()
        rr = (r * r).flatten(1).sum(dim=1)
        stop = (rtol ** 2) * rr
        for _ in range(iterations):
            if bool((rr <= stop).all()):
                break
            hp = hess(p)
            alpha = (rr / (p * hp).flatten(1).sum(dim=1).clamp_min(1e-300)).view(-1, 1, 1, 1)
            v = v + alpha * p
            r = r - alpha * hp
            rr_new = (r * r).flatten(1).sum(dim=1)
            p = r + (rr_new / rr.clamp_min(1e-300)).view(-1, 1, 1, 1) * p
            rr = rr_new
        return v

    def forward(self, y, physics=None, *, x0=None, **kwargs):
        r"""Reconstruct from batched measurements ``y`` (torch or numpy, as the baselines take them);
        differentiable in ``y`` (implicit differentiation) when ``y`` requires grad.

        ``physics`` (deepinv's ``model(y, physics)``): solve with that linear operator instead of the model's own
        (the model keeps its own for later calls); the certificate :math:`1/(2\sqrt m)` holds for it too."""
        if kwargs:
            raise TypeError(f"VariationalInverse is called as model(y), model(y, physics) or with x0=; got unexpected "
                            f"keyword argument(s) {sorted(kwargs)}")
        op = self._operator(physics)
        t, restore = as_measurement(y, op)
        start = None
        if x0 is not None:
            start = as_start(x0, tuple(op.A_adjoint(t).shape), t.dtype)
        if torch.is_grad_enabled() and t.requires_grad:
            return restore(_ImplicitSolve.apply(t, self, start, op))
        return restore(self.solve(t, x0=start, physics=op)[0])

    # ------------------------------------------------------------------ choosing lam, mu, m
    def parameters_dict(self) -> dict:
        return {"lam": self.lam, "scale": self.scale, "strong_convexity": self.strong_convexity}

    def tune(self, x_val: torch.Tensor, y_val: torch.Tensor, *, max_lipschitz: float | None = None,
             factor: float = 2.0, max_evaluations: int = 30, reference: str | float | None = None) -> dict:
        r"""Choose :math:`\lambda`, :math:`\mu` and ``m`` with the best mean validation PSNR (no weight training).

        A coordinate search in log scale from the current values: ``lam`` alone by ``factor**2``, then the three
        weights by ``factor``, then ``lam`` and ``scale`` by ``sqrt(factor)``. Each weight moves while the PSNR
        improves and stops when the next value is worse, so the chosen value never sits at the end of the values
        tried. ``m`` is searched at and above ``1 / (4 max_lipschitz^2)`` when ``max_lipschitz`` is given (then
        the certified bound is at most ``max_lipschitz``), else from the current value. Each solve starts from
        the best reconstruction so far.

        Parameters
        ----------
        x_val : torch.Tensor, shape (B, 1, H, W)
            Validation images (never test images).
        y_val : torch.Tensor
            Their measurements.
        max_lipschitz : float, optional
        factor : float, default 2
        max_evaluations : int, default 30
            Solves at most; the record says when the budget ran out.
        reference : "mean", float or None
            "mean" sets the grey level the strong convexity pulls towards to the mean of ``x_val`` (a
            validation statistic; the certificate does not depend on it); a number sets it; None keeps it.

        Returns
        -------
        dict
            The chosen values, the validation PSNR and every evaluation (also kept in ``self.tuning``).
        """
        if not isinstance(x_val, torch.Tensor) or not isinstance(y_val, torch.Tensor) or len(x_val) != len(y_val):
            raise ValueError("x_val and y_val must be tensors with the same number of samples (validation pairs)")
        if reference == "mean":
            self.reference = float(x_val.detach().double().mean())
        elif reference is not None:
            self.reference = float(reference)
        m_floor = 0.0
        if max_lipschitz is not None:
            m_floor = 1.0 / (4.0 * _positive(max_lipschitz, "max_lipschitz") ** 2)
            self.strong_convexity = m_floor  # the search starts at the floor and only goes up
        evaluations: list[dict] = []
        seen: dict = {}
        state = {"x": None, "best": -math.inf}
        x_ref = x_val.detach().double().cpu()

        def score(values: dict) -> float:
            key = tuple(round(math.log(values[k]), 6) for k in ("lam", "scale", "strong_convexity"))
            if key in seen:
                return seen[key]
            for k, v in values.items():
                setattr(self, k, v)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                x, info = self.solve(y_val, x0=state["x"])
            mse = ((x.detach().double().cpu().clamp(0, 1) - x_ref) ** 2).flatten(1).mean(dim=1)
            p = float((10 * torch.log10(1.0 / mse.clamp_min(1e-20))).mean())
            seen[key] = p
            if p > state["best"]:
                state["x"], state["best"] = x, p
            evaluations.append({**values, "psnr": p, "iterations": info.iterations, "converged": info.converged})
            return p

        current = self.parameters_dict()
        best = score(current)
        stages = ((factor ** 2, ("lam",)), (factor, ("lam", "scale", "strong_convexity")),
                  (math.sqrt(factor), ("lam", "scale")))
        for ratio, names in stages:
            improved = True
            while improved and len(evaluations) < max_evaluations:
                improved = False
                for name in names:
                    for direction in (ratio, 1.0 / ratio):
                        moved = False
                        while len(evaluations) < max_evaluations:
                            trial = dict(current, **{name: current[name] * direction})
                            if name == "strong_convexity" and trial[name] < m_floor * (1 - 1e-12):
                                break
                            p = score(trial)
                            if p <= best:
                                break
                            best, current, improved, moved = p, trial, True, True
                        if moved:
                            break  # the other side is the value it came from, already worse
        for k, v in current.items():
            setattr(self, k, v)
        self.tuning = {"chosen": current, "reference": self.reference, "validation_psnr": best, "n_validation": int(len(x_val)),
                       "max_lipschitz": max_lipschitz, "evaluations": evaluations,
                       "strong_convexity_at_floor": bool(m_floor and current["strong_convexity"] <= m_floor * 1.000001),
                       "exhausted": len(evaluations) >= max_evaluations}
        return self.tuning


#: ``m`` when neither a preset nor a tuning gives one: certified bound 1 / (2 sqrt(1e-3)) = 15.8
DEFAULT_STRONG_CONVEXITY = 1e-3


def noise_rule(levels: list[dict], noise_level: float | None) -> dict:
    r"""``lam`` and ``scale`` for a user who knows only the noise level: the denoiser weights learned at the
    training noise levels :math:`\sigma_j`, interpolated linearly in :math:`\log\sigma` (held constant beyond
    the ends), with ``strong_convexity`` :data:`DEFAULT_STRONG_CONVEXITY`.

    The rule reads the data term :math:`\tfrac12\|Ax - y\|^2` at noise :math:`\sigma` as the denoiser's
    :math:`\tfrac12\|x - y\|^2` at the same :math:`\sigma` (exact for ``A = I``); for other operators it is a
    starting point, and :meth:`VariationalInverse.tune` on validation pairs does better.
    """
    sig = np.log([lv["sigma"] for lv in levels])
    if noise_level is None:
        at = float(np.median(sig))
    else:
        at = math.log(_positive(noise_level, "noise_level"))
    lam = float(np.exp(np.interp(at, sig, np.log([lv["lam"] for lv in levels]))))
    scale = float(np.exp(np.interp(at, sig, np.log([lv["scale"] for lv in levels]))))
    return {"lam": lam, "scale": scale, "strong_convexity": DEFAULT_STRONG_CONVEXITY}
