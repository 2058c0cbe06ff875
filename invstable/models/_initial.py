"""A certified linear first guess: the Tikhonov filter approximated by a Chebyshev polynomial in A^T A."""

from __future__ import annotations

import numpy as np
import torch

#: grid points used to certify the norm of the polynomial filter (see :func:`filter_norm_bound`)
GRID = 400_001


def chebyshev_coefficients(alpha: float, degree: int, top: float) -> np.ndarray:
    """Chebyshev interpolant of ``1 / (lambda + alpha)`` on ``[0, top]`` (``degree + 1`` nodes), first term halved."""
    n = degree + 1
    theta = np.pi * (np.arange(n) + 0.5) / n
    lam = 0.5 * top * (1 + np.cos(theta))
    values = 1.0 / (lam + alpha)
    coef = 2.0 / n * np.cos(np.outer(np.arange(n), theta)) @ values
    coef[0] /= 2
    return coef


def filter_norm_bound(coef: np.ndarray, top: float, norm_a: float) -> float:
    r"""Certified ``max_{0 <= s <= ||A||} |s p(s^2)|``, an upper bound on ``||p(A^T A) A^T||``.

    ``g(s) = s p(s^2)`` is a polynomial of degree ``n = 2 deg(p) + 1``. On a uniform grid of spacing
    ``delta`` every point lies within ``delta / 2`` of a node and Markov's inequality gives
    ``max |g'| <= 2 n^2 / ||A|| max |g|``, so ``max |g| <= max_grid |g| / (1 - delta n^2 / ||A||)``.
    """
    n = 2 * (len(coef) - 1) + 1
    s = np.linspace(0.0, norm_a, GRID)
    g = s * np.polynomial.chebyshev.chebval(2 * s ** 2 / top - 1, coef)
    slack = n ** 2 / (GRID - 1)
    if slack >= 0.5:
        raise ValueError(f"degree {len(coef) - 1} is too high for the certification grid ({GRID} points)")
    return float(np.abs(g).max() / (1 - slack))


def apply_filter(op, y: torch.Tensor, coef, top: float) -> torch.Tensor:
    """``p(A^T A) A^T y`` by Clenshaw's recurrence (``deg p`` applications of ``A^T A``).

    ``coef`` holds the Chebyshev coefficients of ``p`` on ``[0, top]``: a NumPy array (a fixed filter) or a
    tensor (a learned one; the result is differentiable in it)."""
    if not isinstance(coef, torch.Tensor):
        coef = [float(c) for c in coef]
    v = op.A_adjoint(y)

    def t(u):  # the map A^T A rescaled from [0, top] to [-1, 1]
        return (2.0 / top) * op.A_adjoint(op.A(u)) - u

    b1 = torch.zeros_like(v)
    b2 = torch.zeros_like(v)
    for i in range(len(coef) - 1, 0, -1):  # (torch tensors take no negative slice steps)
        c = coef[i]
        b1, b2 = c * v + 2 * t(b1) - b2, b1
    return coef[0] * v + t(b1) - b2


def chebyshev_basis(op, y: torch.Tensor, degree: int, top: float) -> torch.Tensor:
    """``T_j(2 A^T A / top - I) A^T y`` for ``j = 0..degree``, stacked on a new first axis.

    A first guess ``p(A^T A) A^T y`` with Chebyshev coefficients ``c`` is then ``sum_j c_j basis[j]``: when only
    the coefficients are learned, the basis (``degree`` applications of ``A^T A``) is computed once per batch
    without autograd and the filter costs one weighted sum.
    """
    v = op.A_adjoint(y)
    out = [v]
    if degree >= 1:
        out.append((2.0 / top) * op.A_adjoint(op.A(v)) - v)
    for _ in range(2, degree + 1):
        u = out[-1]
        out.append(2 * ((2.0 / top) * op.A_adjoint(op.A(u)) - u) - out[-2])
    return torch.stack(out)


def combine_basis(basis: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``sum_j coef[j] basis[j]`` (differentiable in ``coef``)."""
    return torch.tensordot(coef.to(basis.dtype), basis, dims=1)
