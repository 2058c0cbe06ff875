r"""Choosing the Tikhonov weight :math:`\alpha` from the data: Morozov's discrepancy principle and generalised
cross-validation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..operators import Operator
from ._io import as_measurement
from ._tikhonov import Tikhonov, _fft_symbols, regularizer_operator

RULES = ("discrepancy", "gcv")


def _residual_norms(solver: Tikhonov, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (solver.op.A(x) - y).flatten(1).norm(dim=1)


def choose_alpha(y, op, *, noise_level=None, rule: str = "discrepancy", regularizer="identity", tau: float = 1.0,
                 alpha_range: tuple[float, float] = (1e-7, 1e2), tol: float = 1e-6, max_iter: int = 500,
                 n_probes: int = 8, grid: int = 25, rng: torch.Generator | int | None = None):
    r"""Choose the Tikhonov weight from the measurements, one per sample.

    Parameters
    ----------
    y : torch.Tensor or numpy.ndarray
        Measurements (as for :func:`invstable.tikhonov`).
    op : deepinv.physics.LinearPhysics
    noise_level : float or array of shape (B,)
        Standard deviation :math:`\sigma` of the white Gaussian noise per measurement entry; required by the
        discrepancy principle.
    rule : {"discrepancy", "gcv"}
    regularizer : {"identity", "gradient"} or LinearPhysics
    tau : float, default 1.0
        Safety factor of the discrepancy principle.
    alpha_range : (float, float)
        Search interval.
    tol, max_iter : CG settings of the inner Tikhonov solves.
    n_probes : int, default 8
        Rademacher probes of the randomised trace estimate (GCV on non-FFT operators).
    grid : int, default 25
        Log-spaced grid points of the GCV search (refined by a parabola in log alpha).
    rng : torch.Generator or int, optional
        Randomness of the GCV probes.

    Returns
    -------
    alpha : torch.Tensor of shape (B,) for torch input; a numpy array of shape (B,) (a float for an unbatched
        numpy measurement) for numpy input.

    Notes
    -----
    *Discrepancy principle* (Morozov 1966): the residual :math:`\|A x_\alpha - y\|` increases with
    :math:`\alpha`; pick the :math:`\alpha` where it equals :math:`\tau \sigma \sqrt{m}` (``m`` entries per
    measurement), by bisection in :math:`\log\alpha` with warm-started CG.

    *GCV* (Golub, Heath & Wahba 1979): minimise
    :math:`G(\alpha) = m \|A x_\alpha - y\|^2 / \operatorname{tr}(I - A R_\alpha)^2`, with the trace exact in
    Fourier for circular convolutions and estimated with Hutchinson's estimator
    :math:`\operatorname{tr}(A R_\alpha) \approx \frac1p \sum_j z_j^T A R_\alpha z_j` otherwise.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if rule == "discrepancy" and noise_level is None:
        raise ValueError("the discrepancy principle needs noise_level, the standard deviation of the noise; "
                         "without it use rule='gcv'")
    if not (tau > 0) or isinstance(n_probes, bool) or not isinstance(n_probes, int) or n_probes < 1 \
            or isinstance(grid, bool) or not isinstance(grid, int) or grid < 3:
        raise ValueError(f"need tau > 0, n_probes >= 1 and grid >= 3, got tau={tau!r}, n_probes={n_probes!r}, "
                         f"grid={grid!r}")
    lo, hi = (float(v) for v in alpha_range)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"alpha_range must be (low, high) with 0 < low < high, got {alpha_range!r}")
    t, _ = as_measurement(y, op)
    batch = t.shape[0]
    with torch.no_grad():
        if batch == 0:  # nothing to choose for an empty batch (GCV would still solve for its trace probes)
            alpha = t.new_zeros(0)
        elif rule == "discrepancy":
            alpha = _discrepancy(t, op, noise_level, regularizer, tau, lo, hi, tol, max_iter)
        else:
            alpha = _gcv(t, op, regularizer, lo, hi, tol, max_iter, n_probes, grid, rng)
    if isinstance(y, np.ndarray):
        out = alpha.cpu().numpy()
        unbatched = isinstance(op, Operator) and op.measurement_ndim is not None and y.ndim < op.measurement_ndim
        return float(out[0]) if unbatched and batch == 1 else out
    return alpha


