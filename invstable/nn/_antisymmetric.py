"""Antisymmetric ResNet (Haber & Ruthotto 2017; Chang et al. 2019): forward Euler on Y' = sigma((K - K^T - gamma I) Y + b)."""

from __future__ import annotations

import math

import torch

from ._base import (SAFETY_MARGIN, StableModule, check_finite_weights, check_input, check_step, make_bias,
                    make_operator)
from ._base import activation as get_activation


class AntisymmetricLayer(StableModule):
    r"""Residual step with an antisymmetric (plus damping) weight.

    .. math::

        Y \mapsto Y + h\,\sigma\big((s (K - K^\top) - \gamma I) Y + b\big),
        \qquad s = \min\big(1, \kappa / \|K\|_{est}\big)

    Parameters
    ----------
    channels : int
        ``C`` of ``(B, C, H, W)`` or ``(B, C)``; ``K`` is square (``C -> C``).
    step : float, default 1.0
        ``h``.
    gamma : float >= 0, default 0.0
        Damping; the eigenvalues of ``K - K^T - gamma I`` have real part ``-gamma``.
    max_norm : float, default 1.0
        ``kappa``: ``||K||`` is kept below it by rescaling in the forward pass (power-iteration estimate with
        safety margin), which bounds ``||K - K^T|| <= 2 kappa``. ``constrained=False`` switches this off.
    activation : {"tanh", "relu", "leaky_relu", "softplus"}, default "tanh"
    features, kernel_size, padding_mode, margin, power_iterations, rng, dtype, device :
        see :class:`GradientFlowLayer`.

    Notes
    -----
    The continuous system (Haber & Ruthotto 2017, Eq. (3.3); Chang et al. 2019, Eq. (5)) has a Jacobian
    whose eigenvalues have real part :math:`\le -\gamma \cdot` (slope) :math:`\le 0`, so it neither
    explodes nor, for :math:`\gamma = 0`, decays: well-posed forward propagation. The forward Euler step is
    stable only for :math:`h` small relative to :math:`\|K - K^\top\|`; it is *not* non-expansive.
    Its Jacobian is :math:`I + h D A` with :math:`D` diagonal in :math:`[0, 1]`, so the certified bound is

    .. math::  \mathrm{Lip} \le 1 + h \| s(K - K^\top) - \gamma I \|,

    with the norm computed densely (float64) from the current weights.

    References
    ----------
    .. [1] E. Haber, L. Ruthotto, "Stable architectures for deep neural networks", Inverse Problems 34 (2018)
       014004, arXiv:1705.03341.
    .. [2] B. Chang, L. Meng, E. Haber, L. Ruthotto, D. Begert, E. Holtham, "Reversible architectures for
       arbitrarily deep residual neural networks", AAAI 2018; B. Chang, M. Chen, E. Haber, E. H. Chi,
       "AntisymmetricRNN", ICLR 2019.

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import AntisymmetricLayer
    >>> layer = AntisymmetricLayer(3, step=0.1, rng=torch.Generator().manual_seed(0))
    >>> layer(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 3, 8, 8])
    >>> layer.lipschitz_bound() <= 1 + 0.1 * 2 * 1.0 + 1e-9
    True
    """

    def __init__(self, channels: int, *, step: float = 1.0, gamma: float = 0.0, max_norm: float = 1.0,
                 activation: str = "tanh", features: str = "image", kernel_size: int = 3,
                 padding_mode: str = "zeros", constrained: bool = True, margin: float = SAFETY_MARGIN,
                 power_iterations: int = 1, rng: torch.Generator | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.step = check_step(step)
        if isinstance(gamma, bool) or not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
        self.max_norm = check_step(max_norm) if max_norm is not None else None
        self.gamma = float(gamma)
        self.channels, self.features = channels, features
        self.activation_name = activation
        self._sigma = get_activation(activation)
        self.constrained = bool(constrained) and max_norm is not None
        self.operator = make_operator(features, channels, channels, kernel_size=kernel_size,
                                      padding_mode=padding_mode, margin=margin,
                                      power_iterations=power_iterations, rng=rng, dtype=dtype, device=device)
        self.bias = make_bias(features, channels, dtype, device)

    def _scale(self, x, iterate):
        if not self.constrained:
            return 1.0
        return self.operator.scale_to(self.max_norm, x, iterate=iterate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, channels=self.channels, features=self.features, weight=self.operator.weight)
        w = self.operator.antisymmetric_weight(self._scale(x, None), self.gamma)
        return x + self.step * self._sigma(self.operator.apply(x, w) + self.bias)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified ``1 + h ||s (K - K^T) - gamma I||`` for the eval-mode map in the current state."""
        check_finite_weights(self)
        if self.constrained and not self.operator.has_estimate:
            # scale not fixed yet: s in (0, 1], ||s A - gamma I|| <= s ||K - K^T|| + gamma <= 2 ||K|| + gamma
            norm = 2 * self.operator.norm_bound() + self.gamma
        else:
            w = self.operator.antisymmetric_weight(self._scale(None, False), self.gamma)
            norm = self.operator.norm_of(w)
        return 1.0 + self.step * norm

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, step={self.step}, gamma={self.gamma}, max_norm={self.max_norm}, "
                f"activation={self.activation_name!r}, constrained={self.constrained}")
