r"""Total-variation reconstruction :math:`\min_x \tfrac12\|Ax - y\|^2 + \lambda \|\nabla x\|_{1,2}`, with deepinv's
TV prior and its accelerated proximal-gradient (FISTA) solver."""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings

import numpy as np
import torch
from deepinv.optim import TVPrior, optim_builder
from deepinv.optim.data_fidelity import L2
from deepinv.physics import LinearPhysics

from .._warnings import ConvergenceWarning
from ..operators import norm_bound
from ._io import as_measurement, as_start


@dataclasses.dataclass(frozen=True)
class TVSolveInfo:
    """What the last TV solve did (kept in :attr:`TotalVariation.last_solve`).

    Attributes
    ----------
    iterations : int
        FISTA iterations run.
    relative_change : torch.Tensor of shape (B,)
        Per sample, the relative change of the last iteration, ``||x_k - x_{k-1}|| / ||x_k||`` (NaN when fewer than
        three iterations ran: deepinv checks convergence from its third iteration on).
    converged : bool
        Whether every sample's relative change is below ``tol`` (the solver stops only then, or at ``max_iter``).
    tol : float
    max_iter : int
    """

    iterations: int
    relative_change: torch.Tensor
    converged: bool
    tol: float
    max_iter: int

    @property
    def max_relative_change(self) -> float:
        """The largest final relative change over the batch (what is compared with ``tol``)."""
        return float(self.relative_change.max()) if self.relative_change.numel() else 0.0