def _discrepancy(t, op, noise_level, regularizer, tau, lo, hi, tol, max_iter):
    try:
        sigma = torch.as_tensor(np.asarray(noise_level.detach().cpu() if isinstance(noise_level, torch.Tensor)
                                           else noise_level, dtype=np.float64)).to(t.device, torch.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"noise_level must be a real number >= 0 or one per sample ({t.shape[0]}), got "
                         f"{noise_level!r}") from None
    if sigma.numel() not in (1, t.shape[0]) or not bool(torch.isfinite(sigma).all()) or not bool((sigma >= 0).all()):
        raise ValueError(f"noise_level must be >= 0, one value or one per sample ({t.shape[0]}), got {noise_level!r}")
    m = math.prod(t.shape[1:])  # entries per measurement (also for an empty batch)
    target = (tau * sigma * math.sqrt(m)).expand(t.shape[0]).to(t.dtype)
    batch = t.shape[0]

    def residual(alpha, x0=None):
        solver = Tikhonov(op, alpha, regularizer=regularizer, tol=tol, max_iter=max_iter)
        x, _ = solver.solve(t, x0=x0)
        return _residual_norms(solver, t, x), x

    low = torch.full((batch,), lo, dtype=t.dtype, device=t.device)
    high = torch.full((batch,), hi, dtype=t.dtype, device=t.device)
    r_high, _ = residual(high)
    r_low, x = residual(low)
    too_noisy = r_high < target
    too_clean = r_low > target
    if bool(too_noisy.any()):
        warnings.warn(f"discrepancy principle: for {int(too_noisy.sum())} sample(s) even alpha={hi:g} fits the data "
                      f"below tau * noise_level * sqrt(m); returning alpha={hi:g} (is noise_level too large?)",
                      RuntimeWarning, stacklevel=3)
    if bool(too_clean.any()):
        warnings.warn(f"discrepancy principle: for {int(too_clean.sum())} sample(s) the residual at alpha={lo:g} is "
                      f"above the target; returning alpha={lo:g} (is noise_level too small?)",
                      RuntimeWarning, stacklevel=3)
    # bisection in log(alpha) until the bracket is within 1 %
    while bool((high / low > 1.01).any()):
        mid = (low * high).sqrt()
        r_mid, x = residual(mid, x0=x)
        above = r_mid > target
        high = torch.where(above, mid, high)
        low = torch.where(above, low, mid)
    alpha = (low * high).sqrt()
    alpha = torch.where(too_noisy, torch.full_like(alpha, hi), alpha)
    return torch.where(too_clean & ~too_noisy, torch.full_like(alpha, lo), alpha)


def _gcv(t, op, regularizer, lo, hi, tol, max_iter, n_probes, grid, rng):
    reg = regularizer_operator(regularizer)
    m = math.prod(t.shape[1:])
    x_like = op.A_adjoint(t)
    symbols = _fft_symbols(op, reg, x_like.shape[-2:], torch.float64, t.device)
    generator = rng if isinstance(rng, torch.Generator) else torch.Generator().manual_seed(0 if rng is None else int(rng))
    probes = None
    if symbols is None:
        probes = (torch.randint(0, 2, (n_probes, *t.shape[1:]), generator=generator) * 2 - 1).to(t.device, t.dtype)

    def trace_influence(alpha: float) -> float:
        """tr(A R_alpha) for one measurement."""
        if symbols is not None:
            k_hat, l_sq = symbols
            k_sq = k_hat.abs() ** 2
            channels = m // k_sq.numel()
            return float((k_sq / (k_sq + alpha * l_sq)).sum()) * channels
        solver = Tikhonov(op, alpha, regularizer=reg, tol=tol, max_iter=max_iter)
        x, _ = solver.solve(probes)
        return float((probes * op.A(x)).sum()) / n_probes

    log_grid = np.linspace(math.log(lo), math.log(hi), grid)
    scores = []
    x = None
    for la in log_grid:
        solver = Tikhonov(op, math.exp(la), regularizer=reg, tol=tol, max_iter=max_iter)
        x, _ = solver.solve(t, x0=x)
        res = _residual_norms(solver, t, x) ** 2
        denom = (m - trace_influence(math.exp(la))) ** 2
        scores.append(m * res / max(denom, 1e-300))
    scores = torch.stack(scores, dim=1).cpu().double().numpy()  # (B, grid)
    chosen = []
    for row in scores:
        i = int(np.argmin(row))
        la = log_grid[i]
        if 0 < i < grid - 1:  # vertex of the parabola through the three points around the minimum
            f0, f1, f2 = np.log(row[i - 1 : i + 2])
            curvature = f0 - 2 * f1 + f2
            if curvature > 0:
                la = log_grid[i] + 0.5 * (log_grid[1] - log_grid[0]) * (f0 - f2) / curvature
        chosen.append(math.exp(la))
    return torch.tensor(chosen, dtype=t.dtype, device=t.device)
