"""Plain residual network Y + h sigma(K Y + b): forward Euler on Y' = sigma(K Y + b), the unconstrained baseline."""

from __future__ import annotations

import torch

from ._base import LayerOptions, StepLayer, check_finite_weights, check_input, check_positive
from ._base import activation as get_activation


class ResNetLayer(StepLayer):
    r"""Plain residual step, no constraint: :math:`Y \mapsto Y + h\,\sigma(K Y + b)`, or with ``hidden`` features
    :math:`Y \mapsto Y + h\,V \sigma(K Y + b)` (``K``: channels to hidden, ``V``: hidden to channels, untied).

    Parameters
    ----------
    channels : int
    hidden : int, optional
        Width of the hidden features (the unconstrained twin of a wide gradient-flow layer, whose
        :math:`W^\top \sigma(W Y + b)` it unties); default: no hidden layer (``K`` is square).
    step : float, default 1.0
    activation : {"tanh", "relu", "leaky_relu", "softplus"}, default "tanh"
    **options
        ``features``, ``kernel_size``, ``padding_mode``, ``rng``, ``dtype``, ``device``: see
        :class:`invstable.nn.LayerOptions` (no ``margin`` or ``power_iterations``: nothing is estimated).

    Notes
    -----
    Forward Euler for :math:`Y' = \sigma(K(t) Y + b(t))` (Haber & Ruthotto 2017, Eq. (2.2)); its stability
    depends on the eigenvalues of :math:`K`, which nothing controls. Nothing is enforced, but the map is
    still Lipschitz with :math:`\mathrm{Lip} \le 1 + h\|K\|` (Jacobian :math:`I + hDK`, :math:`D` in
    :math:`[0, 1]`), which ``lipschitz_bound()`` reports from the current weights (certified, dense float64
    norm); it grows without limit with the weights and exponentially with depth.

    References
    ----------
    .. [1] K. He, X. Zhang, S. Ren, J. Sun, "Deep residual learning for image recognition", CVPR 2016.
    .. [2] E. Haber, L. Ruthotto, "Stable architectures for deep neural networks", Inverse Problems 34 (2018).

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import ResNetLayer
    >>> ResNetLayer(2, features="vector")(torch.zeros(3, 2)).shape
    torch.Size([3, 2])
    """

    #: options of the other families that mean nothing for a layer that constrains nothing
    excluded_options = frozenset({"margin", "power_iterations"})

    def __init__(self, channels: int, *, hidden: int | None = None, step: float = 1.0, activation: str = "tanh",
                 **options) -> None:
        super().__init__()
        opts = LayerOptions.parse("ResNetLayer", options, exclude=self.excluded_options, margin=0.0,
                                  power_iterations=0)
        self.step = check_positive("step", step)
        self.channels, self.features = channels, opts.features
        self.activation_name = activation
        self._sigma = get_activation(activation)
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"hidden must be a positive int (the width of the hidden features), got {hidden!r}")
        self.hidden = hidden
        width = channels if hidden is None else hidden
        self.weight_map = opts.weight(channels, width, init_iterations=0)
        # V, applied as the adjoint of a second (untied) map from channels to hidden
        self.output = None if hidden is None else opts.weight(channels, hidden, init_iterations=0)
        self.bias = opts.bias(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, channels=self.channels, features=self.features, weight=self.weight_map.weight)
        for w in (self.weight_map, self.output):
            if w is not None:
                w.observe(x)  # the certified norm is taken at the input size; nothing is estimated
        z = self._sigma(self.weight_map.matvec(x) + self.bias)
        return x + self.step * (z if self.output is None else self.output.adjoint(z))

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """``1 + h ||K||`` (``1 + h ||V|| ||K||`` with hidden features; certified, from the current weights)."""
        check_finite_weights(self)
        gain = self.weight_map.norm_bound() * (1.0 if self.output is None else self.output.norm_bound())
        return 1.0 + self.step * gain

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, hidden={self.hidden}, step={self.step}, "
                f"activation={self.activation_name!r}")
