"""Norm-constrained lifting and projection layers for unrolled models (C_in -> C_out, ||W|| <= bound)."""

from __future__ import annotations

import torch

from ._base import SAFETY_MARGIN, StableModule, check_finite_weights, check_input, check_positive, make_weight
from ._spectral import INIT_ITERATIONS, WeightMap


class _Constrained(StableModule):
    """``x -> s W x + b`` with ``s = min(1, bound / ||W||_est)``: the weight-map constraint with no dynamics."""

    weight_map: WeightMap

    def _setup(self, features: str, in_ch: int, out_ch: int, *, bound, bias: bool, constrained: bool,
               **weight_options) -> None:
        self.bound = check_positive("bound", bound)
        self.constrained = bool(constrained)
        self._in, self._features = in_ch, features
        self.weight_map = make_weight(features, in_ch, out_ch, **weight_options)
        w = self.weight_map.weight
        shape = (1, out_ch, 1, 1) if features == "image" else (1, out_ch)
        self.bias = torch.nn.Parameter(torch.zeros(shape, dtype=w.dtype, device=w.device)) if bias else None

    @property
    def norm_limit(self) -> float | None:
        return self.bound if self.constrained else None

    def effective_weight(self) -> torch.Tensor:
        """The weight of the eval-mode map: ``min(1, bound / ||W||_est) * weight``."""
        return self.weight_map.scale(self.norm_limit, iterate=False) * self.weight_map.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, channels=self._in, features=self._features, weight=self.weight_map.weight)
        if self.constrained:  # s W x = W (s x): one application of W gives W x and the norm estimate
            wx, sigma = self.weight_map.matvec_and_estimate(x)
            y = torch.clamp(self.bound / sigma, max=1.0) * wx
        else:
            y = self.weight_map.matvec(x)
        return y if self.bias is None else y + self.bias

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified norm of the eval-mode map (the bias does not count)."""
        check_finite_weights(self)
        return self.weight_map.scaled_norm_bound(self.norm_limit)


class ConstrainedConv2d(_Constrained):
    r"""``k x k`` convolution ``C_in -> C_out`` whose operator norm is kept ``<= bound``.

    .. math::  x \mapsto s\,K * x + b, \qquad s = \min(1, \beta / \|K\|_{est})

    where :math:`\|K\|_{est}` is the warm-started power-iteration estimate of the norm of the convolution
    *at the input size* (of the convolution as a linear map, not of the reshaped kernel), inflated by the safety margin.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int (odd), default 3
    bound : float, default 1.0
        ``beta``.
    bias : bool, default True
    padding_mode : {"zeros", "circular"}, default "zeros"
    constrained : bool, default True
    margin : float, default :data:`SAFETY_MARGIN`
    power_iterations : int, default 1
    init_iterations : int, default :data:`INIT_ITERATIONS`
    rng : torch.Generator, optional
    dtype, device : optional

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import ConstrainedConv2d
    >>> lift = ConstrainedConv2d(1, 8, bound=1.0)
    >>> lift(torch.randn(2, 1, 16, 16)).shape
    torch.Size([2, 8, 16, 16])
    >>> lift.lipschitz_bound() <= 1.0
    True
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, bound: float = 1.0,
                 bias: bool = True, padding_mode: str = "zeros", constrained: bool = True,
                 margin: float = SAFETY_MARGIN, power_iterations: int = 1,
                 init_iterations: int = INIT_ITERATIONS, rng: torch.Generator | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self._setup("image", in_channels, out_channels, bound=bound, bias=bias, constrained=constrained,
                    kernel_size=kernel_size, padding_mode=padding_mode, margin=margin,
                    power_iterations=power_iterations, init_iterations=init_iterations, rng=rng, dtype=dtype,
                    device=device)

    def extra_repr(self) -> str:
        return f"bound={self.bound}, constrained={self.constrained}"


class ConstrainedLinear(_Constrained):
    r"""Linear map ``(B, in_features) -> (B, out_features)`` with ``||W|| <= bound`` (as
    :class:`ConstrainedConv2d`, for vector features).

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import ConstrainedLinear
    >>> ConstrainedLinear(3, 2, bound=0.5).lipschitz_bound() <= 0.5
    True
    """

    def __init__(self, in_features: int, out_features: int, *, bound: float = 1.0, bias: bool = True,
                 constrained: bool = True, margin: float = SAFETY_MARGIN, power_iterations: int = 1,
                 init_iterations: int = INIT_ITERATIONS, rng: torch.Generator | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self._setup("vector", in_features, out_features, bound=bound, bias=bias, constrained=constrained,
                    kernel_size=1, padding_mode="zeros", margin=margin, power_iterations=power_iterations,
                    init_iterations=init_iterations, rng=rng, dtype=dtype, device=device)

    def extra_repr(self) -> str:
        return f"bound={self.bound}, constrained={self.constrained}"
