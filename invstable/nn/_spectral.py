"""Weight maps and their norms: exact values, certified bounds and warm-started power iteration.

A layer's linear weight map ``W`` (a matrix acting on vectors, or a ``k x k`` convolution acting on images of a
given size) enters every stability constraint of :mod:`invstable.nn` through its norm ``||W||_2``. (In
invstable "operator" always means the forward model ``A`` of ``y = A x + noise``; inside layers the linear map is
a *weight map*.) Two numbers are kept apart:

* the *estimate* used in the forward pass: warm-started power iteration on ``W^T W`` (one iteration per
  training step), which approaches ``||W||`` from below, inflated by a stated safety margin
  (:data:`SAFETY_MARGIN`); it is cheap, stays on the device and never synchronises with the host;
* the *certified value* used by ``lipschitz_bound()``: the exact norm computed densely in float64 (singular
  values of the matrix, or of the Fourier symbol of the convolution on a grid on which the zero-padded
  convolution is a compression of a circular one). It is an upper bound whatever the state of the power
  iteration, so a certificate never depends on the iteration having converged.

:class:`WeightMap` is the one constraint every layer family composes: a learnable weight, its estimate (for the
step or scale the layer takes) and its certified norm (for the bound). A family adds only its step rule and its
Lipschitz formula.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SAFETY_MARGIN",
    "INIT_ITERATIONS",
    "WeightMap",
    "DenseWeight",
    "ConvWeight",
    "matrix_norm",
    "conv_operator_norm",
    "conv_norm_bound",
]

#: Relative safety margin of the power-iteration estimate: the value used in a constraint is
#: ``(1 + SAFETY_MARGIN) * ||W v||`` with ``v`` the warm-started unit vector. Power iteration approaches the
#: norm from below; with :data:`INIT_ITERATIONS` iterations at initialisation (or at a new input size) and one
#: per training step afterwards, the tests check that the inflated estimate covers the exact norm.
SAFETY_MARGIN = 0.05

#: Iterations run when the warm-start vector is created (initialisation, new input size) and by
#: :func:`refresh_spectral_norms` (export).
INIT_ITERATIONS = 100

_TINY = 1e-30
# float64 rounding slack on certified norms (relative)
_ROUNDING = 1e-9


def _hash_vector(shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A deterministic, pseudo-random unit-norm start vector built on the device (no RNG, no host copy)."""
    n = math.prod(shape)
    i = torch.arange(1, n + 1, dtype=torch.float64, device=device)
    v = torch.frac(torch.sin(i * 12.9898 + 78.233) * 43758.5453) - 0.5
    v = v / v.norm()
    return v.reshape(shape).to(dtype)


def matrix_norm(weight: torch.Tensor) -> float:
    """Spectral norm of a matrix, computed exactly (SVD in float64) and rounded up.

    Parameters
    ----------
    weight : torch.Tensor, shape (m, n)

    Returns
    -------
    float
        ``||weight||_2`` times ``1 + 1e-9`` (float64 rounding slack); ``math.inf`` for non-finite entries.
    """
    w = weight.detach().to(torch.float64)
    if not torch.isfinite(w).all():
        return math.inf
    if w.numel() == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(w, ord=2).item()) * (1 + _ROUNDING)


