"""Turning what a user has (a deepinv physics, a pair of callables, a matrix) into an operator."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
from deepinv.physics import LinearPhysics, Physics

from ._base import Operator, check_tensor, digest, remember, shape_tuple, state_version
from ._check import check_operator
from ._norms import matrix_norm
from ._sparse import csr_tensor, sparse_product


class MatrixOperator(Operator):
    r"""A matrix ``M`` of shape ``(m, n)`` acting on flattened images: ``A x = M vec(x)``.

    Parameters
    ----------
    matrix : torch.Tensor (dense or sparse), numpy.ndarray or scipy.sparse matrix, shape (m, n)
    in_shape : tuple of int, optional
        Shape of one image (no batch axis), with ``prod(in_shape) == n``; default ``(n,)``.

    Notes
    -----
    Images have shape ``(B, *in_shape)`` and measurements ``(B, m)``. The norm bound is exact (dense SVD, or
    ARPACK for sparse matrices) with a relative margin of 1e-9.
    """

    measurement_ndim = 2

    def __init__(self, matrix, in_shape=None, **kwargs):
        if sp.issparse(matrix):
            if not np.issubdtype(matrix.dtype, np.floating):
                raise TypeError(f"matrix has dtype {matrix.dtype}; pass a real floating-point matrix "
                                f"(e.g. M.astype(np.float64))")
            csr = sp.csr_matrix(matrix)
            parts = (torch.from_numpy(csr.indptr.astype(np.int64)), torch.from_numpy(csr.indices.astype(np.int64)),
                     torch.from_numpy(np.asarray(csr.data)))
            dense, shape = None, csr.shape
        else:
            t = matrix if isinstance(matrix, torch.Tensor) else torch.as_tensor(np.asarray(matrix))
            if t.ndim != 2:
                raise ValueError(f"a matrix operator needs a 2-D matrix (m, n), got shape {tuple(t.shape)}")
            shape = tuple(t.shape)
            if t.layout != torch.strided:
                c = t.to_sparse_csr()
                dense, parts = None, (c.crow_indices().long(), c.col_indices().long(), c.values())
            else:
                dense, parts = t, None
        probe = dense if dense is not None else parts[2]
        if not probe.is_floating_point():
            raise TypeError(f"matrix has dtype {probe.dtype}; pass a real floating-point matrix (e.g. M.astype(float))")
        check_tensor(probe, "matrix")
        m, n = shape
        in_shape = (n,) if in_shape is None else shape_tuple(in_shape)
        if math.prod(in_shape) != n:
            raise ValueError(
                f"matrix has {n} columns but in_shape {in_shape} has {math.prod(in_shape)} elements; pass the "
                f"shape of one image whose flattening has {n} entries"
            )
        super().__init__(**kwargs)
        self.in_shape = in_shape
        self.image_shape = in_shape
        self.out_size = m
        self.n_columns = n
        self.sparse = dense is None
        if dense is not None:
            self.register_buffer("matrix", dense.clone())
        else:  # CSR parts as buffers: they travel with state_dict, .to() and deepcopy
            self.register_buffer("crow_indices", parts[0].clone())
            self.register_buffer("col_indices", parts[1].clone())
            self.register_buffer("values", parts[2].clone())

    def _csr(self) -> torch.Tensor:
        return csr_tensor(self.crow_indices, self.col_indices, self.values, (self.out_size, self.n_columns))

    #: the stored matrix and its transpose (see :class:`SparseProduct`)
    _transposes = {"forward": "adjoint", "adjoint": "forward"}

    def _matrix(self, which: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The sparse matrix (``"forward"``) or its transpose (``"adjoint"``) in ``dtype`` on ``device``."""
        mat = self._csr().to(device=device, dtype=dtype)
        return mat if which == "forward" else mat.t()

    def measurement_shape(self, x_shape):
        return (x_shape[0], self.out_size)

    def norm_bound(self) -> float:
        """Exact spectral norm (dense SVD, or ARPACK for sparse matrices) with a relative margin of 1e-9."""
        return remember(self, "norm", state_version(self), lambda: matrix_norm(self._scipy_or_dense()) * (1 + 1e-9))

    def _scipy_or_dense(self):
        if not self.sparse:
            return self.matrix
        return sp.csr_matrix((self.values.double().cpu().numpy(), self.col_indices.cpu().numpy(),
                              self.crow_indices.cpu().numpy()), shape=(self.out_size, self.n_columns))

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        check_tensor(x, "x")
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this matrix operator takes (B, {', '.join(map(str, self.in_shape))})"
            )
        flat = x.flatten(1)  # (B, n), also for an empty batch
        if self.sparse:
            return sparse_product(self, "forward", flat)
        return flat @ self.matrix.to(device=x.device, dtype=x.dtype).T

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        check_tensor(y, "y")
        if y.ndim != 2 or y.shape[1] != self.out_size:
            raise ValueError(
                f"y has shape {tuple(y.shape)} but the operator produces (B, {self.out_size}); pass measurements "
                f"with a batch axis and {self.out_size} entries each"
            )
        out = sparse_product(self, "adjoint", y) if self.sparse else y @ self.matrix.to(device=y.device, dtype=y.dtype)
        return out.reshape(y.shape[0], *self.in_shape)

    def _repr_params(self) -> dict:
        stored = [self.matrix] if not self.sparse else [self.values, self.col_indices, self.crow_indices]
        return {"shape": (self.out_size, self.n_columns), "in_shape": self.in_shape, "sparse": self.sparse,
                "digest": digest(torch.cat([t.detach().double().cpu().reshape(-1) for t in stored]))}


