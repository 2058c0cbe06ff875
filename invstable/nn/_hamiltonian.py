"""Hamiltonian layers (Haber & Ruthotto 2017; Galimberti et al. 2023): symplectic, exactly reversible steps.

Each layer acts on a pair of states and has an exact inverse. The step-size condition of each scheme is
enforced in the forward pass by rescaling the weight, from the warm-started power-iteration estimate.
"""

from __future__ import annotations

import math

import torch

from ._base import LayerOptions, StepLayer, check_finite_weights, check_input, check_positive, shear_norm
from ._base import activation as get_activation


def _check_tau(name, value):
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value < 2):
        raise ValueError(f"{name} must be in (0, 2) (the stability limit of the linearised step), got {value!r}")
    return float(value)


class _PairLayer(StepLayer):
    """Common plumbing: ``forward(a, b) -> (a', b')``, ``inverse(a', b') -> (a, b)``, and the options every
    scheme shares. A scheme gives its step rule (:meth:`norm_limit`: the largest ``||s K||`` its condition
    allows) and its Lipschitz formula."""

    def _setup(self, owner: str, channels: int, step, max_step_norm, activation: str, constrained: bool,
               options: dict) -> LayerOptions:
        opts = LayerOptions.parse(owner, options)
        self.step = check_positive("step", step)
        self.max_step_norm = _check_tau("max_step_norm", max_step_norm)
        self.channels, self.features = channels, opts.features
        self.activation_name = activation
        self._sigma = get_activation(activation)
        self.constrained = bool(constrained)
        return opts

    @property
    def norm_limit(self) -> float | None:
        """Largest ``||s K||`` the step condition allows, ``h ||s K|| <= max_step_norm``; None when
        unconstrained."""
        return self.max_step_norm / self.step if self.constrained else None