class TotalVariation:
    r"""TV reconstructor: FISTA on :math:`\tfrac12\|Ax - y\|^2 + \lambda\,\mathrm{TV}(x)` (isotropic TV).

    Parameters
    ----------
    op : deepinv.physics.LinearPhysics
    lam : float
        TV weight :math:`\lambda > 0`.
    max_iter : int, default 300
        Cap on the FISTA iterations; the solver stops earlier once the relative change of ``x`` of every sample,
        ``||x_k - x_{k-1}|| / ||x_k||``, is below ``tol``. Stopping at the cap raises a
        :class:`invstable.ConvergenceWarning`.
    tol : float, default 1e-5
    prox_iter : int, default 20
        Iterations of deepinv's TV denoiser (the proximal map of TV), warm-started across FISTA steps.

    Notes
    -----
    The step size is :math:`1 / \|A\|^2` from :func:`invstable.operators.norm_bound`. The solver is
    deepinv's (``optim_builder("FISTA")`` with ``TVPrior``); invstable only wraps it in the calling
    convention of its baselines. TV is not linear and has no certified Lipschitz constant:
    :meth:`lipschitz_bound` returns ``inf``.

    Convergence is judged per sample (deepinv's own criterion is the batch mean of the relative changes, which
    lets one sample stop early on the others' account): after each call :attr:`last_solve` is a
    :class:`TVSolveInfo` with the iterations run and each sample's final relative change.

    References
    ----------
    L. Rudin, S. Osher and E. Fatemi, Physica D 60 (1992); A. Beck and M. Teboulle, SIAM J. Imaging Sci. 2 (2009).
    """

    def __init__(self, op, lam: float, *, max_iter: int = 300, tol: float = 1e-5, prox_iter: int = 20):
        if not isinstance(op, LinearPhysics):
            raise TypeError(f"op must be a deepinv LinearPhysics (see invstable.as_operator), got {type(op).__name__}")
        if isinstance(lam, (torch.Tensor, np.ndarray)):
            if (lam.numel() if isinstance(lam, torch.Tensor) else lam.size) != 1:
                raise ValueError(f"lam must be one number (TV uses one weight for the whole batch), got an array of "
                                 f"shape {tuple(lam.shape)}; reconstruct the samples one by one to give each its lam")
            lam = lam.item()  # a one-element tensor or array is a number
        if isinstance(lam, bool) or not (isinstance(lam, numbers.Real) and math.isfinite(lam) and lam > 0):
            raise ValueError(f"lam must be a finite number > 0, got {lam!r}")
        for name, value in (("max_iter", max_iter), ("prox_iter", prox_iter)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(tol, bool) or not (isinstance(tol, numbers.Real) and math.isfinite(tol) and tol > 0):
            raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
        self.op, self.lam, self.max_iter, self.tol, self.prox_iter = op, float(lam), int(max_iter), float(tol), \
            int(prox_iter)
        self.last_solve: TVSolveInfo | None = None

    def __repr__(self) -> str:
        return f"TotalVariation(op={self.op!r}, lam={self.lam!r})"

    def __call__(self, y, *, x0=None):
        t, restore = as_measurement(y, self.op)
        # differentiable in y when y requires grad (autograd through the iterations, for adversarial searches)
        with torch.set_grad_enabled(torch.is_grad_enabled() and t.requires_grad):
            x_shape = self.op.A_adjoint(t).shape
            if t.numel() == 0:  # an empty batch: nothing to reconstruct (deepinv's solver cannot take it)
                if x0 is not None:
                    as_start(x0, x_shape, t.dtype)
                self.last_solve = TVSolveInfo(0, t.new_zeros(0), True, self.tol, self.max_iter)
                return restore(t.new_zeros(x_shape))
            step = 1.0 / norm_bound(self.op, x_shape[1:]) ** 2
            solver = optim_builder(
                iteration="FISTA", prior=TVPrior(n_it_max=self.prox_iter), data_fidelity=L2(),
                params_algo={"stepsize": step, "lambda": self.lam, "a": 3}, max_iter=self.max_iter,
                early_stop=True, crit_conv="residual", thres_conv=self.tol,
                **({"unfold": True, "trainable_params": []} if torch.is_grad_enabled() else {}),
            )
            state = {"iterations": 0, "change": torch.full((x_shape[0],), math.nan, dtype=t.dtype, device=t.device)}
            solver.fixed_point.check_conv_fn = self._convergence_check(solver, state)
            if x0 is None:
                x = solver(t, self.op)
            else:
                start = as_start(x0, x_shape, t.dtype)
                x = solver(t, self.op, init=(start, start.clone()))  # FISTA's (x, z) pair
        change = state["change"]
        converged = bool((change < self.tol).all())
        iterations = state["iterations"] if converged else self.max_iter
        self.last_solve = TVSolveInfo(iterations, change, converged, self.tol, self.max_iter)
        if not converged:
            reached = ("not measured (deepinv checks from the third iteration on)" if bool(change.isnan().any())
                       else f"{float(change.max()):.3g}")
            warnings.warn(f"TV (FISTA, lam={self.lam:g}) stopped at max_iter={self.max_iter} with a relative change "
                          f"of {reached} (tol={self.tol:g}); raise max_iter", ConvergenceWarning, stacklevel=2)
        return restore(x)

    def _convergence_check(self, solver, state):
        """deepinv's ``check_conv_fn`` judged per sample (every relative change below ``tol``), recording the
        changes and the iteration count in ``state``."""
        def check(it, previous, current):
            with torch.no_grad():
                x_prev = solver.get_output(previous).flatten(1)
                x = solver.get_output(current).flatten(1)
                norm = x.norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
                state["change"] = (x - x_prev).norm(dim=1) / norm
            state["iterations"] = it + 1
            return bool((state["change"] < self.tol).all())
        return check

    def lipschitz_bound(self) -> float:
        return math.inf


def tv(y, op, lam: float, *, max_iter: int = 300, tol: float = 1e-5, prox_iter: int = 20, x0=None):
    """Total-variation reconstruction; see :class:`TotalVariation` (whose :attr:`~TotalVariation.last_solve`
    reports the convergence). Torch in, torch out; numpy in, numpy out."""
    return TotalVariation(op, lam, max_iter=max_iter, tol=tol, prox_iter=prox_iter)(y, x0=x0)
