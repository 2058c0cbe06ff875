r"""Total-variation reconstruction :math:`\min_x \tfrac12\|Ax - y\|^2 + \lambda \|\nabla x\|_{1,2}`, with deepinv's
TV prior and its accelerated proximal-gradient (FISTA) solver."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from deepinv.optim import TVPrior, optim_builder
from deepinv.optim.data_fidelity import L2
from deepinv.physics import LinearPhysics

from ..operators import norm_bound
from ._io import as_measurement, as_start


class TotalVariation:
    r"""TV reconstructor: FISTA on :math:`\tfrac12\|Ax - y\|^2 + \lambda\,\mathrm{TV}(x)` (isotropic TV).

    Parameters
    ----------
    op : deepinv.physics.LinearPhysics
    lam : float
        TV weight :math:`\lambda > 0`.
    max_iter : int, default 300
        FISTA iterations (it stops earlier when the relative change of ``x`` is below ``tol``).
    tol : float, default 1e-5
    prox_iter : int, default 20
        Iterations of deepinv's TV denoiser (the proximal map of TV), warm-started across FISTA steps.

    Notes
    -----
    The step size is :math:`1 / \|A\|^2` from :func:`invstable.operators.norm_bound`. The solver is
    deepinv's (``optim_builder("FISTA")`` with ``TVPrior``); invstable only wraps it in the calling
    convention of its baselines. TV is not linear and has no certified Lipschitz constant:
    :meth:`lipschitz_bound` returns ``inf``.

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
        self.op, self.lam, self.max_iter, self.tol, self.prox_iter = op, float(lam), max_iter, tol, prox_iter

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
                return restore(t.new_zeros(x_shape))
            step = 1.0 / norm_bound(self.op, x_shape[1:]) ** 2
            solver = optim_builder(
                iteration="FISTA", prior=TVPrior(n_it_max=self.prox_iter), data_fidelity=L2(),
                params_algo={"stepsize": step, "lambda": self.lam, "a": 3}, max_iter=self.max_iter,
                early_stop=True, crit_conv="residual", thres_conv=self.tol,
                **({"unfold": True, "trainable_params": []} if torch.is_grad_enabled() else {}),
            )
            if x0 is None:
                x = solver(t, self.op)
            else:
                start = as_start(x0, x_shape, t.dtype)
                x = solver(t, self.op, init=(start, start.clone()))  # FISTA's (x, z) pair
        return restore(x)

    def lipschitz_bound(self) -> float:
        return math.inf


def tv(y, op, lam: float, *, max_iter: int = 300, tol: float = 1e-5, prox_iter: int = 20, x0=None):
    """Total-variation reconstruction; see :class:`TotalVariation`. Torch in, torch out; numpy in, numpy out."""
    return TotalVariation(op, lam, max_iter=max_iter, tol=tol, prox_iter=prox_iter)(y, x0=x0)