class VerletLayer(_PairLayer):
    r"""Verlet step of the Hamiltonian system of Haber & Ruthotto (2017, Eq. (3.5)-(3.6)).

    .. math::

        z_{j+1} = z_j - h\,\sigma(s K^\top y_j + b_z), \qquad
        y_{j+1} = y_j + h\,\sigma(s K z_{j+1} + b_y),

    the discretisation of :math:`y' = \sigma(K z + b)`, :math:`z' = -\sigma(K^\top y + b)`. ``K`` maps the
    auxiliary state ``z`` (``aux_channels``) to ``y`` (``channels``), so it may be non-square.

    Parameters
    ----------
    channels : int
        Channels of ``y`` (the state the network returns).
    aux_channels : int, optional
        Channels of ``z``; default ``channels``.
    step : float, default 1.0
    max_step_norm : float in (0, 2), default 1.0
        ``tau``: the step-size condition ``h ||s K|| <= tau`` is enforced by the scale
        ``s = min(1, tau / (h ||K||_est))``. For the linearised system ``z'' = -K^T D K z`` the leapfrog
        step is stable (eigenvalues on the unit circle) iff ``h ||K|| < 2``.
    activation : default "tanh"
    constrained : bool, default True
    **options
        ``features``, ``kernel_size``, ``padding_mode``, ``margin``, ``power_iterations``, ``rng``, ``dtype``,
        ``device``: see :class:`invstable.nn.LayerOptions`.

    Notes
    -----
    Each half-step is a shear :math:`(y, z) \mapsto (y, z - h g(y))` with :math:`\mathrm{Lip}(g) \le \|sK\|`,
    whose Jacobian :math:`[[I, 0], [-hG, I]]` has norm at most :math:`(a + \sqrt{a^2 + 4})/2` with
    :math:`a = h\|sK\|`. ``lipschitz_bound()`` returns the square of this (for the pair ``(y, z)``), a finite
    but worst-case bound. The step is exactly invertible: :meth:`inverse`.

    References
    ----------
    .. [1] E. Haber, L. Ruthotto, "Stable architectures for deep neural networks", Inverse Problems 34 (2018),
       Sec. 3.2 (Hamiltonian-inspired networks) and Eq. (3.6) (Verlet).
    .. [2] B. Chang et al., "Reversible architectures for arbitrarily deep residual neural networks", AAAI 2018.

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import VerletLayer
    >>> layer = VerletLayer(2, aux_channels=3, step=0.5, features="vector").eval()
    >>> y, z = torch.randn(4, 2), torch.randn(4, 3)
    >>> y0, z0 = layer.inverse(*layer(y, z))
    >>> bool(torch.allclose(y0, y, atol=1e-5) and torch.allclose(z0, z, atol=1e-5))
    True
    """

    def __init__(self, channels: int, *, aux_channels: int | None = None, step: float = 1.0,
                 max_step_norm: float = 1.0, activation: str = "tanh", constrained: bool = True,
                 **options) -> None:
        super().__init__()
        opts = self._setup("VerletLayer", channels, step, max_step_norm, activation, constrained, options)
        self.aux_channels = channels if aux_channels is None else aux_channels
        self.weight_map = opts.weight(self.aux_channels, channels)
        self.bias_y = opts.bias(channels)
        self.bias_z = opts.bias(self.aux_channels)

    def _check(self, y, z):
        check_input(y, channels=self.channels, features=self.features, weight=self.weight_map.weight, name="y")
        check_input(z, channels=self.aux_channels, features=self.features, weight=self.weight_map.weight,
                    name="z")

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y, z)
        k, h = self.weight_map, self.step
        w = k.scale(self.norm_limit, z) * k.weight
        z = z - h * self._sigma(k.adjoint(y, w) + self.bias_z)
        y = y + h * self._sigma(k.matvec(z, w) + self.bias_y)
        return y, z

    def inverse(self, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the step backwards (the eval-mode map; the power-iteration vector is not updated)."""
        self._check(y, z)
        k, h = self.weight_map, self.step
        w = k.scale(self.norm_limit, z, iterate=False) * k.weight
        y = y - h * self._sigma(k.matvec(z, w) + self.bias_y)
        z = z + h * self._sigma(k.adjoint(y, w) + self.bias_z)
        return y, z

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified bound for the pair map ``(y, z) -> (y', z')``: ``((a + sqrt(a^2+4))/2)^2``, ``a = h||sK||``."""
        check_finite_weights(self)
        a = self.step * self.weight_map.scaled_norm_bound(self.norm_limit)
        return shear_norm(a) ** 2

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, aux_channels={self.aux_channels}, step={self.step}, "
                f"max_step_norm={self.max_step_norm}, activation={self.activation_name!r}, "
                f"constrained={self.constrained}")