def _symbol_norms(kernel: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Largest singular value of the Fourier symbol of ``kernel`` at every frequency of ``grid``."""
    c_out, c_in, kh, kw = kernel.shape
    n1, n2 = grid
    ph, pw = kh // 2, kw // 2
    big = torch.zeros(c_out, c_in, n1, n2, dtype=torch.float64, device=kernel.device)
    for a in range(kh):
        for b in range(kw):
            # taps that wrap onto the same position (grid smaller than the kernel) add up
            big[:, :, (a - ph) % n1, (b - pw) % n2] += kernel[:, :, a, b]
    sym = torch.fft.fft2(big).permute(2, 3, 0, 1)  # (n1, n2, c_out, c_in)
    return torch.linalg.svdvals(sym)[..., 0]


def conv_operator_norm(
    kernel: torch.Tensor, input_size: tuple[int, int], *, padding_mode: str = "zeros"
) -> float:
    """Operator norm of a stride-1 'same' convolution at a given input size (certified, float64).

    Parameters
    ----------
    kernel : torch.Tensor, shape (C_out, C_in, k, k), k odd
    input_size : (H, W)
    padding_mode : {"zeros", "circular"}

    Returns
    -------
    float
        For circular padding, the exact norm: the largest singular value of the ``C_out x C_in`` symbol
        matrices at the ``H x W`` DFT frequencies (Sedghi, Gupta & Long 2019, Theorem 6). For zero padding, the
        exact norm of the explicit matrix when ``max(C_in, C_out) H W <= DENSE_LIMIT``; above, the circular
        norm on the ``(H + k//2) x (W + k//2)`` grid: the zero-padded convolution is a compression
        (zero-embedding, circular convolution, crop) of that circular one, so the value is an upper bound,
        a little above the exact norm (by about ``(pi / H)^2`` relative, less than the safety margin for
        ``H >= 16``). Rounded up by ``1e-9`` relative; ``math.inf`` for non-finite kernels.
    """
    k = kernel.detach().to(torch.float64)
    if not torch.isfinite(k).all():
        return math.inf
    h, w = int(input_size[0]), int(input_size[1])
    if padding_mode == "zeros":
        if max(k.shape[0], k.shape[1]) * h * w <= DENSE_LIMIT:
            return _dense_conv_norm(k, (h, w)) * (1 + _ROUNDING)
        grid = (h + k.shape[2] // 2, w + k.shape[3] // 2)
    elif padding_mode == "circular":
        grid = (h, w)
    else:
        raise ValueError(f"padding_mode={padding_mode!r} is not supported; use 'zeros' or 'circular'")
    return float(_symbol_norms(k, grid).max().item()) * (1 + _ROUNDING)


#: Largest ``max(C_in, C_out) * H * W`` for which :func:`conv_operator_norm` (zero padding) builds the
#: explicit matrix and takes its exact norm.
DENSE_LIMIT = 1024


def _dense_conv_norm(k: torch.Tensor, size: tuple[int, int]) -> float:
    c_in = k.shape[1]
    n = c_in * size[0] * size[1]
    basis = torch.eye(n, dtype=torch.float64, device=k.device).reshape(n, c_in, *size)
    mat = F.conv2d(basis, k, padding=(k.shape[-2] // 2, k.shape[-1] // 2)).reshape(n, -1)
    return float(torch.linalg.matrix_norm(mat, ord=2).item())


def conv_norm_bound(kernel: torch.Tensor, *, grid: int = 64) -> float:
    """Upper bound on the norm of a stride-1 'same' convolution at *every* input size and padding.

    Every such operator is a compression of the convolution on the whole lattice, whose norm is the supremum
    of the symbol ``||K(w)||`` over frequencies ``w``. The supremum is bounded by its maximum on a
    ``grid x grid`` lattice plus the largest possible variation between lattice points,
    ``pi / grid * sum_t (|t_1| + |t_2|) ||K_t||_F``.
    """
    k = kernel.detach().to(torch.float64)
    if not torch.isfinite(k).all():
        return math.inf
    kh, kw = k.shape[2], k.shape[3]
    t1 = torch.arange(kh, dtype=torch.float64, device=k.device) - kh // 2
    t2 = torch.arange(kw, dtype=torch.float64, device=k.device) - kw // 2
    taps = torch.linalg.matrix_norm(k.permute(2, 3, 0, 1), ord="fro")  # (kh, kw)
    variation = math.pi / grid * float((taps * (t1.abs()[:, None] + t2.abs()[None, :])).sum().item())
    return (float(_symbol_norms(k, (grid, grid)).max().item()) + variation) * (1 + _ROUNDING)


class WeightMap(nn.Module):
    """A learnable linear map ``W`` with a warm-started power-iteration estimate and a certified norm.

    The constraint every layer family shares: the forward pass takes its step or scale from :meth:`estimate`
    (or :meth:`scale`), and ``lipschitz_bound()`` evaluates the family's formula with :meth:`norm_bound` (or
    :meth:`scaled_norm_bound`), exact float64 norms of the current weight.

    Subclasses give :meth:`matvec`, :meth:`adjoint`, the shape of the start vector for an input and the
    certified norm; everything else (warm start, margin, no-grad iteration, calibration, state_dict resizing)
    lives here. ``W x`` is :meth:`matvec` (or calling the module); the name ``apply`` is left to
    :meth:`torch.nn.Module.apply`.

    Calibration: when the first warm-start vector is created (at construction for matrices, at the first input
    for convolutions) its estimate is compared with the certified norm at that size; should the
    ``init_iterations`` iterations fall short of it, the vector is lengthened so that the estimate covers the
    certified norm. The eval-mode map of a fresh layer therefore meets its family's condition at whatever size
    it first sees, which is what lets a layer certify its bound before its first input.
    """

    weight: torch.Tensor

    def __init__(self, *, margin: float, power_iterations: int, init_iterations: int,
                 differentiate_iteration: bool) -> None:
        super().__init__()
        if isinstance(margin, bool) or not (isinstance(margin, (int, float)) and math.isfinite(margin)
                                            and margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
        for name, val in (("power_iterations", power_iterations), ("init_iterations", init_iterations)):
            if isinstance(val, bool) or not (isinstance(val, int) and val >= 0):
                raise ValueError(f"{name} must be an int >= 0, got {val!r}")
        self.margin = float(margin)
        self.power_iterations = power_iterations
        self.init_iterations = init_iterations
        self.differentiate_iteration = bool(differentiate_iteration)
        # warm-start pair: input vector v (unit, or longer after calibration) and unit output vector
        # u = W v / ||W v|| (persistent buffers; dtype/device follow the weight, see _ensure_vector)
        self.register_buffer("_v", torch.zeros(0))
        self.register_buffer("_u", torch.zeros(0))

    # --- to be given by subclasses
    def matvec(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``W x`` (with ``weight`` in place of ``W`` if given)."""
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``W^T y`` (with ``weight`` in place of ``W`` if given)."""
        raise NotImplementedError

    def _vector_shape(self, x: torch.Tensor | None) -> tuple[int, ...] | None:
        raise NotImplementedError

    def norm_of(self, weight: torch.Tensor) -> float:
        """Certified norm of the map with another weight of the same kind (float64)."""
        raise NotImplementedError

    # --- shared machinery
    def norm_bound(self) -> float:
        """Certified ``||W||`` for the raw weight (float64, from the current weights)."""
        return self.norm_of(self.weight)

    @property
    def has_estimate(self) -> bool:
        """Whether a warm-start vector exists (convolutions get one at their first input)."""
        return self._v.numel() > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matvec(x)

    @staticmethod
    def _normalise(t: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """``t / ||t||``, or ``fallback`` if ``t`` vanished or is not finite (zero or non-finite weights)."""
        norm = t.norm()
        ok = torch.isfinite(norm) & (norm > _TINY)
        return torch.where(ok, t / norm.clamp_min(_TINY), fallback)

    def _iterate(self, v: torch.Tensor, n: int, weight: torch.Tensor) -> torch.Tensor:
        """``n`` steps of ``v <- W^T W v / ||W^T W v||``."""
        for _ in range(n):
            v = self._normalise(self.adjoint(self.matvec(v, weight), weight), v)
        return v

    def _ensure_vector(self, x: torch.Tensor | None, *, calibrate: bool = True) -> bool:
        """Create the warm-start vectors for this input size if needed (calibrating the first ones); True when
        they are available."""
        shape = self._vector_shape(x)
        if shape is None:
            return self._v.numel() > 0
        if tuple(self._v.shape) != shape or self._v.dtype != self.weight.dtype or self._v.device != self.weight.device:
            first = self._v.numel() == 0
            self._restart(_hash_vector(shape, dtype=self.weight.dtype, device=self.weight.device),
                          self.init_iterations)
            if first and calibrate:
                self._calibrate()
        return True

    @torch.no_grad()
    def _restart(self, v: torch.Tensor, iterations: int) -> None:
        w = self.weight.detach()
        v = self._iterate(v, iterations, w)
        u = self.matvec(v, w)
        self._v, self._u = v, self._normalise(u, u)

    @torch.no_grad()
    def _calibrate(self) -> None:
        """Lengthen ``v`` so that ``(1 + margin) ||W v||`` covers the certified norm (host-side, once)."""
        if self.weight.is_meta:  # built to measure memory: no values to calibrate
            return
        exact = self.norm_bound()
        if not math.isfinite(exact) or exact == 0.0:
            return
        w = self.weight.detach()
        reach = float(self.matvec(self._v, w).norm().item())
        if reach == 0.0:  # the start vector saw nothing of W: start from the row space instead
            out = _hash_vector(tuple(self._u.shape), dtype=w.dtype, device=w.device)
            self._restart(self._normalise(self.adjoint(out, w), self._v), self.init_iterations)
            reach = float(self.matvec(self._v, w).norm().item())
        target = exact * (1 + _CALIBRATION_SLACK)
        if 0.0 < reach * (1.0 + self.margin) < target:
            self._v = self._v * (target / (reach * (1.0 + self.margin)))

    def estimate(self, x: torch.Tensor | None = None, *, iterate: bool | None = None) -> torch.Tensor:
        """``(1 + margin) ||W v||``: the value of ``||W||`` used by constraints (a 0-dim tensor).

        In training mode the warm-start pair first takes ``power_iterations`` steps: ``v <- W^T u / ||.||``,
        and, after the norm is taken, ``u <- W v / ||W v||`` (the product ``W v`` serves both the norm and
        the next step, so one iteration costs one application of ``W^T`` and one of ``W``). No gradient flows
        through the iteration unless ``differentiate_iteration``. In eval mode nothing is updated, so the
        map is fixed, equal to the map of the last training-mode call, and ``lipschitz_bound()`` certifies
        exactly it. In training mode the value is ``max(||W v_old||, ||W v_new||)``: never below the value the
        previous state would use. Gradient flows to the weight through the norms.
        """
        if not self._ensure_vector(x):
            raise ValueError(
                "the norm of this convolution depends on the input size, which is not known yet; "
                "call the layer on an input first (or refresh_spectral_norms(model, input_size=(H, W)))"
            )
        if iterate is None:
            iterate = self.training
        if not (iterate and self.power_iterations > 0):
            return self.matvec(self._v).norm() * (1.0 + self.margin)
        if self.differentiate_iteration:
            v = self._normalise(self.adjoint(self._u, self.weight), self._v)
            v = self._iterate(v, self.power_iterations - 1, self.weight)
        else:
            with torch.no_grad():
                w = self.weight.detach()
                v = self._normalise(self.adjoint(self._u, w), self._v)
                v = self._iterate(v, self.power_iterations - 1, w)
        # ||W v_old|| and ||W v_new|| both serve as the norm: taking the larger means a training-mode call never
        # uses a larger step or scale than the map certified just before it (the weights may have moved since
        # v_old was computed, and one iteration from a stale vector can land lower). One batch of two.
        both = self.matvec(torch.cat([v, self._v.to(v.dtype)]))
        y, previous = both[:1], both[1:]
        with torch.no_grad():
            # keep the vector that gave the larger value, so that the eval-mode map (which uses ||W v||) is the
            # map of this call; u carries the iteration forward either way
            self._v = torch.where(y.norm() >= previous.norm(), v.detach(), self._v)
            self._u = self._normalise(y.detach(), self._u)
        return torch.maximum(y.norm(), previous.norm()) * (1.0 + self.margin)

    def scale(self, limit: float | None, x: torch.Tensor | None = None, *, iterate: bool | None = None):
        """``min(1, limit / estimate)``: the factor ``s`` that keeps the estimated norm of ``s W`` at most
        ``limit`` (how a constrained layer enforces its condition); ``1.0`` when ``limit`` is None
        (unconstrained)."""
        if limit is None:
            return 1.0
        return torch.clamp(limit / self.estimate(x, iterate=iterate), max=1.0)

    @torch.no_grad()
    def scaled_norm_bound(self, limit: float | None) -> float:
        """Certified ``||s W||`` for the eval-mode scale ``s = scale(limit)`` (float64 norm of the weight).

        Before a convolution's first input the scale is not fixed; calibration guarantees the estimate at the
        first size covers the norm there, so ``s ||W|| <= min(limit, ||W||)`` at every size.
        """
        sigma = self.norm_bound()
        if limit is None:
            return sigma
        if not self.has_estimate:
            return min(float(limit), sigma)
        return float(self.scale(limit, iterate=False)) * sigma

    def matvec_and_estimate(self, x: torch.Tensor, *, iterate: bool | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W x, estimate)``: the raw map and the norm estimate, for layers that rescale after applying
        ``W`` (``s W x = W (s x)``).

        Appending ``v`` to the batch of ``x`` to get ``W v`` from the same call was measured slower on CPU
        (concatenation and slicing cost more than a batch-1 convolution), so the two are computed apart.
        """
        return self.matvec(x), self.estimate(x, iterate=iterate)

    def observe(self, x: torch.Tensor) -> None:
        """Record the input size of ``x`` (the size the certified norm refers to) without estimating anything:
        for unconstrained maps, which never use the estimate."""
        shape = self._vector_shape(x)
        if shape is not None and tuple(self._v.shape) != shape:
            with torch.no_grad():
                v = _hash_vector(shape, dtype=self.weight.dtype, device=self.weight.device)
                u = self.matvec(v, self.weight.detach())
                self._v, self._u = v, self._normalise(u, u)

    @torch.no_grad()
    def refresh(self, iterations: int = INIT_ITERATIONS, *, input_size: tuple[int, int] | None = None,
                reseed: bool = False) -> None:
        """Run many power iterations from the stored vector (e.g. before export or certification).

        ``reseed=True`` starts from the fixed seed vector instead, so that the result is a function of the
        weights alone (model files then need not store the vectors).
        """
        if input_size is not None:
            self._ensure_input_size(tuple(input_size))
        if self._v.numel() == 0:
            return
        v = self._v
        if reseed or not bool(torch.isfinite(v).all()):  # host-side check: re-seed after NaN weights
            v = _hash_vector(tuple(v.shape), dtype=v.dtype, device=v.device)
        self._restart(v, iterations)

    def _ensure_input_size(self, input_size: tuple[int, int]) -> None:
        pass

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("_v", "_u"):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, torch.zeros_like(state_dict[key], dtype=self.weight.dtype,
                                                     device=self.weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


#: Relative amount by which calibration puts the estimate above the certified norm (float32 rounding of
#: ``||W v||`` must not undo it).
_CALIBRATION_SLACK = 1e-4


def _init_weight(shape, fan_in, rng, dtype, device, gain=1.0):
    w = torch.randn(shape, generator=rng, dtype=torch.float64) * (gain / math.sqrt(fan_in))
    return nn.Parameter(w.to(dtype=dtype or torch.get_default_dtype(), device=device))


class DenseWeight(WeightMap):
    """A matrix ``W`` (out_features x in_features) acting on vectors ``(B, in_features)``.

    Parameters
    ----------
    in_features, out_features : int
    margin : float, default :data:`SAFETY_MARGIN`
    power_iterations : int, default 1
        Power-iteration steps per training-mode call of :meth:`estimate`.
    init_iterations : int, default :data:`INIT_ITERATIONS`
    differentiate_iteration : bool, default False
        Let gradients flow through the power iteration.
    rng : torch.Generator, optional
        Generator (on the CPU) for the initial weight ``N(0, 1/in_features)``.
    dtype, device : optional

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import DenseWeight
    >>> w = DenseWeight(3, 5, rng=torch.Generator().manual_seed(0))
    >>> w.matvec(torch.ones(2, 3)).shape
    torch.Size([2, 5])
    >>> float(w.estimate().detach()) >= w.norm_bound()
    True
    """

    def __init__(self, in_features: int, out_features: int, *, margin: float = SAFETY_MARGIN,
                 power_iterations: int = 1, init_iterations: int = INIT_ITERATIONS,
                 differentiate_iteration: bool = False, rng: torch.Generator | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__(margin=margin, power_iterations=power_iterations, init_iterations=init_iterations,
                         differentiate_iteration=differentiate_iteration)
        _check_positive_int(in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = _init_weight((out_features, in_features), in_features, rng, dtype, device)
        self._ensure_vector(None)

    def matvec(self, x, weight=None):
        return x @ (self.weight if weight is None else weight).T

    def adjoint(self, y, weight=None):
        return y @ (self.weight if weight is None else weight)

    def antisymmetric_weight(self, scale, gamma: float = 0.0):
        """Matrix ``scale (W - W^T) - gamma I`` (square weights only)."""
        w = self.weight
        eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
        return scale * (w - w.T) - gamma * eye

    def norm_of(self, weight: torch.Tensor) -> float:
        return matrix_norm(weight)

    def _vector_shape(self, x):
        return (1, self.in_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, margin={self.margin}"


class ConvWeight(WeightMap):
    """A stride-1 'same' ``k x k`` convolution ``C_in -> C_out`` acting on images ``(B, C_in, H, W)``.

    Its norm is the norm of the map at the input size (not of the reshaped kernel), so the warm-start
    vector has the shape ``(1, C_in, H, W)`` of one input; it is re-created (and iterated
    ``init_iterations`` times) when the input size changes. Parameters as :class:`DenseWeight`, plus
    ``kernel_size`` (odd) and ``padding_mode`` ("zeros" or "circular").

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import ConvWeight
    >>> w = ConvWeight(2, 4, rng=torch.Generator().manual_seed(0))
    >>> w.matvec(torch.ones(1, 2, 8, 8)).shape
    torch.Size([1, 4, 8, 8])
    >>> float(w.estimate(torch.ones(1, 2, 8, 8)).detach()) >= w.norm_bound()
    True
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 padding_mode: str = "zeros", margin: float = SAFETY_MARGIN, power_iterations: int = 1,
                 init_iterations: int = INIT_ITERATIONS, differentiate_iteration: bool = False,
                 rng: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__(margin=margin, power_iterations=power_iterations, init_iterations=init_iterations,
                         differentiate_iteration=differentiate_iteration)
        _check_positive_int(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (a 'same' convolution), got {kernel_size}")
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(f"padding_mode={padding_mode!r} is not supported; use 'zeros' or 'circular'")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding_mode = kernel_size, padding_mode
        self.weight = _init_weight((out_channels, in_channels, kernel_size, kernel_size),
                                   in_channels * kernel_size**2, rng, dtype, device)

    def _pad(self, x):
        p = self.kernel_size // 2
        if self.padding_mode == "circular":
            return F.pad(x, (p, p, p, p), mode="circular"), 0
        return x, p

    def matvec(self, x, weight=None):
        w = self.weight if weight is None else weight
        xp, p = self._pad(x)
        return F.conv2d(xp, w, padding=p)

    def adjoint(self, y, weight=None):
        w = self.weight if weight is None else weight
        yp, p = self._pad(y)
        return F.conv2d(yp, w.transpose(0, 1).flip(2, 3), padding=p)

    def antisymmetric_weight(self, scale, gamma: float = 0.0):
        """Kernel of ``scale (K - K^T) - gamma I`` (square: C_in == C_out)."""
        w = self.weight
        k = scale * (w - w.transpose(0, 1).flip(2, 3))
        if gamma:
            c, p = w.shape[0], self.kernel_size // 2
            eye = torch.zeros_like(w)
            eye[torch.arange(c), torch.arange(c), p, p] = 1.0
            k = k - gamma * eye
        return k

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The spatial size the warm-start vector (and the certificate) refer to; None before any input."""
        return tuple(self._v.shape[-2:]) if self._v.dim() == 4 else None

    def _vector_shape(self, x):
        if x is None:
            return None
        return (1, self.in_channels, x.shape[-2], x.shape[-1])

    def _ensure_input_size(self, input_size):
        # refresh() iterates right after: no calibration
        self._ensure_vector(torch.empty(1, self.in_channels, *input_size, device="meta"), calibrate=False)

    def norm_of(self, weight: torch.Tensor) -> float:
        """Certified norm of the convolution with another kernel, at the input size last seen (at every size
        before the first input)."""
        size = self.input_size
        if size is None:
            return conv_norm_bound(weight)
        # at a known size the value is at most the all-size bound (both are certified; this one is tighter)
        return conv_operator_norm(weight, size, padding_mode=self.padding_mode)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, padding_mode={self.padding_mode!r}, margin={self.margin}")


def _check_positive_int(**values) -> None:
    for name, val in values.items():
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