class CallableOperator(Operator):
    """An operator from a pair of callables ``(forward, adjoint)`` acting on ``(B, *in_shape)`` tensors.

    The pair is checked for adjointness when the operator is built (see :func:`check_operator`); a pair that
    is not adjoint raises :class:`AdjointMismatchError`.
    """

    def __init__(self, forward: Callable, adjoint: Callable, in_shape, *, tol: float | None = None,
                 check: bool = True, **kwargs):
        if not callable(forward) or not callable(adjoint):
            raise TypeError(
                f"forward and adjoint must be callables, got {type(forward).__name__} and {type(adjoint).__name__}"
            )
        super().__init__(**kwargs)
        self._forward = forward
        self._adjoint = adjoint
        self.in_shape = shape_tuple(in_shape)
        self.image_shape = self.in_shape
        if check:
            check_operator(self, self.in_shape, tol=tol)

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self._forward(x)

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        return self._adjoint(y)

    def _repr_params(self) -> dict:
        def name(f):
            return getattr(f, "__qualname__", None) or type(f).__name__
        return {"forward": name(self._forward), "adjoint": name(self._adjoint), "in_shape": self.in_shape}



def as_operator(obj, *, in_shape=None) -> LinearPhysics:
    """Turn what a user has into an operator that invstable (and deepinv) can use.

    Parameters
    ----------
    obj : deepinv.physics.LinearPhysics, (callable, callable), or a 2-D matrix
        A deepinv linear physics is returned as it is. A pair ``(forward, adjoint)`` of callables on
        ``(B, *in_shape)`` tensors becomes a :class:`CallableOperator` (its adjointness is checked). A matrix
        (torch dense or sparse, numpy, scipy.sparse) of shape ``(m, n)`` becomes a :class:`MatrixOperator`
        acting on flattened images.
    in_shape : tuple of int, optional
        Shape of one image, without batch axis: required for callables, optional for a matrix.

    Returns
    -------
    deepinv.physics.LinearPhysics

    Raises
    ------
    TypeError
        For a non-linear physics or anything else that is not one of the above.
    AdjointMismatchError
        For a callable pair that is not adjoint.

    Examples
    --------
    >>> import numpy as np
    >>> op = as_operator(np.eye(4), in_shape=(2, 2))
    >>> op.A(__import__("torch").ones(1, 2, 2)).shape
    torch.Size([1, 4])
    """
    if isinstance(obj, LinearPhysics):
        return obj
    if isinstance(obj, Physics):
        raise TypeError(
            f"{type(obj).__name__} is a non-linear deepinv Physics; invstable certifies reconstructions for linear "
            f"operators only (deepinv.physics.LinearPhysics)"
        )
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(callable(f) for f in obj):
        if in_shape is None:
            raise ValueError(
                "a (forward, adjoint) pair needs in_shape, the shape of one image without batch axis, "
                "e.g. as_operator((fwd, adj), in_shape=(1, 64, 64))"
            )
        return CallableOperator(obj[0], obj[1], in_shape)
    if sp.issparse(obj) or isinstance(obj, (torch.Tensor, np.ndarray)):
        return MatrixOperator(obj, in_shape)
    raise TypeError(
        f"cannot make an operator from {type(obj).__name__}; pass a deepinv LinearPhysics, a pair of callables "
        f"(forward, adjoint) with in_shape, or a 2-D matrix (torch, numpy or scipy.sparse)"
    )