class LeapfrogLayer(_PairLayer):
    r"""Leapfrog step of the second-order network :math:`y'' = \sigma(K y + b)`, :math:`K = -C^\top C`.

    .. math::

        y_{j+1} = 2 y_j - y_{j-1} + h^2 \sigma(-s^2 C^\top C y_j + b)

    (Haber & Ruthotto 2017, Eq. (3.7)-(3.8)). The layer maps the pair ``(y_{j-1}, y_j)`` to
    ``(y_j, y_{j+1})``.

    Parameters
    ----------
    channels : int
    hidden : int, optional
        Rows of ``C``; default ``channels``.
    step : float, default 1.0
    max_step_norm : float in (0, 2), default 1.0
        ``tau``: ``h ||s C|| <= tau``. For the linear problem :math:`y'' = -C^\top C y` the leapfrog scheme
        is stable iff :math:`h^2 \|C\|^2 < 4`.
    activation : default "tanh"
    constrained : bool, default True
    **options : see :class:`invstable.nn.LayerOptions`.

    Notes
    -----
    The Jacobian of the pair map is :math:`[[0, I], [-I, M]]` with
    :math:`\|M\| = \|2I - h^2 D s^2 C^\top C\| \le m = 2 + h^2 s^2 \|C\|^2`, so its norm is at most
    :math:`(m + \sqrt{m^2 + 4})/2`, the value of ``lipschitz_bound()``. This is a worst-case bound (a
    second-order system can grow linearly in time even when stable), large for deep networks. The step is
    exactly invertible: :meth:`inverse`.

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import LeapfrogLayer
    >>> layer = LeapfrogLayer(2, step=0.5, features="vector").eval()
    >>> a, b = torch.randn(3, 2), torch.randn(3, 2)
    >>> a0, b0 = layer.inverse(*layer(a, b))
    >>> bool(torch.allclose(a0, a, atol=1e-5))
    True
    """

    def __init__(self, channels: int, *, hidden: int | None = None, step: float = 1.0,
                 max_step_norm: float = 1.0, activation: str = "tanh", constrained: bool = True,
                 **options) -> None:
        super().__init__()
        opts = self._setup("LeapfrogLayer", channels, step, max_step_norm, activation, constrained, options)
        self.hidden = channels if hidden is None else hidden
        self.weight_map = opts.weight(channels, self.hidden)
        self.bias = opts.bias(channels)

    def _accel(self, y, iterate):
        c = self.weight_map
        if not self.constrained:
            return self._sigma(-c.adjoint(c.matvec(y)) + self.bias)
        cy, sigma = c.matvec_and_estimate(y, iterate=iterate)
        s = torch.clamp(self.norm_limit / sigma, max=1.0)  # scale(norm_limit), on this call's estimate
        return self._sigma(-(s * s) * c.adjoint(cy) + self.bias)

    def _check(self, a, b):
        for name, t in (("y_prev", a), ("y", b)):
            check_input(t, channels=self.channels, features=self.features, weight=self.weight_map.weight,
                        name=name)

    def forward(self, y_prev: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y_prev, y)
        return y, 2 * y - y_prev + self.step**2 * self._accel(y, None)

    def inverse(self, y: torch.Tensor, y_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the step backwards: ``(y_j, y_{j+1}) -> (y_{j-1}, y_j)`` (eval-mode map)."""
        self._check(y, y_next)
        return 2 * y - y_next + self.step**2 * self._accel(y, False), y

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified bound for the pair map: ``(m + sqrt(m^2+4))/2`` with ``m = 2 + h^2 ||sC||^2``."""
        check_finite_weights(self)
        c = self.weight_map.scaled_norm_bound(self.norm_limit)
        return shear_norm(2.0 + self.step**2 * c * c)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, hidden={self.hidden}, step={self.step}, "
                f"max_step_norm={self.max_step_norm}, activation={self.activation_name!r}, "
                f"constrained={self.constrained}")


