r"""Spectral norms, in one place: power iteration on an operator, Lanczos on a symmetric map, and the exact norm
of a stored (dense or sparse) matrix.

Everything the operators and the baselines measure of a norm goes through here; what is measured on an
operator is remembered by :func:`invstable.operators._base.remember`, beside the operator and never in it.
(The warm-started power iteration on layer weights during training is another thing: it lives with the layers,
in :mod:`invstable.nn`.)
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from ._base import device_of, require_operator

#: default relative safety margin on a power-iteration estimate of ||A|| (power iteration approaches the
#: norm from below; the margin turns a converged estimate into an upper bound in practice)
POWER_MARGIN = 0.01

#: tolerance of ARPACK (Lanczos) on the largest singular value of a sparse matrix
SPARSE_TOL = 1e-12


def as_double(t: torch.Tensor) -> torch.Tensor:
    """``t`` in double precision (complex128 for a complex tensor)."""
    return t.to(torch.complex128 if t.is_complex() else torch.float64)


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The real inner product ``Re <a, b>``, summed in double precision whatever the dtypes of ``a`` and ``b``."""
    a, b = as_double(a), as_double(b)
    return (a.conj() * b).real.sum() if a.is_complex() or b.is_complex() else (a * b).sum()


def power_norm(op, in_shape, *, max_iter: int = 500, rtol: float = 1e-6, dtype=torch.float64,
               generator: torch.Generator | None = None) -> tuple[float, int, bool]:
    r"""Power iteration on ``A^T A``.

    Parameters
    ----------
    op : deepinv.physics.LinearPhysics
    in_shape : tuple of int
        Shape of one image, without batch axis.
    max_iter : int, default 500
    rtol : float, default 1e-6
        Stop when the residual :math:`\|A^T A v - \lambda v\|` is below ``rtol`` :math:`\lambda` (a change of the
        estimate alone can stall on a plateau well below the norm).
    dtype : torch.dtype, default float64
    generator : torch.Generator, optional
        Randomness of the start.

    Returns
    -------
    estimate : float
        Of ``||A||_2``: a lower bound.
    iterations : int
    converged : bool
        Whether the residual criterion was met.
    """
    require_operator(op)
    device = device_of(op)
    v = torch.randn((1, *in_shape), dtype=dtype, generator=generator).to(device)
    v = v / v.norm()
    lam, it = 0.0, 0
    with torch.no_grad():
        for it in range(1, max_iter + 1):
            w = op.A_adjoint(op.A(v))
            lam = float(inner(v, w))
            norm_w = float(w.norm())
            if norm_w == 0.0:
                return 0.0, it, True
            if float((w - lam * v).norm()) <= rtol * max(lam, 1e-300):
                return math.sqrt(max(lam, 0.0)), it, True
            v = w / norm_w
    return math.sqrt(max(lam, 0.0)), it, False


def largest_eigenvalue(matvec, size: int, *, max_iter: int = 100, rtol: float = 1e-8, seed: int = 0) -> float:
    """Largest eigenvalue of a symmetric positive semi-definite map ``matvec`` on vectors of ``size`` (numpy
    float64), by Lanczos with full reorthogonalisation.

    Returns the largest Ritz value: a lower bound, within ``rtol`` of an eigenvalue when the iteration stops on
    the residual criterion, and the best estimate reached after ``max_iter`` steps otherwise.

    References
    ----------
    B. N. Parlett, *The Symmetric Eigenvalue Problem*, SIAM, 1998, ch. 13 (the residual bound of a Ritz value).
    """
    q = np.random.default_rng(seed).standard_normal(size)
    basis = [q / np.linalg.norm(q)]
    alphas, betas = [], []
    previous = 0.0
    for _ in range(min(max_iter, size)):
        w = matvec(basis[-1])
        alphas.append(float(basis[-1] @ w))
        for b in basis:  # full reorthogonalisation (twice is enough)
            w -= (b @ w) * b
        for b in basis:
            w -= (b @ w) * b
        tri = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        values, vectors = np.linalg.eigh(tri)
        ritz = float(values[-1])
        beta = float(np.linalg.norm(w))
        # beta |s_k| bounds the distance from the Ritz value to an eigenvalue
        if beta * abs(vectors[-1, -1]) <= rtol * abs(ritz) or beta <= 1e-14 * max(abs(ritz), 1e-300):
            return ritz
        previous = ritz
        betas.append(beta)
        basis.append(w / beta)
    return previous


def matrix_norm(matrix) -> float:
    """Largest singular value of a stored matrix: exact (SVD, in float64) for a dense torch or numpy matrix and
    for a small sparse one, Lanczos (ARPACK, tolerance :data:`SPARSE_TOL`, a fixed start) for a scipy sparse one.

    Examples
    --------
    >>> round(matrix_norm(np.diag([3.0, -4.0])), 12)
    4.0
    """
    if sp.issparse(matrix):
        csr = sp.csr_matrix(matrix, dtype=np.float64)
        if csr.nnz == 0:
            return 0.0
        if min(csr.shape) <= 2:
            return float(np.linalg.norm(csr.toarray(), 2))
        v0 = np.random.default_rng(0).standard_normal(min(csr.shape))
        return float(spla.svds(csr, k=1, tol=SPARSE_TOL, return_singular_vectors=False, v0=v0)[0])
    dense = matrix.detach().cpu().double() if isinstance(matrix, torch.Tensor) else torch.as_tensor(
        np.asarray(matrix, dtype=np.float64))
    if dense.numel() == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(dense, ord=2))
