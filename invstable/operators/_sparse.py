"""Products with stored sparse matrices that every torch transform can go through."""

from __future__ import annotations

import torch


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
