"""Finite-difference gradient of images: the regularizer ``L`` of gradient Tikhonov."""

from __future__ import annotations

import math

import torch

from ._base import Operator, check_tensor

_BOUNDARIES = ("circular", "neumann")


def _diff(x: torch.Tensor, dim: int, boundary: str) -> torch.Tensor:
    if boundary == "circular":
        return torch.roll(x, -1, dims=dim) - x
    d = torch.zeros_like(x)
    n = x.shape[dim]
    d.narrow(dim, 0, n - 1).copy_(x.narrow(dim, 1, n - 1) - x.narrow(dim, 0, n - 1))
    return d


def _diff_adjoint(d: torch.Tensor, dim: int, boundary: str) -> torch.Tensor:
    if boundary == "circular":
        return torch.roll(d, 1, dims=dim) - d
    n = d.shape[dim]
    inner = d.narrow(dim, 0, n - 1)  # the last difference is identically zero: its input is ignored
    out = torch.zeros_like(d)
    out.narrow(dim, 1, n - 1).add_(inner)
    out.narrow(dim, 0, n - 1).sub_(inner)
    return out


class Gradient(Operator):
    r"""Forward differences along the two image axes: ``(B, C, H, W) -> (B, C, 2, H, W)``.

    Parameters
    ----------
    boundary : {"circular", "neumann"}
        ``"circular"`` wraps around (diagonalised by the FFT, as a circular blur is); ``"neumann"`` sets the
        difference across the last row and column to zero.

    Notes
    -----
    :math:`(Lx)_{0,i,j} = x_{i+1,j} - x_{i,j}` and :math:`(Lx)_{1,i,j} = x_{i,j+1} - x_{i,j}`;
    :math:`\|L\|^2 \le 8` for either boundary.
    """

    name = "gradient"
    measurement_ndim = 5
    image_shape = None  # images of any size

    def __init__(self, *, boundary: str = "circular", **kwargs):
        if boundary not in _BOUNDARIES:
            raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
        super().__init__(**kwargs)
        self.boundary = boundary

    def config(self) -> dict:
        return {"name": self.name, "params": {"boundary": self.boundary}}

    def norm_bound(self) -> float:
        return math.sqrt(8.0)

    def measurement_shape(self, x_shape):
        return (*x_shape[:-2], 2, *x_shape[-2:])

    def transfer_function_sq(self, shape: tuple[int, int], *, dtype=torch.float64, device=None) -> torch.Tensor:
        """``|L^(w)|^2`` on the ``H x W`` FFT grid (circular boundary only)."""
        h, w = shape
        fh = torch.fft.fftfreq(h, dtype=dtype, device=device)
        fw = torch.fft.fftfreq(w, dtype=dtype, device=device)
        return (4 * torch.sin(math.pi * fh) ** 2)[:, None] + (4 * torch.sin(math.pi * fw) ** 2)[None, :]

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        check_tensor(x, "x")
        if x.ndim < 3:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; the gradient takes batched images (B, H, W) or (B, C, H, W). "
                f"For a matrix operator, pass in_shape=(1, H, W) so that its images have spatial axes"
            )
        return torch.stack([_diff(x, -2, self.boundary), _diff(x, -1, self.boundary)], dim=-3)

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        check_tensor(y, "y")
        if y.ndim < 4 or y.shape[-3] != 2:
            raise ValueError(f"y has shape {tuple(y.shape)}; the gradient's adjoint takes (B, [C,] 2, H, W)")
        # Adjoint of the stack along -3 of two differences; axis -2 of y[..., k, :, :] is image axis -2.
        return _diff_adjoint(y[..., 0, :, :], -2, self.boundary) + _diff_adjoint(y[..., 1, :, :], -1, self.boundary)
