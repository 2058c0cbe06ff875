"""Stored sparse matrices: torch CSR tensors made from their parts or from scipy, and products with them that
every torch transform can go through. (Their norms are in :mod:`._norms`.)"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def csr_tensor(crow_indices: torch.Tensor, col_indices: torch.Tensor, values: torch.Tensor,
               size: tuple[int, int]) -> torch.Tensor:
    """A torch CSR tensor from its parts (torch's beta warning about sparse CSR silenced here, once)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow_indices, col_indices, values, size=size, check_invariants=False)


def to_torch_csr(matrix: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A scipy CSR matrix as a torch CSR tensor in ``dtype`` on ``device``; int32 indices where they fit (they
    halve the memory traffic of the product and are twice as fast on CPU)."""
    index = torch.int32 if matrix.nnz < 2**31 - 1 else torch.int64
    return csr_tensor(torch.from_numpy(matrix.indptr.astype(np.int64)).to(index),
                      torch.from_numpy(matrix.indices.astype(np.int64)).to(index),
                      torch.from_numpy(matrix.data).to(dtype), tuple(matrix.shape)).to(device)


class SparseProduct(torch.autograd.Function):
    """``M @ X`` for one of an operator's stored sparse matrices ``M``, with ``X`` of shape ``(columns, k)``.

    ``source._matrix(which, dtype, device)`` gives ``M`` and ``source._transposes[which]`` names its transpose.
    The derivatives are products with stored matrices too: backward is ``M^T @ G`` (this function with the
    transposed matrix, so it can be differentiated again), the forward-mode derivative is ``M @ dX``, and under
    ``torch.vmap`` the mapped axis joins the columns of ``X`` (sparse tensors have no batching rules). So
    ``torch.func.jvp``, ``vmap``, ``jacrev`` and ``jacfwd`` work through the operator.
    """

    @staticmethod
    def forward(x, source, which):
        return source._matrix(which, x.dtype, x.device) @ x

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.source, ctx.which = inputs

    @staticmethod
    def backward(ctx, grad):
        return SparseProduct.apply(grad.contiguous(), ctx.source, ctx.source._transposes[ctx.which]), None, None

    @staticmethod
    def jvp(ctx, x_dot, _source_dot, _which_dot):
        return SparseProduct.apply(x_dot, ctx.source, ctx.which)

    @staticmethod
    def vmap(info, in_dims, x, source, which):
        if in_dims[0] is None:
            return SparseProduct.apply(x, source, which), None
        stacked = x.movedim(in_dims[0], 1)  # (columns, mapped, k)
        columns, mapped, k = stacked.shape
        out = SparseProduct.apply(stacked.reshape(columns, mapped * k), source, which)
        return out.reshape(out.shape[0], mapped, k), 1


def sparse_product(source, which: str, rows: torch.Tensor) -> torch.Tensor:
    """``rows @ M.T`` for a ``(B, columns)`` batch ``rows``, through :class:`SparseProduct`."""
    return SparseProduct.apply(rows.T, source, which).T
