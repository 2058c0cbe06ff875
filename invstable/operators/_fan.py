"""Fan-beam computed tomography with a flat detector: a precomputed sparse projector with an exact adjoint."""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import scipy.sparse as sp
import torch

from ._norms import matrix_norm
from ._base import SinogramOperator
from ._sparse import to_torch_csr
from .functional._radon import angles_in_degrees, ray_sample_matrix

# Lanczos (ARPACK) converges to the largest singular value from below to about its tolerance; the margin
# covers that and the float32 rounding of the stored matrix (as for ParallelBeamCT).
_NORM_MARGIN = 1e-6
#: relative slack of the coverage check, so that a geometry computed to cover the image exactly passes
_COVER_SLACK = 1e-9
#: bytes of peak memory per stored bilinear sample while the projector is built (as measured for ParallelBeamCT)
_BYTES_PER_SAMPLE = 56


def half_diagonal(image_size: int) -> float:
    """Radius, in pixels, of the circle through the corners of an ``n x n`` image: ``n / sqrt(2)``."""
    return image_size / math.sqrt(2.0)


def fan_angles_in_degrees(angles) -> np.ndarray:
    """``n`` (an integer) -> ``n`` source angles uniform in [0, 360) degrees (a full rotation); a 1-D sequence of
    degrees is passed through."""
    theta = angles_in_degrees(angles)  # checks counts and lists alike; a count there spans [0, 180)
    if np.ndim(angles.detach().cpu() if isinstance(angles, torch.Tensor) else angles) == 0:
        return np.linspace(0.0, 360.0, len(theta), endpoint=False)
    return theta


def detector_offsets(detectors: int, detector_spacing: float) -> np.ndarray:
    """Positions of the detector cell centres on the flat detector, centred on the central ray (pixels)."""
    return (np.arange(detectors, dtype=np.float64) - (detectors - 1) / 2.0) * detector_spacing


def covering_offset(image_size: int, source_distance: float, detector_distance: float) -> float:
    """Offset on the detector of the ray that grazes the image's circumscribed circle (pixels)."""
    sin_gamma = half_diagonal(image_size) / source_distance
    return detector_distance * sin_gamma / math.sqrt(1.0 - sin_gamma**2)


def covering_detectors(image_size: int, source_distance: float, detector_distance: float,
                       detector_spacing: float) -> int:
    """Smallest odd detector count whose outer rays reach the corners of the image."""
    needed = covering_offset(image_size, source_distance, detector_distance) / detector_spacing
    return 2 * int(math.ceil(needed * (1.0 - _COVER_SLACK))) + 1


def _samples_per_ray(image_size: int) -> int:
    return 2 * (int(math.ceil(half_diagonal(image_size))) + 1) + 1


