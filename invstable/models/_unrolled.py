"""Unrolled learned regularised inverses: data-consistency steps alternating with stable flows."""

from __future__ import annotations

import copy
import math
import pathlib  # noqa: F401 (annotation)
import warnings
import weakref

import torch
from deepinv.models import Reconstructor
from torch import nn

from ..nn import prolong as prolong_network
from ..nn import Resampled, refresh_spectral_norms, stable_network, time_smoothness
from ..operators import as_operator, norm_bound
from ..operators._base import state_version
from ..operators._check import verify_adjoint
from ._certificate import DTYPES, SAFETY, Certificate, measure_rounding, unit_roundoff
from ._denoiser import DenoiserBlock
from ._initial import (apply_filter, chebyshev_basis, chebyshev_coefficients, combine_basis,
                       filter_norm_bound)

INITS = ("tikhonov", "learned", "zero")
#: names of the power-iteration buffers (derived from the weights; not stored in model files)
VECTORS = ("._u", "._v")

#: model family -> stable_network family of its regularising blocks
FAMILIES = {
    "gradient_flow": "gradient_flow",
    "hamiltonian": "hamiltonian",
    "antisymmetric": "antisymmetric",
    "dense": "dense",
    "unconstrained": "resnet",
}

#: layer options each model family uses unless the caller gives its own
DEFAULT_OPTIONS = {
    "gradient_flow": {"activation": "relu"},
    # a small step norm keeps the worst-case bound of the symplectic blocks close to 1 per layer
    "hamiltonian": {"scheme": "verlet", "max_step_norm": 0.05},
    "antisymmetric": {"gamma": 0.1, "max_norm": 0.1},
    "dense": {"max_norm": 0.05},
    "unconstrained": {"activation": "relu"},
}


#: relative difference between the model's operator and a deepinv physics on probe images below which the two are
#: taken as the same operator (float32 FFT and convolution implementations of one blur differ by ~1e-7)
SAME_OPERATOR_RTOL = 1e-4
#: physics -> {operator -> the state in which the two were found the same} (kept beside them, dropped with them)
_SAME_PHYSICS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inner(block: nn.Module) -> nn.Module:
    """The stable network of a block (inside its resampling for a coarse-scale block)."""
    return block.network if isinstance(block, Resampled) else block


