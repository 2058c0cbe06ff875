"""Non-expansive gradient-flow layer: explicit Euler on the negative gradient flow of a convex potential."""

from __future__ import annotations

import math

import torch

from ._base import LayerOptions, StepLayer, check_finite_weights, check_input, check_positive
from ._base import activation as get_activation

STEP_CONTROLS = ("clamp", "split")


class GradientFlowLayer(StepLayer):
    r"""One explicit Euler step of the gradient flow of a convex potential, non-expansive by construction.

    .. math::

        x \mapsto c \left( x - h \left( W^\top \sigma(W x + b) + \mu x \right) \right),
        \qquad h \le \frac{2}{\|W\|^2 + 2\mu}

    Parameters
    ----------
    channels : int
        Channels ``C`` of the input ``(B, C, H, W)`` (image features) or ``(B, C)`` (vector features).
    hidden : int, optional
        Rows of ``W`` (output channels of the convolution); default ``channels``.
    step : float, default 1.0
        Requested step ``h``; the step actually taken is ``min(h, 2 / (||W||_est^2 + 2 mu))``.
    activation : {"relu", "leaky_relu", "tanh", "softplus", "spline"}, default "relu"
        Monotone and 1-Lipschitz, so that ``sigma = phi'`` for a convex ``phi`` with ``phi''`` in [0, 1].
        "spline" learns one such activation per hidden feature (:class:`invstable.nn.MonotoneSpline`, slopes
        projected onto [0, 1]; starts as a clipping at +-1, the identity in between).
    step_control : {"clamp", "split"}, default "clamp"
        "clamp" takes one step of size ``min(h, h_max)``. "split" takes ``n = ceil(h / h_max)`` sub-steps of
        ``h / n``; ``n`` is a host-side integer recomputed by :meth:`update_substeps` (called by
        :func:`refresh_spectral_norms`), never in ``forward`` (no host-device synchronisation); between two
        updates each sub-step is also clamped, so the condition holds at every forward pass regardless.
    max_substeps : int, default 64
        Cap on ``n`` for "split"; beyond it the sub-steps are clamped (the layer stays non-expansive but
        covers less than the requested time ``h``).
    contraction : float in (0, 1], default 1
        Factor ``c``; ``c < 1`` makes the layer a strict contraction with Lipschitz constant ``c``.
    strong_convexity : float >= 0, default 0
        ``mu``: adds ``mu/2 ||x||^2`` to the potential; then ``h <= 2 / (||W||^2 + 2 mu)`` gives the
        Lipschitz constant ``1 - h mu < 1``.
    constrained : bool, default True
        False switches the step-size control off (the unconstrained baseline of the overhead benchmark).
    **options
        ``features``, ``kernel_size``, ``padding_mode``, ``margin``, ``power_iterations``, ``rng``, ``dtype``,
        ``device``: see :class:`invstable.nn.LayerOptions`.

    Notes
    -----
    The layer is the explicit Euler step for :math:`x' = -\nabla V(x)` with the convex potential
    :math:`V(x) = 1^\top \phi(Wx + b) + \tfrac{\mu}{2}\|x\|^2`, :math:`\phi' = \sigma`. Its Jacobian (almost
    everywhere) is :math:`J = I - h(W^\top D W + \mu I)` with :math:`D` diagonal in :math:`[0, 1]`, symmetric,
    with eigenvalues in :math:`[1 - h(\|W\|^2 + \mu), 1 - h\mu]`, hence

    .. math::

        \|J\| \le \max(|1 - h\mu|, |1 - h(\|W\|^2 + \mu)|),

    which is 1 for :math:`\mu = 0` and :math:`h\|W\|^2 \le 2` (Sherry et al. 2024, Theorem 3.3 and Eq. (3.5);
    Celledoni et al. 2021, Sec. 3). ``lipschitz_bound()`` evaluates this formula with the step actually taken
    and a certified (dense, float64) ``||W||``, so it holds even if the power iteration were inaccurate.

    References
    ----------
    .. [1] F. Sherry, E. Celledoni, M. J. Ehrhardt, D. Murari, B. Owren, C.-B. Schönlieb, "Designing stable
       neural networks using convex analysis and ODEs", Physica D 463 (2024) 134159.
    .. [2] E. Celledoni, M. J. Ehrhardt, C. Etmann, R. I. McLachlan, B. Owren, C.-B. Schönlieb, F. Sherry,
       "Structure-preserving deep learning", Eur. J. Appl. Math. 32 (2021).

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import GradientFlowLayer
    >>> layer = GradientFlowLayer(2, features="vector", rng=torch.Generator().manual_seed(0)).eval()
    >>> x, z = torch.randn(4, 2), torch.randn(4, 2)
    >>> bool(((layer(x) - layer(z)).norm(dim=1) <= (x - z).norm(dim=1) + 1e-6).all())
    True
    >>> layer.lipschitz_bound()
    1.0
    """

    def __init__(self, channels: int, *, hidden: int | None = None, step: float = 1.0,
                 activation: str = "relu", step_control: str = "clamp", contraction: float = 1.0,
                 strong_convexity: float = 0.0, max_substeps: int = 64, constrained: bool = True,
                 **options) -> None:
        super().__init__()
        opts = LayerOptions.parse("GradientFlowLayer", options)
        self.step = check_positive("step", step)
        if step_control not in STEP_CONTROLS:
            raise ValueError(f"step_control={step_control!r} is not known; use one of {STEP_CONTROLS}")
        if isinstance(contraction, bool) or not (isinstance(contraction, (int, float)) and 0 < contraction <= 1):
            raise ValueError(f"contraction must be in (0, 1], got {contraction!r}")
        if isinstance(strong_convexity, bool) or not (isinstance(strong_convexity, (int, float))
                                                      and math.isfinite(strong_convexity) and strong_convexity >= 0):
            raise ValueError(f"strong_convexity must be a finite number >= 0, got {strong_convexity!r}")
        if isinstance(max_substeps, bool) or not isinstance(max_substeps, int) or max_substeps < 1:
            raise ValueError(f"max_substeps must be a positive int, got {max_substeps!r}")
        hidden = channels if hidden is None else hidden
        self.channels, self.hidden, self.features = channels, hidden, opts.features
        self.activation_name = activation
        if activation == "spline":  # learned, monotone and 1-Lipschitz by projection: the same proof holds
            from ._ridge import MonotoneSpline

            self.spline = MonotoneSpline(hidden, knots=41, span=2.0, threshold=1.0, dtype=opts.dtype,
                                         device=opts.device)
            self._sigma = self.spline
        else:
            self._sigma = get_activation(activation)
        self.step_control = step_control
        self.max_substeps = max_substeps
        self.contraction = float(contraction)
        self.strong_convexity = float(strong_convexity)
        self.constrained = bool(constrained)
        self.weight_map = opts.weight(channels, hidden)
        self.bias = opts.bias(hidden)
        self.substeps = 1
        self.on_norms_refreshed()

    def _step_tensor(self, x: torch.Tensor | None, iterate: bool | None):
        """Sub-step actually taken: ``min(h / n, 2 / (||W||_est^2 + 2 mu))`` (a tensor when constrained)."""
        h = self.step / self.substeps
        if not self.constrained:
            return h
        sigma = self.weight_map.estimate(x, iterate=iterate)
        return torch.clamp(2.0 / (sigma * sigma + 2.0 * self.strong_convexity), max=h)

    def get_extra_state(self) -> torch.Tensor:
        """The sub-step count travels with the weights (state_dict, checkpoints, model files)."""
        return torch.tensor([self.substeps], dtype=torch.int64)

    def set_extra_state(self, state) -> None:
        n = int(torch.as_tensor(state).reshape(-1)[0])
        if not 1 <= n <= self.max_substeps:
            raise ValueError(f"sub-step count {n} outside [1, max_substeps={self.max_substeps}]")
        self.substeps = n

    @torch.no_grad()
    def update_substeps(self) -> int:
        """Recompute the number of sub-steps of ``step_control="split"`` from the current estimate."""
        if self.step_control != "split" or not self.constrained or not self.weight_map.has_estimate:
            return self.substeps
        sigma = float(self.weight_map.estimate(iterate=False).item())
        need = self.step * (sigma * sigma + 2.0 * self.strong_convexity) / 2.0
        if math.isfinite(need):
            self.substeps = min(max(1, math.ceil(need)), self.max_substeps)
        else:
            self.substeps = self.max_substeps
        return self.substeps

    def on_norms_refreshed(self) -> None:
        """The sub-step count follows the refreshed estimate."""
        self.update_substeps()

    def halve_step(self) -> None:
        """Half the step, and the square root of the contraction factor (two layers keep the product)."""
        self.step = self.step / 2
        self.contraction = self.contraction ** 0.5
        self.substeps = 1
        self.update_substeps()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, channels=self.channels, features=self.features, weight=self.weight_map.weight)
        w, mu = self.weight_map, self.strong_convexity
        h = self.step / self.substeps
        if self.constrained:  # W x and the norm estimate in one application of W
            wx, sigma = w.matvec_and_estimate(x)
            h = torch.clamp(2.0 / (sigma * sigma + 2.0 * mu), max=h)
        else:
            wx = w.matvec(x)
        for i in range(self.substeps):
            if i > 0:
                wx = w.matvec(x)
            grad = w.adjoint(self._sigma(wx + self.bias))
            if mu:
                grad = grad + mu * x
            x = x - h * grad
        if self.contraction != 1.0:
            x = self.contraction * x
        return x

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified Lipschitz constant of the eval-mode map in the current state (a float).

        Before a convolution's first input the step is not fixed, but calibration of the estimate at the first
        size (:class:`invstable.nn.WeightMap`) makes every sub-step satisfy ``h (||W||^2 + 2 mu) <= 2`` there:
        each step is then non-expansive.
        """
        check_finite_weights(self)
        mu = self.strong_convexity
        if self.constrained and not self.weight_map.has_estimate:
            return self.contraction
        sigma = self.weight_map.norm_bound()
        h = self.step / self.substeps if not self.constrained else float(self._step_tensor(None, False))
        per_step = max(abs(1 - h * mu), abs(1 - h * (sigma * sigma + mu)))
        return self.contraction * per_step ** self.substeps

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, hidden={self.hidden}, step={self.step}, "
                f"activation={self.activation_name!r}, step_control={self.step_control!r}, "
                f"contraction={self.contraction}, strong_convexity={self.strong_convexity}, "
                f"constrained={self.constrained}")