def fan_projector_samples(image_size: int, theta: np.ndarray, source_distance: float, detector_distance: float,
                          detectors: int, detector_spacing: float) -> int:
    """Upper bound on the bilinear samples (entries before duplicates are summed) of :func:`fan_projector_matrix`.

    A sample has non-zero weights only inside the ``(n + 1) x (n + 1)`` square around the pixel centres: a ray
    whose chord through that square has length ``L`` has at most ``floor(L) + 1`` unit-spaced samples there, each
    with four weights.
    """
    half = (image_size + 1) / 2.0
    gamma = np.arctan(detector_offsets(detectors, detector_spacing) / detector_distance)[:, None]
    angle = np.deg2rad(np.asarray(theta, dtype=np.float64))[None, :]
    d = (np.sin(angle), np.cos(angle))  # central ray and detector axis, (column, row)
    e = (np.cos(angle), -np.sin(angle))
    t_in, t_out = np.full(np.broadcast_shapes(gamma.shape, angle.shape), -np.inf), np.inf
    for axis in range(2):
        start = -source_distance * d[axis]
        step = np.cos(gamma) * d[axis] + np.sin(gamma) * e[axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = (-half - start) / step, (half - start) / step
        parallel = np.abs(step) < 1e-12  # the ray does not move along this axis: inside the slab throughout, or never
        inside = np.abs(start) <= half
        lo = np.where(parallel, np.where(inside, -np.inf, np.inf), np.minimum(a, b))
        hi = np.where(parallel, np.where(inside, np.inf, -np.inf), np.maximum(a, b))
        t_in, t_out = np.maximum(t_in, lo), np.minimum(t_out, hi)
    chords = np.clip(t_out - t_in, 0.0, None)
    samples = np.where(t_out > t_in, np.floor(chords) + 1, 0.0)
    return 4 * int(samples.sum())


def fan_projector_memory(image_size: int, theta: np.ndarray, source_distance: float, detector_distance: float,
                         detectors: int, detector_spacing: float) -> int:
    """Estimated peak memory in bytes of building :func:`fan_projector_matrix` and its transpose, from the bound
    of :func:`fan_projector_samples`; it grows as ``image_size^2 x angles``."""
    return _BYTES_PER_SAMPLE * fan_projector_samples(image_size, theta, source_distance, detector_distance,
                                                     detectors, detector_spacing)


def fan_projector_matrix(image_size: int, theta: np.ndarray, source_distance: float, detector_distance: float,
                         detectors: int, detector_spacing: float) -> sp.csr_matrix:
    """Sparse ray-driven fan-beam projector of shape ``(detectors * len(theta), image_size ** 2)`` in float64.

    Row ``k * len(theta) + j`` is detector cell ``k`` at source angle ``theta[j]`` (degrees), so that reshaping the
    product to ``(detectors, len(theta))`` gives the sinogram. Each ray, from the source to the centre of its cell,
    is sampled at unit steps on both sides of its point closest to the rotation centre, with bilinear interpolation
    and zeros outside the image; the geometry is described in :class:`FanBeamCT`.
    """
    n = image_size
    centre = (n - 1) / 2.0
    u = detector_offsets(detectors, detector_spacing)
    length = np.hypot(detector_distance, u)
    along, across = detector_distance / length, u / length  # ray direction in the (central ray, detector) frame
    half = _samples_per_ray(n) // 2
    steps = np.arange(-half, half + 1, dtype=np.float64)
    # position along ray k (from its closest point to the centre, source_distance cos(gamma_k) from the source)
    t = source_distance * along[:, None] + steps[None, :]  # (detectors, samples)
    a = -source_distance + t * along[:, None]  # coordinate along the central ray
    b = t * across[:, None]  # coordinate along the detector axis
    return ray_sample_matrix(a, b, theta, n, centre)


@functools.lru_cache(maxsize=8)
def _geometry(image_size: int, theta_key: tuple[float, ...], source_distance: float, detector_distance: float,
              detectors: int, detector_spacing: float):
    """Projector (CSR, float64), its transpose, and its largest singular value, cached per geometry."""
    from ..data._memory import check_memory  # noqa: PLC0415 (invstable.data imports the operators)

    check_memory(fan_projector_memory(image_size, theta_key, source_distance, detector_distance, detectors,
                                      detector_spacing),
                 f"the sparse projector of FanBeamCT(image_size={image_size}, angles={len(theta_key)}, "
                 f"detectors={detectors})",
                 hint="the memory grows as image_size^2 x angles: use a smaller image_size or fewer angles")
    proj = fan_projector_matrix(image_size, np.asarray(theta_key), source_distance, detector_distance, detectors,
                                detector_spacing)
    return proj, proj.T.tocsr(), matrix_norm(proj)


def _positive_distance(value, name: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite distance in pixels, got {value!r}; {hint}")
    return float(value)


class FanBeamCT(SinogramOperator):
    r"""Fan-beam X-ray transform of square images on a flat detector, with an exact adjoint.

    Parameters
    ----------
    image_size : int
        Side ``n`` of the ``n x n`` images. All distances are in pixels (pixel spacing 1), measured from the
        rotation centre, which is the centre of the image (``((n - 1) / 2, (n - 1) / 2)`` in (row, column)
        indices).
    angles : int or sequence of float
        Number of source positions uniform in [0°, 360°) (a full rotation, the usual fan-beam scan), or the
        source angles in degrees.
    source_distance : float, optional
        Distance from the source to the rotation centre. Must exceed the image's half-diagonal ``n / sqrt(2)``
        (the source stays outside the image). Default ``2 n``.
    detector_distance : float, optional
        Distance from the source to the detector (along the central ray), greater than ``source_distance``.
        Default ``2 * source_distance`` (magnification 2).
    detectors : int, optional
        Number of detector cells. Default: the smallest odd count whose outer rays reach the image's corners.
    detector_spacing : float, optional
        Distance between the centres of neighbouring cells on the detector. Default
        ``detector_distance / source_distance``: cells one pixel wide at the rotation centre.
    normalize : bool, default True
        Scale the operator so that its spectral norm is 1. The factor is ``self.scale``: the line integrals (in
        pixel units) are ``op.A(x) / op.scale``.
    noise_model : deepinv.physics.NoiseModel, optional
        deepinv noise model applied by ``op(x)``; ``op.A(x)`` is noiseless.

    Notes
    -----
    Let :math:`R_s` be ``source_distance``, :math:`D` ``detector_distance``, :math:`d_\theta = (\sin\theta,
    \cos\theta)` and :math:`e_\theta = (\cos\theta, -\sin\theta)` in (column, row) offsets from the centre: the
    directions of the rays and of the detector of :class:`ParallelBeamCT` at the same angle. At source angle
    :math:`\theta` the source is at :math:`-R_s d_\theta`, the flat detector is perpendicular to
    :math:`d_\theta` at :math:`(D - R_s) d_\theta`, and cell :math:`k` is centred at
    :math:`(D - R_s) d_\theta + u_k e_\theta`, with :math:`u_k = (k - (\text{detectors} - 1)/2)\,
    \text{detector\_spacing}`. The measurement of cell :math:`k` is the line integral of the image along the ray
    from the source to the centre of the cell, of fan angle :math:`\gamma_k = \arctan(u_k / D)`:

    .. math::

        y_{k, \theta} \approx \int x(-R_s d_\theta + t\, w_k)\, dt, \qquad
        w_k = \cos\gamma_k\, d_\theta + \sin\gamma_k\, e_\theta .

    The ray is sampled at unit steps :math:`t = R_s \cos\gamma_k + m` on both sides of its point closest to the
    centre, with bilinear interpolation and zeros outside the image; as :math:`R_s \to \infty` (with
    ``detector_spacing`` equal to the magnification) this tends to :class:`ParallelBeamCT`'s sampling. The samples
    form a sparse matrix built once per geometry (cached); ``A_adjoint`` is the product with its stored transpose,
    so the adjoint is exact up to the rounding of the sums.

    The fan must reach the whole image: the outer rays pass at :math:`R_s \sin\gamma_{\max}` from the centre, which
    must be at least the half-diagonal :math:`n / \sqrt{2}`; a geometry that cuts the image is refused (no
    truncated projections).

    Against :class:`deepinv.physics.Tomography` with ``fan_beam=True`` (which samples every ray at unit steps of
    its coordinate along the central ray, so its sums are the line integrals times :math:`\cos\gamma_k`), with
    ``fan_parameters = {"pixel_spacing": (p - 1) / p, "source_radius": R_s, "detector_radius": D - R_s,
    "n_detector_pixels": detectors, "detector_spacing": detector_spacing}``, where ``p = ceil(sqrt(2) n)`` is the
    side of deepinv's padded image, and ``normalize=False``: the sinogram of ``FanBeamCT`` at angle
    :math:`\theta + 90°` is deepinv's at :math:`\theta` with the detector axis reversed, divided by
    :math:`\cos\gamma_k`, times ``scale`` (up to the interpolation of different sample points;
    ``tests/test_operators_fan.py`` holds the relative difference below 2 % on a smooth phantom).

    Measurements have shape ``(B, C, detectors, angles)`` for images of shape ``(B, C, n, n)``. The products go
    through every torch transform (autograd to any order, ``torch.func``), as for :class:`ParallelBeamCT`.

    Raises
    ------
    ValueError
        For a geometry that is not one: a non-integer or too small ``image_size`` or ``detectors``, a distance that
        is not positive and finite, a source inside the image's circumscribed circle, ``detector_distance <=
        source_distance``, or a fan that does not reach the image's corners; each message says what to pass.
    invstable.data.InsufficientMemoryError
        When the projector would need more memory than is available.

    Examples
    --------
    >>> import torch
    >>> from invstable.operators import FanBeamCT
    >>> op = FanBeamCT(32, 40)
    >>> op.detectors, op.source_distance, op.detector_distance
    (51, 64.0, 128.0)
    >>> tuple(op.A(torch.rand(2, 1, 32, 32)).shape)
    (2, 1, 51, 40)
    """

    name = "fan"
    measurement_ndim = 4
    #: each stored matrix and the one that is its transpose (see :class:`SparseProduct`)
    _transposes = {"projector": "adjoint", "adjoint": "projector"}

    def __init__(self, image_size: int, angles, *, source_distance: float | None = None,
                 detector_distance: float | None = None, detectors: int | None = None,
                 detector_spacing: float | None = None, normalize: bool = True, noise_model=None, **kwargs):
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 2:
            raise ValueError(f"image_size must be an integer >= 2, got {image_size!r}")
        n = int(image_size)
        theta = fan_angles_in_degrees(angles)
        radius = half_diagonal(n)
        rs = 2.0 * n if source_distance is None else _positive_distance(
            source_distance, "source_distance", "it is the distance from the source to the rotation centre")
        if rs <= radius:
            raise ValueError(
                f"source_distance={source_distance!r} puts the source inside the circle through the corners of a "
                f"{n} x {n} image (radius {radius:.6g} pixels); pass source_distance > {radius:.6g}"
            )
        dsd = 2.0 * rs if detector_distance is None else _positive_distance(
            detector_distance, "detector_distance", "it is the distance from the source to the detector")
        if dsd <= rs:
            raise ValueError(
                f"detector_distance={detector_distance!r} is measured from the source and must exceed "
                f"source_distance={rs:.6g} (the detector lies beyond the rotation centre); pass a larger "
                f"detector_distance, e.g. {2 * rs:.6g}"
            )
        spacing = dsd / rs if detector_spacing is None else _positive_distance(
            detector_spacing, "detector_spacing", "it is the distance between neighbouring detector cells")
        if detectors is None:
            detectors = covering_detectors(n, rs, dsd, spacing)
        if isinstance(detectors, bool) or not isinstance(detectors, (int, np.integer)) or detectors < 1:
            raise ValueError(f"detectors must be an integer >= 1, got {detectors!r}")
        reach = (int(detectors) - 1) / 2.0 * spacing
        needed = covering_offset(n, rs, dsd)
        if reach < needed * (1.0 - _COVER_SLACK):
            gamma = math.atan(reach / dsd)
            raise ValueError(
                f"the fan of {int(detectors)} detectors at detector_spacing={spacing:.6g} reaches "
                f"{rs * math.sin(gamma):.6g} pixels from the centre, but the corners of the {n} x {n} image are "
                f"{radius:.6g} away, so the projections would be truncated; pass detectors >= "
                f"{covering_detectors(n, rs, dsd, spacing)}, or leave detectors unset to get that count"
            )
        super().__init__(noise_model=noise_model, **kwargs)
        self.image_size = n
        self.image_shape = (n, n)
        self.source_distance = rs
        self.detector_distance = dsd
        self.detectors = int(detectors)
        self.detector_spacing = spacing
        self.normalize = bool(normalize)
        #: the source angles in degrees, stored once (configuration, not state: ``.to()`` and ``.double()`` leave
        #: them)
        self._theta_key = tuple(float(a) for a in theta)
        _, _, sigma = _geometry(*self._geometry_key())
        self._sigma = sigma
        #: factor applied to the line integrals (1 / ||P|| when normalised, else 1)
        self.scale = 1.0 / sigma if self.normalize else 1.0
        self._cache: dict = {}

    def _geometry_key(self) -> tuple:
        return (self.image_size, self._theta_key, self.source_distance, self.detector_distance, self.detectors,
                self.detector_spacing)

    @property
    def angles(self) -> torch.Tensor:
        """The source angles in degrees (float64, a new tensor made from the stored ones)."""
        return torch.tensor(self._theta_key, dtype=torch.float64)

    @property
    def n_angles(self) -> int:
        return len(self._theta_key)

    @property
    def fan_angles(self) -> np.ndarray:
        """Fan angle ``gamma_k`` of each detector cell's ray, in radians."""
        return np.arctan(detector_offsets(self.detectors, self.detector_spacing) / self.detector_distance)

    def config(self) -> dict:
        return {"name": self.name, "params": {
            "image_size": self.image_size, "angles": list(self._theta_key), "source_distance": self.source_distance,
            "detector_distance": self.detector_distance, "detectors": self.detectors,
            "detector_spacing": self.detector_spacing, "normalize": self.normalize,
        }}

    def norm_bound(self) -> float:
        """Largest singular value of the stored projector (ARPACK through :func:`matrix_norm`, at
        tolerance 1e-12) times ``scale``, plus a relative margin of 1e-6."""
        return self._sigma * self.scale * (1.0 + _NORM_MARGIN)

    def measurement_shape(self, x_shape):
        return (*x_shape[:-2], self.detectors, self.n_angles)

    def _repr_params(self) -> dict:
        params = dict(self.config()["params"])
        uniform = np.linspace(0.0, 360.0, self.n_angles, endpoint=False)
        if np.array_equal(np.asarray(self._theta_key), uniform):
            params["angles"] = self.n_angles
        return params

    def _matrix(self, which: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The stored projector (``"projector"``) or its transpose (``"adjoint"``) as a torch CSR tensor, built on
        first use for each dtype and device."""
        key = (which, dtype, device)
        if key not in self._cache:
            proj, proj_t, _ = _geometry(*self._geometry_key())
            self._cache[key] = to_torch_csr(proj if which == "projector" else proj_t, dtype, device)
        return self._cache[key]

    def __getstate__(self):
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["_cache"] = {}  # torch sparse tensors cannot be deep-copied or pickled; they are rebuilt lazily
        return state

    def _measurement_origin(self) -> str:
        return f"FanBeamCT(image_size={self.image_size}, angles={self.n_angles}, detectors={self.detectors})"