class UnrolledInverse(Reconstructor):
    r"""Learned regularised inverse: ``K`` data-consistency steps, each followed by a stable network.

    The state is a stack of ``channels`` feature maps whose first ``image_channels`` are the image
    :math:`x`; the others carry memory from one iteration to the next. Iteration :math:`k` is

    .. math::

        x \leftarrow x - \tau_k A^\top (A x - y), \qquad s \leftarrow R_k(s),

    with :math:`\tau_k = \tau_{\max}\,\mathrm{sigmoid}(\theta_k)`, :math:`\tau_{\max} = f \cdot 2 / \|A\|^2`
    (``max_step = f``, a certified ``||A||`` from :func:`invstable.operators.norm_bound`) and :math:`R_k` a
    network of the chosen family from :func:`invstable.nn.stable_network`. The model starts from
    :math:`s = 0` with, in its image channels, the first guess :math:`x_0 = p(A^\top A) A^\top y`
    (``init="tikhonov"``: ``p`` interpolates :math:`1/(\lambda + \alpha_0)` on :math:`[0, \|A\|^2]`
    at ``init_degree + 1`` Chebyshev nodes, a linear map close to Tikhonov's with :math:`\alpha_0` =
    ``init_alpha``), the same filter with learned Chebyshev coefficients (``init="learned"``: it starts as
    the "tikhonov" one and is trained with the rest; its norm is certified exactly as that one's) or
    :math:`x_0 = 0` (``init="zero"``), and returns the image channels of the final state.

    Parameters
    ----------
    operator : deepinv.physics.LinearPhysics or anything :func:`invstable.operators.as_operator` takes
    family : {"gradient_flow", "hamiltonian", "antisymmetric", "dense", "unconstrained"}, default "gradient_flow"
        Family of the regularising blocks; "unconstrained" is a plain ResNet (the baseline).
    iterations : int, default 8
        ``K``.
    channels : int, default 8
        Width of the state (image channels included); with ``denoiser``, ``image_channels``.
    depth : int, default 2
        Layers per regularising block.
    step : float, default 1.0
        Step ``h`` of the layers.
    max_step : float in (0, 1], default 0.5
        ``f`` above: the data-consistency step never exceeds ``f`` times the stability limit ``2 / ||A||^2``.
    image_channels : int, default 1
    image_shape : tuple of int, optional
        ``(C, H, W)`` of one image; default: fixed by the first input. The model then refuses other sizes
        (its norms and certificate hold for this one). Needed before the first input only for an operator
        without its own ``norm_bound()`` (its norm is then estimated by power iteration on that shape).
    scales : sequence of int, default (1,)
        Block ``k`` runs on a grid ``scales[k % len(scales)]`` times coarser, through pixel unshuffle and
        shuffle (:class:`invstable.nn.Resampled`: isometries, so its bound is the network's); e.g. ``(1, 2)``
        alternates the full and the half resolution, for a wider receptive field at the same cost.
    anchor : float in [0, 1], default 0
        Weight ``a`` of the first guess added to the image channels after every block:
        :math:`x \leftarrow R_k(s)_x + a\,x_0`. With blocks contracting by ``c`` and ``a = 1 - c`` the contraction
        pulls the image towards the first guess instead of towards zero; the bound gains ``a B_0`` per iteration.
    seed : int, default 0
        Seed of the initial weights.
    denoiser : torch.nn.Module, optional
        A deepinv denoiser (``deepinv.models.DnCNN(pretrained=None)``, ``DRUNet``...) used, shared by every
        iteration, as the regularising block instead of a stable network (:class:`DenoiserBlock`), to compare
        with the certified families in the same scheme. **Such a model has no certificate**:
        :meth:`lipschitz_bound` is ``inf`` (with a warning), and it cannot be saved as an invstable model file.
    denoiser_sigma : float
        The noise level given to ``denoiser`` at each step; required with ``denoiser``.
    **options
        Options of the layers (see :func:`invstable.nn.stable_network`); each family has defaults
        (:data:`DEFAULT_OPTIONS`).

    Notes
    -----
    Lipschitz bound of :math:`y \mapsto x`. The data-consistency step acts on the state as
    :math:`s \mapsto (I - \tau_k E A^\top A E^\top) s + \tau_k E A^\top y` with :math:`E` the embedding of the
    image channels; its linear part is symmetric with eigenvalues in :math:`[1 - \tau_k\|A\|^2, 1]`, so it has
    norm :math:`d_k = \max(1, \tau_k\|A\|^2 - 1)` (:math:`= 1` when :math:`\tau_k \le 2/\|A\|^2`) and
    :math:`y` enters with gain :math:`\tau_k\|A\|`. With :math:`L_k` the certified bound of :math:`R_k`, the
    bound :math:`B_K` of the whole map follows the recursion

    .. math::

        B_0 = \max_{0 \le s \le \|A\|} |s\,p(s^2)| \ (0 \text{ for } x_0 = 0), \qquad B_k = L_k \,(d_k B_{k-1} + \tau_k \|A\|) + a B_0,

    and the projection onto the image channels has norm 1. For the gradient-flow family
    (:math:`L_k \le 1`) and ``max_step <= 0.5`` (:math:`\tau_k \le 1/\|A\|^2`) this is at most
    :math:`B_0 + K / \|A\|`.

    The model is a :class:`deepinv.models.Reconstructor`: ``model(y, physics)`` runs as deepinv's models do
    (``deepinv.test``, ``deepinv.Trainer``), where ``physics`` must be the operator it was trained for (the same
    object, or one that gives the same measurements; :meth:`with_operator` binds a copy to another one).

    Examples
    --------
    >>> import torch
    >>> from invstable.operators import Blur, gaussian_kernel
    >>> from invstable.models import UnrolledInverse
    >>> op = Blur(gaussian_kernel(1.0), image_size=16)
    >>> model = UnrolledInverse(op, iterations=3, channels=4).eval()
    >>> model(torch.rand(2, 1, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
    >>> model.lipschitz_bound() <= 1 / (2 * 0.02 ** 0.5) * 1.01 + 3.0
    True
    """

    #: what ``family=None`` and ``channels=None`` mean (a stable family; ``None`` leaves room for ``denoiser=``)
    DEFAULT_FAMILY = "gradient_flow"
    DEFAULT_CHANNELS = 8

    def __init__(self, operator, *, family: str | None = None, iterations: int = 8, channels: int | None = None,
                 depth: int = 2, step: float = 1.0, max_step: float = 0.5, image_channels: int = 1,
                 image_shape: tuple[int, ...] | None = None, init: str = "tikhonov", init_alpha: float = 0.02,
                 init_degree: int = 30, anchor: float = 0.0, scales=(1,), seed: int = 0, denoiser=None,
                 denoiser_sigma: float | None = None, **options) -> None:
        super().__init__()
        if denoiser is not None:
            if family not in (None, "denoiser"):
                raise ValueError(f"family={family!r} and denoiser= both choose the regularising blocks; pass one")
            if options:
                raise ValueError(f"layer options {sorted(options)} do not apply to a denoiser block; drop them")
            if denoiser_sigma is None:
                raise ValueError("denoiser= needs denoiser_sigma=, the noise level the denoiser is asked to remove "
                                 "at each step (e.g. a few times the noise level of the measurements)")
            if channels not in (None, image_channels):
                raise ValueError(f"a denoiser block works on the {image_channels} image channel(s) only; leave "
                                 f"channels unset (got channels={channels!r})")
            family, channels = "denoiser", image_channels
        elif denoiser_sigma is not None:
            raise ValueError("denoiser_sigma is the noise level given to denoiser=; pass a denoiser or drop it")
        family = self.DEFAULT_FAMILY if family is None else family
        channels = self.DEFAULT_CHANNELS if channels is None else channels
        if family not in FAMILIES and family != "denoiser":
            raise ValueError(f"family={family!r} is not known; valid families: {sorted(FAMILIES)}")
        for name, value in (("iterations", iterations), ("channels", channels), ("depth", depth),
                            ("image_channels", image_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if channels < image_channels:
            raise ValueError(f"channels ({channels}) must be at least image_channels ({image_channels})")
        if not (isinstance(max_step, (int, float)) and 0 < max_step <= 1):
            raise ValueError(f"max_step must be in (0, 1] (a fraction of the limit 2 / ||A||^2), got {max_step!r}")
        if init not in INITS:
            raise ValueError(f"init={init!r} is not known; use one of {INITS}")
        if not (isinstance(init_alpha, (int, float)) and init_alpha > 0 and math.isfinite(init_alpha)):
            raise ValueError(f"init_alpha must be a positive number, got {init_alpha!r}")
        if isinstance(init_degree, bool) or not isinstance(init_degree, int) or not 1 <= init_degree <= 200:
            raise ValueError(f"init_degree must be an int in [1, 200], got {init_degree!r}")
        if not (isinstance(anchor, (int, float)) and 0 <= anchor <= 1):
            raise ValueError(f"anchor must be a weight in [0, 1], got {anchor!r}")
        if anchor and init == "zero":
            raise ValueError("anchor pulls the image towards the first guess: it needs init='tikhonov' or 'learned'")
        self.anchor = float(anchor)
        try:
            self.scales = tuple(int(f) for f in scales)
        except (TypeError, ValueError):
            raise ValueError(f"scales must be a sequence of positive ints such as (1, 2), got {scales!r}") from None
        if not self.scales or any(f < 1 or f != g for f, g in zip(self.scales, scales)):
            raise ValueError(f"scales must be a sequence of positive ints such as (1, 2), got {scales!r}")
        self.init, self.init_alpha, self.init_degree = init, float(init_alpha), init_degree
        self._filter_cache = None
        self._rounding_cache: dict = {}  # measured rounding rates, by weights, operator, size (see certificate())
        if init == "learned":
            # learned correction of the Chebyshev coefficients of the Tikhonov filter (zero: that filter)
            self.filter_correction = nn.Parameter(torch.zeros(init_degree + 1, dtype=torch.float64))
        self.operator = as_operator(operator)
        self.family = family
        self.iterations, self.channels, self.depth = iterations, channels, depth
        self.image_channels = image_channels
        self.step, self.max_step, self.seed = float(step), float(max_step), int(seed)
        self.image_shape = None if image_shape is None else tuple(int(n) for n in image_shape)
        self.options = {**DEFAULT_OPTIONS.get(family, {}), **options}
        rng = torch.Generator().manual_seed(self.seed)
        self.blocks = nn.ModuleList()
        if denoiser is not None:  # one denoiser, shared by every iteration (as a plug-and-play prior is)
            block = DenoiserBlock(denoiser, sigma=denoiser_sigma, image_channels=image_channels)
            self.blocks.extend([block] * iterations)
        for k in range(iterations if denoiser is None else 0):
            f = self.scales[k % len(self.scales)]  # block k runs f times coarser (pixel unshuffle: an isometry)
            net = stable_network(FAMILIES[family], channels=channels * f * f, depth=depth, step=self.step, rng=rng,
                                 **self.options)
            self.blocks.append(net if f == 1 else Resampled(net, f))
        # tau_k = tau_max * sigmoid(theta_k), starting at 0.88 tau_max
        self.step_logits = nn.Parameter(torch.full((iterations,), 2.0))

    # ------------------------------------------------------------------ the map y -> x
    def operator_norm(self) -> float:
        """Certified upper bound on ``||A||`` (see :func:`invstable.operators.norm_bound`)."""
        norm = norm_bound(self.operator, self.image_shape)
        if not norm > 0:
            raise ValueError(f"the operator {self.operator!r} has norm {norm}: it maps every image to zero, so "
                             "there is nothing to reconstruct from its measurements")
        return norm

    def _tikhonov_filter(self):
        """``(coefficients, top, certified norm)`` of the Tikhonov-Chebyshev filter (cached per ``||A||``)."""
        norm_a = self.operator_norm()
        if self._filter_cache is None or self._filter_cache[0] != norm_a:
            top = norm_a ** 2
            coef = chebyshev_coefficients(self.init_alpha, self.init_degree, top)
            self._filter_cache = (norm_a, coef, top, filter_norm_bound(coef, top, norm_a))
        return self._filter_cache[1:]

    def _filter_coefficients(self):
        """``(coefficients, top)`` of the first guess ``p(A^T A) A^T y``: a NumPy array for the fixed filter,
        a tensor (differentiable) for the learned one."""
        coef, top, _ = self._tikhonov_filter()
        if self.init == "learned":
            base = self.filter_correction.new_tensor(coef)  # 31 numbers: the correction's dtype and device
            coef = base + self.filter_correction
        return coef, top

    def _filter(self):
        """``(coefficients, top, certified norm)`` of the first guess (the norm is recomputed for a learned one)."""
        if self.init != "learned":
            return self._tikhonov_filter()
        coef, top = self._filter_coefficients()
        coef = coef.detach().cpu().numpy()
        return coef, top, filter_norm_bound(coef, top, self.operator_norm())

    def first_guess(self, y: torch.Tensor) -> torch.Tensor:
        """``x_0 = p(A^T A) A^T y`` (zeros for ``init="zero"``).

        When ``y`` needs no gradient (training, reconstruction) the ``init_degree`` applications of ``A^T A``
        run without autograd: for the fixed filter nothing depends on the weights, for the learned one only the
        weighted sum of the Chebyshev basis does. Otherwise (a gradient in ``y``: stability searches) the
        filter is applied by Clenshaw's recurrence with autograd.
        """
        op = self.operator
        if self.init == "zero":
            return torch.zeros_like(op.A_adjoint(y))
        coef, top = self._filter_coefficients()
        if y.requires_grad:
            return apply_filter(op, y, coef.to(y.dtype) if isinstance(coef, torch.Tensor) else coef, top)
        with torch.no_grad():
            if not isinstance(coef, torch.Tensor):
                return apply_filter(op, y, coef, top)
            basis = chebyshev_basis(op, y, self.init_degree, top)
        return combine_basis(basis, coef)

    def steps(self) -> torch.Tensor:
        """The data-consistency steps ``tau_k`` (a differentiable tensor of length ``K``)."""
        limit = 2.0 / self.operator_norm() ** 2
        return self.max_step * limit * torch.sigmoid(self.step_logits)

    def forward(self, y: torch.Tensor, physics=None, **kwargs) -> torch.Tensor:
        """Reconstruct ``x`` from measurements ``y`` (batched, as the operator takes them).

        ``physics`` (deepinv's ``model(y, physics)``) may be given: it must be the operator the model was trained
        for (the same object, or a deepinv physics that gives the same measurements on probe images); a
        ``ValueError`` says how to use another one (:meth:`with_operator`).
        """
        if kwargs:
            raise TypeError(f"UnrolledInverse is called as model(y) or model(y, physics); got unexpected keyword "
                            f"argument(s) {sorted(kwargs)}")
        op = self.operator
        if physics is not None:
            self._check_physics(physics, y)
        aty = op.A_adjoint(y)
        if aty.ndim < 3 or aty.shape[1] != self.image_channels:
            raise ValueError(f"A^T y has shape {tuple(aty.shape)}; expected (B, {self.image_channels}, ...): "
                             f"the model was built for {self.image_channels} image channel(s)")
        if self.image_shape is None:
            self.image_shape = tuple(aty.shape[1:])
        elif tuple(aty.shape[1:]) != self.image_shape:
            # ||A||, the steps, the first guess and the layer norms are certified for one image size
            raise ValueError(f"this model is built and certified for images of shape {self.image_shape}, but A^T y "
                             f"has shape {tuple(aty.shape[1:])}; build a model for that size")
        # a wrong adjoint makes every data step silently wrong: measured once per operator and shape (cached)
        verify_adjoint(op, in_shape=self.image_shape, dtype=aty.dtype, device=aty.device)
        c = self.image_channels
        taus = self.steps().to(aty)
        s = aty.new_zeros((aty.shape[0], self.channels) + tuple(aty.shape[2:]))
        if self.init != "zero":
            x0 = self.first_guess(y).to(s.dtype)
            s = torch.cat([x0, s[:, c:]], dim=1)
        for k, block in enumerate(self.blocks):
            x = s[:, :c].to(aty.dtype)  # the operator runs in the measurement's precision (also under autocast)
            x = x - taus[k] * (op.A_adjoint(op.A(x)) - aty)
            s = block(torch.cat([x, s[:, c:]], dim=1))
            if self.anchor:  # contractive blocks then pull towards the first guess instead of towards zero
                s = torch.cat([s[:, :c] + self.anchor * x0.to(s.dtype), s[:, c:]], dim=1)
        return s[:, :c]

    # ------------------------------------------------------------------ deepinv physics
    def _check_physics(self, physics, y: torch.Tensor) -> None:
        """Accept ``physics`` if it is this model's operator or gives the same measurements on two probe images
        (remembered per physics and state); otherwise a ValueError that says what to do."""
        if physics is self.operator:
            return
        shape = self.image_shape
        if shape is None:
            shape = tuple(self.operator.A_adjoint(y).shape[1:])
        key = (shape, y.dtype, str(y.device), state_version(self.operator),
               state_version(physics) if isinstance(physics, nn.Module) else None)
        try:
            cache = _SAME_PHYSICS.setdefault(physics, weakref.WeakKeyDictionary())
            if cache.get(self.operator) == key:
                return
        except TypeError:  # an object that cannot be weakly referenced: check it every time
            cache = None
        probe = torch.randn((2,) + shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        probe = probe.to(device=y.device, dtype=y.dtype)
        reason = None
        with torch.no_grad():
            want = self.operator.A(probe)
            try:
                got = physics.A(probe)
            except Exception as err:  # noqa: BLE001 (any failure means: not this model's operator)
                reason = f"its A fails on images of shape {shape} ({type(err).__name__}: {err})"
            else:
                if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                    reason = (f"it maps images of shape {shape} to {tuple(getattr(got, 'shape', ()))[1:]}, the "
                              f"model's operator to {tuple(want.shape[1:])}")
                else:
                    diff = float((got - want).norm() / want.norm().clamp_min(torch.finfo(want.dtype).tiny))
                    if not diff <= SAME_OPERATOR_RTOL:
                        reason = f"its measurements of probe images differ from the model's by {diff:.3g} (relative)"
        if reason is not None:
            raise ValueError(
                f"this UnrolledInverse was trained for its operator {self.operator!r} and is bound to it; the "
                f"physics {type(physics).__name__} passed is another operator: {reason}. Call model(y) (or "
                f"model(y, model.operator)) to use its own operator, model.with_operator(physics) for a copy bound to "
                f"that physics (its certificate is recomputed for it; its accuracy is not: it was trained for the "
                f"other operator), or the 'universal' model, which serves any operator")
        if cache is not None:
            cache[self.operator] = key

    def with_operator(self, operator) -> "UnrolledInverse":
        r"""A copy of this model (same weights) bound to another operator.

        Every quantity that depends on the operator follows the new one: ``||A||``, the data-consistency steps
        :math:`\tau_k = f\,\mathrm{sigmoid}(\theta_k)\, 2 / \|A\|^2`, the first-guess filter on
        :math:`[0, \|A\|^2]` and therefore :meth:`lipschitz_bound`, which certifies the copy for the new operator.
        Its accuracy is another matter: the weights were trained for the old one.

        Parameters
        ----------
        operator : deepinv.physics.LinearPhysics or anything :func:`invstable.operators.as_operator` takes
            It must act on images of the model's shape (``image_shape``).

        Raises
        ------
        ValueError
            If the operator does not take images of the model's shape.
        """
        new_op = as_operator(operator)
        if self.image_shape is not None:
            try:
                with torch.no_grad():
                    new_op.A(torch.zeros((1,) + self.image_shape))
            except Exception as err:  # noqa: BLE001
                raise ValueError(f"this model is built for images of shape {self.image_shape}, which the operator "
                                 f"{type(new_op).__name__} does not take ({type(err).__name__}: {err}); build a "
                                 f"model for that operator's image size") from None
        # the memo hands the new operator to the copy in place of a copy of the old one
        new = copy.deepcopy(self, {id(self.operator): new_op})
        new._filter_cache = None
        return new

    # ------------------------------------------------------------------ certificate
    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Certified upper bound on ``||model(y1) - model(y2)|| / ||y1 - y2||`` (eval-mode map).

        ``inf`` for the "unconstrained" family and for a model with a deepinv denoiser block (no certificate,
        with a warning that says so). See the class notes for the recursion.
        """
        if self.family == "denoiser":
            warnings.warn(f"this UnrolledInverse regularises with the deepinv denoiser "
                          f"{type(self.blocks[0].denoiser).__name__}, which has no certified Lipschitz bound: "
                          "lipschitz_bound() is inf (no certificate). Use a stable family for a certified model",
                          UserWarning, stacklevel=3)  # 3: through torch.no_grad's wrapper to the caller
            return math.inf
        if self.family == "unconstrained":
            return math.inf
        norm_a = self.operator_norm()
        first = self._filter()[2] if self.init != "zero" else 0.0
        bound = first
        for tau, block in zip(self.steps().double().tolist(), self.blocks):
            damp = max(1.0, tau * norm_a ** 2 - 1.0)
            bound = block.lipschitz_bound() * (damp * bound + tau * norm_a) + self.anchor * first
        return bound

    def certificate(self, dtype: torch.dtype | None = None, *, probes: torch.Tensor | None = None,
                    safety: float = SAFETY) -> Certificate:
        r"""The certificate of what the model computes in floating point (see :class:`Certificate`).

        ``lipschitz`` is :meth:`lipschitz_bound`, ``additive`` is 0 (a fixed number of operations), and the
        rounding term bounds the floating-point error :math:`\|e(y)\| \le \rho \|y\| + \epsilon_0` of the
        model run in ``dtype``, so that per sample

        .. math::

            \|\hat R(y_1) - \hat R(y_2)\| \le L \|y_1 - y_2\| + \rho (\|y_1\| + \|y_2\|) + 2 \epsilon_0

        (:meth:`Certificate.bound`). :math:`\rho` and :math:`\epsilon_0` are **measured**, not proven: the
        largest error of a float32 copy of the model against a float64 copy over measurements of random and
        smooth images, Gaussian measurements, each at scales from 0.1 to 10, and ``probes`` when given (e.g.
        validation measurements), times ``safety``; for float64 that figure is scaled by the ratio of the unit
        roundoffs (forward rounding errors are linear in it). The measurement costs 18 batched forward passes (a
        second or two at 32 x 32; minutes at most for the shipped 128 x 128 models on one CPU thread) and is cached
        per weights, operator, image size and safety factor; docs/models.md ("Certificates in floating point")
        gives measured figures.

        Parameters
        ----------
        dtype : torch.float32 or torch.float64, optional
            The dtype the model runs in; default: that of its weights.
        probes : torch.Tensor, optional
            Extra measurements (batched, as the operator produces them) at which the error is measured.
        safety : float, default :data:`invstable.models._certificate.SAFETY`

        Raises
        ------
        ValueError
            If the image size is not known yet, or for a dtype other than float32 and float64.
        """
        bound = self.lipschitz_bound()
        if not math.isfinite(bound):
            return Certificate(bound)
        dtype = self.step_logits.dtype if dtype is None else dtype
        if dtype not in DTYPES:
            raise ValueError(f"the rounding term is measured for {DTYPES}, got dtype={dtype!r}")
        if self.image_shape is None:
            raise ValueError("the image size is not known yet; call the model on a measurement first (or build it "
                             "with image_shape=)")
        if not (isinstance(safety, (int, float)) and math.isfinite(safety) and safety >= 1):
            raise ValueError(f"safety must be a number >= 1 (a factor on the measured error), got {safety!r}")
        key = (self.image_shape, float(safety), state_version(self), id(self.operator),
               state_version(self.operator) if isinstance(self.operator, nn.Module) else None)
        if self._rounding_cache.get("key") != key:
            self._rounding_cache = {"key": key, "rate": self._measure_rounding(safety)}
        rate = self._rounding_cache["rate"]
        if probes is not None:  # the larger of the cached measurement and the one at the probes
            rate = tuple(max(a, b) for a, b in zip(rate, self._measure_rounding(safety, probes)))
        return self._with_rounding(bound, rate, dtype)

    @staticmethod
    def _with_rounding(bound: float, rate: tuple[float, float], dtype: torch.dtype) -> Certificate:
        scale = unit_roundoff(dtype) / unit_roundoff(torch.float32)  # measured in float32 (1 for float32)
        return Certificate(bound, 0.0, rate[0] * scale, rate[1] * scale, dtype)

    def _measure_rounding(self, safety: float, probes: torch.Tensor | None = None) -> tuple[float, float]:
        """``(rho, epsilon_0)`` of a float32 copy of the model against a float64 copy (see :meth:`certificate`), at
        the built-in measurements or, when given, at ``probes`` only."""
        low = copy.deepcopy(self).eval()  # as the user runs it (a learned filter keeps its float64 coefficients)
        if self.step_logits.dtype != torch.float32:
            low.float()
        high = copy.deepcopy(self).double().eval()
        low._rounding_cache = high._rounding_cache = {}
        device = self.step_logits.device
        gen = torch.Generator().manual_seed(0)
        count = 4
        shape = (count,) + self.image_shape
        memo: dict = {}

        def reference(y):  # the float64 output, once per batch
            if memo.get("y") is not y:
                memo["y"], memo["out"] = y, high(y)
            return memo["out"]

        def run(y):
            out = low(y.float()).double()
            if self.init != "learned":
                return out
            # a learned filter runs as a weighted Chebyshev basis without autograd and by Clenshaw's recurrence
            # with it (a gradient in y: the stability searches); their rounding differs: the farther one counts
            other = low(y.float().requires_grad_()).detach().double()
            ref = reference(y)
            farther = (other - ref).flatten(1).norm(dim=1) > (out - ref).flatten(1).norm(dim=1)
            return torch.where(farther.view((-1,) + (1,) * (out.ndim - 1)), other, out)

        if probes is not None:
            batches = [probes.detach().to(device=device, dtype=torch.float64)]
            return measure_rounding(run, reference, batches, safety=safety)
        with torch.no_grad():
            rough = torch.rand(shape, generator=gen, dtype=torch.float64)
            coarse = torch.rand(shape[:-2] + (max(1, shape[-2] // 8), max(1, shape[-1] // 8)), generator=gen,
                                dtype=torch.float64)
            smooth = torch.nn.functional.interpolate(coarse, size=shape[-2:], mode="bilinear", align_corners=False)
            batches = [high.operator.A(x.to(device)) for x in (rough, smooth)]
            size = batches[0].flatten(1).norm(dim=1).view((-1,) + (1,) * (batches[0].ndim - 1))
            white = torch.randn(batches[0].shape, generator=gen, dtype=torch.float64).to(device)
            white = white * size / white.flatten(1).norm(dim=1).view(size.shape)  # Gaussian, as large as A x
            batches += [batches[0] + 0.05 * white, white]  # noisy measurements, pure noise
            scales = 10.0 ** torch.linspace(-1, 1, count, dtype=torch.float64).to(device)
            batches += [b * scales.view((-1,) + (1,) * (b.ndim - 1)) for b in list(batches)]
        return measure_rounding(run, reference, batches, safety=safety)

    # ------------------------------------------------------------------ training aids
    def time_smoothness(self) -> torch.Tensor:
        """Sum over the blocks of :func:`invstable.nn.time_smoothness` (zero for one-layer blocks)."""
        terms = [time_smoothness(_inner(b)) for b in self.blocks
                 if self.family not in ("dense", "denoiser") and self.depth > 1]
        if not terms:
            return self.step_logits.new_zeros(())
        return torch.stack(terms).sum()

    def prolong(self) -> "UnrolledInverse":
        """Multi-level training: a model whose blocks have twice the layers at half the step (same map
        up to the discretisation error; see :func:`invstable.nn.prolong`)."""
        if self.family == "denoiser":
            raise ValueError("prolong() refines stable networks; a model with a denoiser block has none")
        new = type(self).from_config(self.config(), operator=self.operator)
        new.depth, new.step = 2 * self.depth, self.step / 2
        new.blocks = nn.ModuleList(prolong_network(b) if not isinstance(b, Resampled)
                                   else Resampled(prolong_network(b.network), b.factor) for b in self.blocks)
        with torch.no_grad():
            new.step_logits.copy_(self.step_logits)
            if self.init == "learned":
                new.filter_correction.copy_(self.filter_correction)
        return new.to(self.step_logits.device)

    @torch.no_grad()
    def refresh(self, *, reseed: bool = False) -> "UnrolledInverse":
        """Converge the power iterations of every constrained layer (after loading or editing weights), at
        the model's image size once it is known; ``reseed`` starts them from the fixed seed vector (the
        result is then a function of the weights alone)."""
        for block in self.blocks:
            if isinstance(block, DenoiserBlock):
                continue  # no power iterations in a denoiser of deepinv
            f = block.factor if isinstance(block, Resampled) else 1
            size = None if self.image_shape is None else tuple(n // f for n in self.image_shape[-2:])
            refresh_spectral_norms(block, input_size=size, reseed=reseed)
        return self

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict:
        """Everything needed to rebuild the model except its weights (the operator as its registry config)."""
        if self.family == "denoiser":
            raise ValueError(f"a model with the deepinv denoiser block {type(self.blocks[0].denoiser).__name__} has "
                             "no invstable configuration (the denoiser is not part of invstable's model format); "
                             "keep it with torch.save(model.state_dict(), path)")
        return {
            "class": "UnrolledInverse", "family": self.family, "iterations": self.iterations,
            "channels": self.channels, "depth": self.depth, "step": self.step, "max_step": self.max_step,
            "image_channels": self.image_channels,
            "image_shape": None if self.image_shape is None else list(self.image_shape),
            "init": self.init, "init_alpha": self.init_alpha, "init_degree": self.init_degree, "anchor": self.anchor,
            "scales": list(self.scales),
            "seed": self.seed, "options": dict(self.options),
        }

    @classmethod
    def from_config(cls, config: dict, *, operator) -> "UnrolledInverse":
        """Build an untrained model from :meth:`config` and an operator."""
        cfg = dict(config)
        cfg.pop("class", None)
        options = cfg.pop("options", {})
        shape = cfg.pop("image_shape", None)
        return cls(operator, image_shape=None if shape is None else tuple(shape), **cfg, **options)

    def weights(self, *, vectors: bool = True) -> dict[str, torch.Tensor]:
        """The learned state (parameters and, with ``vectors``, the power-iteration warm starts), without the
        operator's tensors."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith("operator.") and (vectors or not k.endswith(VECTORS))}

    def save(self, path, **metadata) -> "pathlib.Path":
        """Write the model (weights, configuration, operator configuration) to a safetensors file,
        atomically; ``metadata`` (JSON-serialisable) is stored beside it. Read back with
        :func:`invstable.load_model`.

        The power-iteration vectors (as large as the image per layer) are not stored: this model's are first
        re-derived from its weights (:meth:`refresh` with ``reseed=True``, which changes its outputs only
        within the accuracy of the norm estimates) and :func:`invstable.load_model` derives the same ones, so
        the loaded model gives the same outputs as this one.
        """
        from ._io import save_model

        return save_model(self, path, metadata=metadata)

    def extra_repr(self) -> str:
        return (f"family={self.family!r}, iterations={self.iterations}, channels={self.channels}, "
                f"depth={self.depth}, step={self.step}, max_step={self.max_step}")
