"""Antisymmetric ResNet (Haber & Ruthotto 2017; Chang et al. 2019): forward Euler on Y' = sigma((K - K^T - gamma I) Y + b)."""

from __future__ import annotations

import math

import torch

from ._base import LayerOptions, StepLayer, check_finite_weights, check_input, check_positive
from ._base import activation as get_activation


class AntisymmetricLayer(StepLayer):
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
    constrained : bool, default True
    **options
        ``features``, ``kernel_size``, ``padding_mode``, ``margin``, ``power_iterations``, ``rng``, ``dtype``,
        ``device``: see :class:`invstable.nn.LayerOptions`.

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

    def __init__(self, channels: int, *, step: float = 1.0, gamma: float = 0.0, max_norm: float | None = 1.0,
                 activation: str = "tanh", constrained: bool = True, **options) -> None:
        super().__init__()
        opts = LayerOptions.parse("AntisymmetricLayer", options)
        self.step = check_positive("step", step)
        if isinstance(gamma, bool) or not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
        self.max_norm = check_positive("max_norm", max_norm) if max_norm is not None else None
        self.gamma = float(gamma)
        self.channels, self.features = channels, opts.features
        self.activation_name = activation
        self._sigma = get_activation(activation)
        self.constrained = bool(constrained) and max_norm is not None
        self.weight_map = opts.weight(channels, channels)
        self.bias = opts.bias(channels)

    @property
    def norm_limit(self) -> float | None:
        """``kappa``, the largest ``||s K||`` allowed; None when unconstrained."""
        return self.max_norm if self.constrained else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, channels=self.channels, features=self.features, weight=self.weight_map.weight)
        w = self.weight_map.antisymmetric_weight(self.weight_map.scale(self.norm_limit, x), self.gamma)
        return x + self.step * self._sigma(self.weight_map.matvec(x, w) + self.bias)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified ``1 + h ||s (K - K^T) - gamma I||`` for the eval-mode map in the current state."""
        check_finite_weights(self)
        if self.constrained and not self.weight_map.has_estimate:
            # scale not fixed yet: ||s (K - K^T) - gamma I|| <= 2 ||s K|| + gamma
            norm = 2 * self.weight_map.scaled_norm_bound(self.norm_limit) + self.gamma
        else:
            w = self.weight_map.antisymmetric_weight(self.weight_map.scale(self.norm_limit, iterate=False),
                                                     self.gamma)
            norm = self.weight_map.norm_of(w)
        return 1.0 + self.step * norm

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, step={self.step}, gamma={self.gamma}, max_norm={self.max_norm}, "
                f"activation={self.activation_name!r}, constrained={self.constrained}")
