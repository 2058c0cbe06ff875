"""Norm-constrained lifting and projection layers for unrolled models (C_in -> C_out, ||A|| <= bound)."""

from __future__ import annotations

import torch

from ._base import SAFETY_MARGIN, StableModule, check_finite_weights, check_input, check_step
from ._spectral import INIT_ITERATIONS, ConvOperator, DenseOperator


class _Constrained(StableModule):
    operator: ConvOperator | DenseOperator

    def _scale(self, x, iterate):
        if not self.constrained:
            return 1.0
        return self.operator.scale_to(self.bound, x, iterate=iterate)

    def effective_weight(self) -> torch.Tensor:
        """The weight of the eval-mode map: ``min(1, bound / ||A||_est) * weight``."""
        return self._scale(None, False) * self.operator.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, channels=self._in, features=self._features, weight=self.operator.weight)
        if self.constrained:  # s A x = A (s x): one application of A gives A x and the norm estimate
            ax, sigma = self.operator.apply_and_estimate(x)
            y = torch.clamp(self.bound / sigma, max=1.0) * ax
        else:
            y = self.operator.apply(x)
        return y if self.bias is None else y + self.bias

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified operator norm of the eval-mode map (the bias does not count)."""
        check_finite_weights(self)
        if self.constrained and not self.operator.has_estimate:
            # the scale s <= 1 is not fixed until the first input, and the estimate it will use may fall short
            # of the norm: only s ||K|| <= ||K|| is certain
            return self.operator.norm_bound()
        return self.operator.norm_of(self.effective_weight())


class ConstrainedConv2d(_Constrained):
    r"""``k x k`` convolution ``C_in -> C_out`` whose operator norm is kept ``<= bound``.

    .. math::  x \mapsto s\,K * x + b, \qquad s = \min(1, \beta / \|K\|_{est})

    where :math:`\|K\|_{est}` is the warm-started power-iteration estimate of the norm of the convolution
    *at the input size* (of the operator, not of the reshaped kernel), inflated by the safety margin.

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
        self.bound = check_step(bound)
        self.constrained = bool(constrained)
        self._in, self._features = in_channels, "image"
        self.operator = ConvOperator(in_channels, out_channels, kernel_size, padding_mode=padding_mode,
                                     margin=margin, power_iterations=power_iterations,
                                     init_iterations=init_iterations, rng=rng, dtype=dtype, device=device)
        self.bias = (torch.nn.Parameter(torch.zeros(1, out_channels, 1, 1, dtype=self.operator.weight.dtype,
                                                    device=self.operator.weight.device)) if bias else None)

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
        self.bound = check_step(bound)
        self.constrained = bool(constrained)
        self._in, self._features = in_features, "vector"
        self.operator = DenseOperator(in_features, out_features, margin=margin, power_iterations=power_iterations,
                                      init_iterations=init_iterations, rng=rng, dtype=dtype, device=device)
        self.bias = (torch.nn.Parameter(torch.zeros(1, out_features, dtype=self.operator.weight.dtype,
                                                    device=self.operator.weight.device)) if bias else None)

    def extra_repr(self) -> str:
        return f"bound={self.bound}, constrained={self.constrained}"
