"""Plain residual network Y + h sigma(K Y + b): forward Euler on Y' = sigma(K Y + b), the unconstrained baseline."""

from __future__ import annotations

import torch

from ._base import StableModule, check_finite_weights, check_input, check_step, make_bias, make_operator
from ._base import activation as get_activation


class ResNetLayer(StableModule):
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
    features, kernel_size, padding_mode, rng, dtype, device : see :class:`GradientFlowLayer`.

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

    def __init__(self, channels: int, *, hidden: int | None = None, step: float = 1.0, activation: str = "tanh",
                 features: str = "image",
                 kernel_size: int = 3, padding_mode: str = "zeros", rng: torch.Generator | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.step = check_step(step)
        self.channels, self.features = channels, features
        self.activation_name = activation
        self._sigma = get_activation(activation)
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"hidden must be a positive int (the width of the hidden features), got {hidden!r}")
        self.hidden = hidden
        width = channels if hidden is None else hidden
        self.operator = make_operator(features, channels, width, kernel_size=kernel_size,
                                      padding_mode=padding_mode, margin=0.0, power_iterations=0, rng=rng,
                                      dtype=dtype, device=device)
        # V, applied as the adjoint of a second (untied) map from channels to hidden
        self.output = None if hidden is None else make_operator(
            features, channels, hidden, kernel_size=kernel_size, padding_mode=padding_mode, margin=0.0,
            power_iterations=0, rng=rng, dtype=dtype, device=device)
        self.bias = make_bias(features, width, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, channels=self.channels, features=self.features, weight=self.operator.weight)
        if self.features == "image" and self.operator.input_size != tuple(x.shape[-2:]):
            # record the input size (the certified norm is taken at it); no iterations are needed
            for op in (self.operator, self.output):
                if op is not None:
                    op.init_iterations = 0
                    op._ensure_vector(x)
        z = self._sigma(self.operator.apply(x) + self.bias)
        return x + self.step * (z if self.output is None else self.output.adjoint(z))

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """``1 + h ||K||`` (``1 + h ||V|| ||K||`` with hidden features; certified, from the current weights)."""
        check_finite_weights(self)
        gain = self.operator.norm_bound() * (1.0 if self.output is None else self.output.norm_bound())
        return 1.0 + self.step * gain

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, hidden={self.hidden}, step={self.step}, "
                f"activation={self.activation_name!r}")