class SymplecticEulerLayer(_PairLayer):
    r"""Symplectic-Euler step of a separable Hamiltonian network (Galimberti et al. 2023).

    With :math:`H(y, z) = 1^\top\phi(s_1 K_1 z + b_1) + 1^\top\phi(s_2 K_2 y + b_2)`, :math:`\phi' = \sigma`,

    .. math::

        y_{j+1} = y_j + h\,s_1 K_1^\top \sigma(s_1 K_1 z_j + b_1), \qquad
        z_{j+1} = z_j - h\,s_2 K_2^\top \sigma(s_2 K_2 y_{j+1} + b_2),

    the symplectic Euler discretisation of :math:`y' = \partial_z H`, :math:`z' = -\partial_y H`; ``y`` and
    ``z`` have the same number of channels.

    Parameters
    ----------
    channels : int
    hidden : int, optional
        Rows of ``K_1`` and ``K_2``; default ``channels``.
    step : float, default 1.0
    max_step_norm : float in (0, 2), default 1.0
        ``tau``: ``h ||s_i K_i||^2 <= tau`` for both weights (for a linear ``sigma`` the step is stable iff
        ``h^2 ||K_1||^2 ||K_2||^2 < 4``).
    activation, constrained : see :class:`VerletLayer`.
    **options : see :class:`invstable.nn.LayerOptions`.

    Notes
    -----
    Two shears with symmetric-positive-semidefinite Jacobian blocks of norm at most
    :math:`a_i = h\|s_i K_i\|^2`: ``lipschitz_bound()`` is
    :math:`\prod_i (a_i + \sqrt{a_i^2 + 4}) / 2` for the pair ``(y, z)``. Exactly invertible.

    References
    ----------
    .. [1] C. L. Galimberti, L. Furieri, L. Xu, G. Ferrari-Trecate, "Hamiltonian deep neural networks
       guaranteeing nonvanishing gradients by design", IEEE TAC 68 (2023), Eq. (9)-(12).
    .. [2] E. Celledoni, D. Murari, B. Owren, C.-B. Schönlieb, F. Sherry, "Dynamical systems' based neural
       networks", SIAM J. Sci. Comput. 45 (2023).

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import SymplecticEulerLayer
    >>> layer = SymplecticEulerLayer(2, step=0.5, features="vector").eval()
    >>> y, z = torch.randn(3, 2), torch.randn(3, 2)
    >>> y0, z0 = layer.inverse(*layer(y, z))
    >>> bool(torch.allclose(y0, y, atol=1e-5))
    True
    """

    def __init__(self, channels: int, *, hidden: int | None = None, step: float = 1.0,
                 max_step_norm: float = 1.0, activation: str = "tanh", constrained: bool = True,
                 **options) -> None:
        super().__init__()
        opts = self._setup("SymplecticEulerLayer", channels, step, max_step_norm, activation, constrained, options)
        self.hidden = channels if hidden is None else hidden
        self.aux_channels = channels
        self.weight_map_z = opts.weight(channels, self.hidden)
        self.weight_map_y = opts.weight(channels, self.hidden)
        self.bias_z = opts.bias(self.hidden)
        self.bias_y = opts.bias(self.hidden)

    @property
    def norm_limit(self) -> float | None:
        """The step condition is on ``h ||s K||^2`` here (both half-steps apply ``K``): ``sqrt(tau / h)``."""
        return math.sqrt(self.max_step_norm / self.step) if self.constrained else None

    def _force(self, k, bias, x, iterate):
        if not self.constrained:
            return k.adjoint(self._sigma(k.matvec(x) + bias))
        kx, sigma = k.matvec_and_estimate(x, iterate=iterate)
        s = torch.clamp(self.norm_limit / sigma, max=1.0)  # scale(norm_limit), on this call's estimate
        return s * k.adjoint(self._sigma(s * kx + bias))

    def _check(self, y, z):
        for name, t in (("y", y), ("z", z)):
            check_input(t, channels=self.channels, features=self.features, weight=self.weight_map_y.weight,
                        name=name)

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y, z)
        y = y + self.step * self._force(self.weight_map_z, self.bias_z, z, None)
        z = z - self.step * self._force(self.weight_map_y, self.bias_y, y, None)
        return y, z

    def inverse(self, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the step backwards (eval-mode map)."""
        self._check(y, z)
        z = z + self.step * self._force(self.weight_map_y, self.bias_y, y, False)
        y = y - self.step * self._force(self.weight_map_z, self.bias_z, z, False)
        return y, z

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified bound for the pair map: ``prod_i (a_i + sqrt(a_i^2+4))/2``, ``a_i = h ||s_i K_i||^2``."""
        check_finite_weights(self)
        out = 1.0
        for k in (self.weight_map_z, self.weight_map_y):
            n = k.scaled_norm_bound(self.norm_limit)
            out *= shear_norm(self.step * n * n)
        return out

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, hidden={self.hidden}, step={self.step}, "
                f"max_step_norm={self.max_step_norm}, activation={self.activation_name!r}, "
                f"constrained={self.constrained}")
