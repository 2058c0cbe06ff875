r"""Convex ridge regulariser :math:`R(x) = \sum_{i,k} \psi_i((W x)_{i,k})` and its gradient :math:`W^\top \sigma(W x)`.

The gradient is the residual of the gradient-flow layer (:class:`invstable.nn.GradientFlowLayer`): a linear map
``W``, a monotone 1-Lipschitz activation applied pointwise, the adjoint ``W^T``. Here the activation is learned
(a linear spline whose slopes are kept in [0, 1]) and ``W`` is a multi-channel convolution, so that ``R`` is a
convex potential whose gradient has a certified Lipschitz constant.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._spectral import conv_operator_norm

__all__ = ["MonotoneSpline", "ConvexRidgeRegularizer"]


class MonotoneSpline(nn.Module):
    r"""Learned linear splines :math:`\sigma_i`, one per channel, with slopes in [0, 1] and :math:`\sigma_i(0) = 0`.

    Each :math:`\sigma_i` is continuous and piecewise linear on ``knots`` uniform knots in ``[-span, span]``,
    extended linearly with its end slopes; the slopes are projected onto [0, 1] in every evaluation, so each
    :math:`\sigma_i` is monotone and 1-Lipschitz whatever the raw parameters are. It is then the derivative of
    the convex, piecewise quadratic :math:`\psi_i(t) = \int_0^t \sigma_i`.

    Parameters
    ----------
    channels : int
    knots : int, default 41
        Odd (0 is a knot).
    span : float, default 1.0
    threshold : float, default 0.1
        Initial shape: slope 1 on ``[-threshold, threshold]`` and 0 outside (a clipping, the derivative of a
        Huber function: quadratic for small responses, linear for large ones such as edges).
    """

    def __init__(self, channels: int, *, knots: int = 41, span: float = 1.0, threshold: float = 0.1,
                 dtype: torch.dtype | None = None, device=None) -> None:
        super().__init__()
        if isinstance(knots, bool) or not isinstance(knots, int) or knots < 3 or knots % 2 == 0:
            raise ValueError(f"knots must be an odd int >= 3 (0 is a knot), got {knots!r}")
        if not (isinstance(span, (int, float)) and math.isfinite(span) and span > 0):
            raise ValueError(f"span must be a finite number > 0, got {span!r}")
        self.channels, self.knots, self.span = int(channels), knots, float(span)
        self.delta = 2.0 * self.span / (knots - 1)
        centres = (torch.arange(knots - 1, dtype=torch.float64) + 0.5) * self.delta - self.span
        init = (centres.abs() < threshold).to(dtype or torch.get_default_dtype())
        self.raw_slopes = nn.Parameter(init.repeat(channels, 1).to(device))

    def slopes(self) -> torch.Tensor:
        """Slopes of the ``knots - 1`` pieces of each channel, in [0, 1]: shape (channels, knots - 1)."""
        return self.raw_slopes.clamp(0.0, 1.0)

    def _tables(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V, S)``, both (channels, knots): the values at the knots (zero at t = 0) and the rise of each piece
        over one knot spacing (``slope * delta``; the last column, past the last piece, is 0 and never used)."""
        cum = torch.cat([torch.zeros_like(s[:, :1]), torch.cumsum(s, dim=1) * self.delta], dim=1)
        values = cum - cum[:, (self.knots - 1) // 2:(self.knots + 1) // 2]
        return values, F.pad(s * self.delta, (0, 1))

    def _locate(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The flat index (channel, piece) into a (channels, knots) table and the position ``frac`` in the piece
        in units of the spacing (in [0, 1] inside the knots; beyond them the end pieces extend linearly).
        Without autograd the arithmetic is done in place (solvers: the spline is their bottleneck)."""
        c = t.shape[1]
        u = (t + self.span).mul_(1.0 / self.delta)
        idx = torch.floor(u.detach()).clamp_(0, self.knots - 2)
        offset = (torch.arange(c, device=t.device) * self.knots).view(1, c, *([1] * (t.dim() - 2)))
        frac = u.sub_(idx) if not torch.is_grad_enabled() else u - idx
        return idx.long().add_(offset), frac

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma_i(t)` for ``t`` of shape (B, channels, ...)."""
        values, rise = self._tables(self.slopes())
        flat, frac = self._locate(t)
        if not torch.is_grad_enabled():
            return torch.take(values, flat).addcmul_(torch.take(rise, flat), frac)
        return _SplineEval.apply(frac, flat, values, rise)

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma_i'(t)` in [0, 1] (the slope of the piece ``t`` lies in; right derivative at knots)."""
        flat, _ = self._locate(t.detach())
        return torch.take(F.pad(self.slopes(), (0, 1)), flat)

    def potential(self, t: torch.Tensor) -> torch.Tensor:
        """:math:`\\psi_i(t) = \\int_0^t \\sigma_i`, convex and piecewise quadratic (same shape as ``t``)."""
        values, rise = self._tables(self.slopes())
        # psi at the knots: trapezoids of the linear pieces, zero at t = 0
        areas = 0.5 * (values[:, 1:] + values[:, :-1]) * self.delta
        cum = torch.cat([torch.zeros_like(areas[:, :1]), torch.cumsum(areas, dim=1)], dim=1)
        knot_psi = cum - cum[:, (self.knots - 1) // 2:(self.knots + 1) // 2]
        flat, frac = self._locate(t)
        u = frac * self.delta
        return (torch.take(knot_psi, flat) + torch.take(values, flat) * u
                + 0.5 * torch.take(rise, flat) / self.delta * u * u)

    def max_slope(self) -> float:
        """Largest slope (the Lipschitz constant of the activations), a float in [0, 1]."""
        return float(self.slopes().detach().max().item())

    def extra_repr(self) -> str:
        return f"channels={self.channels}, knots={self.knots}, span={self.span}"


class _SplineEval(torch.autograd.Function):
    """``V[flat] + S[flat] * frac`` with a backward that sums per table entry by ``bincount`` (the generic
    backward of indexing, ``index_put`` with accumulation, is several times slower on a CPU)."""

    @staticmethod
    def forward(ctx, frac, flat, values, rise):
        ctx.save_for_backward(frac, flat, rise)
        ctx.table = (values.numel(), values.shape)
        return torch.take(values, flat).addcmul_(torch.take(rise, flat), frac)

    @staticmethod
    def backward(ctx, g):
        frac, flat, rise = ctx.saved_tensors
        n, shape = ctx.table
        grad_frac = g * torch.take(rise, flat) if ctx.needs_input_grad[0] else None
        grad_values = grad_rise = None
        if ctx.needs_input_grad[2]:
            grad_values = torch.bincount(flat.reshape(-1), weights=g.reshape(-1), minlength=n).to(g.dtype).reshape(shape)
        if ctx.needs_input_grad[3]:
            grad_rise = torch.bincount(flat.reshape(-1), weights=(g * frac).reshape(-1),
                                       minlength=n).to(g.dtype).reshape(shape)
        return grad_frac, None, grad_values, grad_rise


def _check_channels(channels) -> tuple[int, ...]:
    try:
        out = tuple(channels)
    except TypeError:
        raise TypeError(f"channels must be a sequence of ints such as (1, 8, 32), got {channels!r}") from None
    if len(out) < 2 or out[0] != 1 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in out):
        raise ValueError(f"channels must start at 1 (grayscale images) and list positive ints, e.g. (1, 8, 32); "
                         f"got {channels!r}")
    return out


class ConvexRidgeRegularizer(nn.Module):
    r"""A learned convex regulariser :math:`R(x) = \sum_{i,k} \psi_i((W x)_{i,k})` with a certified smoothness.

    ``W`` is the composition of ``len(channels) - 1`` convolutions (``channels[0] = 1`` image channel to
    ``channels[-1]`` ridge channels, each ``kernel_size x kernel_size``), applied as one "valid" convolution with
    the composed kernel (no padding: the boundary is neither penalised nor wrapped); the filters of the first
    convolution have zero mean, so ``R`` does not see constant images. :math:`\psi_i' = \sigma_i` are
    :class:`MonotoneSpline` activations. With the scale :math:`\mu > 0` the regulariser used is

    .. math::

        R_\mu(x) = \mu^{-2} R(\mu x), \qquad \nabla R_\mu(x) = \mu^{-1} W^\top \sigma(\mu W x),

    convex for every :math:`\mu`, with :math:`\nabla R_\mu` monotone and :math:`s\|W\|^2`-Lipschitz
    (``s`` the largest spline slope, at most 1).

    Parameters
    ----------
    channels : sequence of int, default (1, 8, 32)
    kernel_size : int, default 5
    knots, span : see :class:`MonotoneSpline`
    rng : torch.Generator, optional
        For the initial filters.
    """

    def __init__(self, channels=(1, 8, 32), *, kernel_size: int = 5, knots: int = 41, span: float = 1.0,
                 rng: torch.Generator | None = None, dtype: torch.dtype | None = None, device=None) -> None:
        super().__init__()
        self.channels = _check_channels(channels)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
        self.kernel_size = kernel_size
        dtype = dtype or torch.get_default_dtype()
        self.kernels = nn.ParameterList()
        for c_in, c_out in zip(self.channels[:-1], self.channels[1:]):
            w = torch.randn(c_out, c_in, kernel_size, kernel_size, generator=rng, dtype=torch.float64)
            w = w / math.sqrt(c_in * kernel_size**2)
            self.kernels.append(nn.Parameter(w.to(dtype=dtype, device=device)))
        self.activation = MonotoneSpline(self.channels[-1], knots=knots, span=span, dtype=dtype, device=device)
        with torch.no_grad():  # start with ||W|| = 1 at the size of a 40 x 40 patch
            k = self.kernel()
            norm = conv_operator_norm(k, (40, 40), padding_mode="circular")
            factor = norm ** (-1.0 / len(self.kernels))
            for p in self.kernels:
                p.mul_(factor)

    @property
    def support(self) -> int:
        """Side of the composed kernel: ``(kernel_size - 1) * depth + 1``."""
        return (self.kernel_size - 1) * len(self.kernels) + 1

    def kernel(self) -> torch.Tensor:
        """The composed kernel of ``W``: shape (channels[-1], 1, support, support), zero mean per filter."""
        first = self.kernels[0]
        k = first - first.mean(dim=(2, 3), keepdim=True)
        for nxt in self.kernels[1:]:
            # (x * a) * b = x * (a conv b): the full convolution of the kernels, channel by channel
            p = nxt.shape[-1] - 1
            k = F.conv2d(k.transpose(0, 1), nxt.flip(2, 3), padding=p).transpose(0, 1)
        return k

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x has shape {shape}; the regulariser takes grayscale images (B, 1, H, W)")
        if min(x.shape[-2:]) < self.support:
            raise ValueError(f"images of {tuple(x.shape[-2:])} pixels are smaller than the {self.support} x "
                             f"{self.support} filters of the regulariser")

    def gradient(self, x: torch.Tensor, scale: float | torch.Tensor = 1.0, *, kernel: torch.Tensor | None = None
                 ) -> torch.Tensor:
        r""":math:`\nabla R_\mu(x) = \mu^{-1} W^\top \sigma(\mu W x)` for images ``x`` of shape (B, 1, H, W).

        ``scale`` is :math:`\mu` (a number or a tensor broadcastable to (B, 1, 1, 1)); ``kernel`` reuses a
        composed kernel (:meth:`kernel`) across calls.
        """
        self._check(x)
        k = self.kernel() if kernel is None else kernel
        return F.conv_transpose2d(self.activation(F.conv2d(x * scale, k)), k) / scale

    def forward(self, x: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
        r""":math:`R_\mu(x)` of each image, shape (B,)."""
        self._check(x)
        psi = self.activation.potential(F.conv2d(x * scale, self.kernel()))
        return psi.flatten(1).sum(dim=1) / (torch.as_tensor(scale).reshape(-1) ** 2)

    def curvature(self, x: torch.Tensor, scale: float | torch.Tensor = 1.0, *,
                  kernel: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`\\sigma'(\\mu W x)` in [0, 1]: the diagonal of the Hessian of :math:`R_\\mu` at ``x`` in the
        ridge coordinates (fixed while a linear system at ``x`` is solved: compute it once)."""
        k = self.kernel() if kernel is None else kernel
        return self.activation.derivative(F.conv2d(x * scale, k))

    def hessian_vector(self, x: torch.Tensor, v: torch.Tensor, scale: float | torch.Tensor = 1.0, *,
                       kernel: torch.Tensor | None = None, curvature: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`W^\top \mathrm{diag}(\sigma'(\mu W x)) W v`: the (generalised) Hessian of :math:`R_\mu` at ``x``
        applied to ``v``; symmetric positive semi-definite. ``curvature`` reuses :meth:`curvature` at ``x``."""
        k = self.kernel() if kernel is None else kernel
        d = self.curvature(x, scale, kernel=k) if curvature is None else curvature
        return F.conv_transpose2d(d * F.conv2d(v, k), k)

    @torch.no_grad()
    def operator_norm(self, image_size: tuple[int, int]) -> float:
        """Certified ``||W||`` on images of ``image_size`` (float64): the valid convolution is a restriction of the
        circular one on that grid, whose norm is the largest singular value of its Fourier symbol."""
        return conv_operator_norm(self.kernel().detach(), tuple(image_size), padding_mode="circular")

    @torch.no_grad()
    def smoothness(self, image_size: tuple[int, int]) -> float:
        """Certified Lipschitz constant of :math:`\\nabla R_\\mu` (every ``mu``): ``max slope x ||W||^2``."""
        return self.activation.max_slope() * self.operator_norm(image_size) ** 2

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, support={self.support}"
