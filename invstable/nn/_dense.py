"""Dense non-local network: a discretised integral equation in which every state sees all earlier ones."""

from __future__ import annotations

import torch
from torch import nn

from ._base import LayerOptions, StableModule, check_finite_weights, check_input, check_positive
from ._base import activation as get_activation


class DenseUnit(StableModule):
    r"""The update of one step of :class:`DenseNetwork`: ``x -> h sigma(s K x + b)``, ``||s K|| <= max_norm``.

    ``lipschitz_bound()`` is ``h ||s K||`` (certified).
    """

    def __init__(self, channels: int, *, step: float, max_norm: float | None, activation: str, constrained: bool,
                 options: LayerOptions) -> None:
        super().__init__()
        self.step = check_positive("step", step)
        self.max_norm = check_positive("max_norm", max_norm) if max_norm is not None else None
        self.constrained = bool(constrained) and max_norm is not None
        self.channels, self.features = channels, options.features
        self._sigma = get_activation(activation)
        self.weight_map = options.weight(channels, channels)
        self.bias = options.bias(channels)

    @property
    def norm_limit(self) -> float | None:
        return self.max_norm if self.constrained else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.constrained:  # s K x = K (s x): one application of K gives K x and the norm estimate
            kx, sigma = self.weight_map.matvec_and_estimate(x)
            kx = torch.clamp(self.max_norm / sigma, max=1.0) * kx
        else:
            kx = self.weight_map.matvec(x)
        return self.step * self._sigma(kx + self.bias)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        check_finite_weights(self)
        return self.step * self.weight_map.scaled_norm_bound(self.norm_limit)


class DenseNetwork(StableModule):
    r"""Densely connected network as a discretised integral equation, with a certified Lipschitz bound.

    .. math::

        x_{j+1} = \sum_{i=0}^{j} \alpha_{j,i}\, x_i + h\,\sigma(s_j K_j x_j + b_j), \qquad
        \alpha_{j,\cdot} = \mathrm{softmax}(\theta_{j,0..j}),

    each state a learned convex combination of all earlier states plus a residual update. In the
    deep-layer limit this is a Volterra integral equation
    :math:`x(t) = \int_0^t k(t, \tau)\,x(\tau)\,d\tau + \dots`: the weights :math:`\alpha_{j,i}` are the
    quadrature of the memory kernel, normalised (non-negative, summing to one) so that the memory term is
    non-expansive.

    Parameters
    ----------
    channels : int
    depth : int
    step : float, default 1.0
    max_norm : float, default 1.0
        ``||s_j K_j|| <= max_norm`` is enforced by rescaling (power iteration with safety margin).
    activation : default "tanh"
    constrained : bool, default True
    **options
        ``features``, ``kernel_size``, ``padding_mode``, ``margin``, ``power_iterations``, ``rng``, ``dtype``,
        ``device``: see :class:`invstable.nn.LayerOptions`.

    Notes
    -----
    With :math:`L_0 = 1` and :math:`L_{j+1} = \sum_i \alpha_{j,i} L_i + h\|s_j K_j\| L_j`, the map
    :math:`x_0 \mapsto x_j` is :math:`L_j`-Lipschitz (triangle inequality); ``lipschitz_bound()`` returns
    :math:`L_N` with certified norms. Since :math:`\sum_i \alpha_{j,i} = 1`, :math:`L_N \le (1 + h\kappa)^N`.

    References
    ----------
    .. [1] G. Huang, Z. Liu, L. van der Maaten, K. Q. Weinberger, "Densely connected convolutional networks",
       CVPR 2017.
    .. [2] Densely connected networks in the deep-layer limit (integral-equation formulation); see
       docs/layers/dense.md for the correspondence used here.

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import DenseNetwork
    >>> net = DenseNetwork(2, 4, step=0.25, features="vector")
    >>> net(torch.randn(3, 2)).shape
    torch.Size([3, 2])
    >>> net.lipschitz_bound() <= (1 + 0.25) ** 4
    True
    """

    family = "dense"

    def __init__(self, channels: int, depth: int, *, step: float = 1.0, max_norm: float | None = 1.0,
                 activation: str = "tanh", constrained: bool = True, **options) -> None:
        super().__init__()
        opts = LayerOptions.parse("DenseNetwork", options)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        self.channels, self.depth, self.features = channels, depth, opts.features
        self.layers = nn.ModuleList(
            DenseUnit(channels, step=step, max_norm=max_norm, activation=activation, constrained=constrained,
                      options=opts)
            for _ in range(depth)
        )
        # zero logits: uniform average of the history
        self.mixing = nn.Parameter(torch.zeros(depth, depth, dtype=opts.dtype or torch.get_default_dtype(),
                                               device=opts.device))

    def weights(self) -> list[torch.Tensor]:
        """The normalised memory weights ``alpha_j`` (length ``j + 1``) of every step."""
        return [torch.softmax(self.mixing[j, : j + 1], dim=0) for j in range(self.depth)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, channels=self.channels, features=self.features, weight=self.mixing)
        states = [x]
        for j, (unit, alpha) in enumerate(zip(self.layers, self.weights())):
            hist = torch.stack(states, dim=0)
            memory = torch.tensordot(alpha, hist, dims=1)
            states.append(memory + unit(states[-1]))
        return states[-1]

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        check_finite_weights(self)
        bounds = [1.0]
        for unit, alpha in zip(self.layers, self.weights()):
            a = alpha.double().tolist()
            bounds.append(sum(ai * li for ai, li in zip(a, bounds)) * (1 + 1e-12) + unit.lipschitz_bound() * bounds[-1])
        return bounds[-1]
