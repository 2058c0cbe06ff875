"""Parallel-beam computed tomography: the Radon transform as a precomputed sparse projector."""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
import torch

from ._norms import matrix_norm
from ._base import SinogramOperator
from ._sparse import to_torch_csr
from .functional._radon import (
    angles_in_degrees,
    backprojector_matrix,
    backprojector_memory,
    default_detectors,
    projector_matrix,
    projector_memory,
)

# Lanczos (ARPACK) converges to the largest singular value from below to about its tolerance; the margin
# covers that and the float32 rounding of the stored matrix.
_NORM_MARGIN = 1e-6


def _check_memory(what: str, needed: int, image_size: int, n_angles: int, detectors: int) -> None:
    """Refuse to build a matrix that would not fit, with the figures (instead of a MemoryError mid-build), through
    invstable's one memory check (:class:`invstable.data.InsufficientMemoryError`, a ``MemoryError`` and a
    ``ValueError``)."""
    from ..data._memory import check_memory  # noqa: PLC0415 (invstable.data imports the operators)

    check_memory(needed, f"the sparse {what} of ParallelBeamCT(image_size={image_size}, angles={n_angles}, "
                         f"detectors={detectors})",
                 hint="the memory grows as image_size^2 x angles: use a smaller image_size or fewer angles")


@functools.lru_cache(maxsize=8)
def _geometry(image_size: int, theta_key: tuple[float, ...], detectors: int):
    """Projector (CSR, float64), its transpose, and its largest singular value, cached per geometry."""
    _check_memory("projector", projector_memory(image_size, len(theta_key), detectors), image_size, len(theta_key),
                  detectors)
    theta = np.asarray(theta_key)
    proj = projector_matrix(image_size, theta, detectors)
    return proj, proj.T.tocsr(), matrix_norm(proj)


@functools.lru_cache(maxsize=8)
def _backprojector(image_size: int, theta_key: tuple[float, ...], detectors: int) -> sp.csr_matrix:
    _check_memory("back-projector", backprojector_memory(image_size, len(theta_key), detectors), image_size,
                  len(theta_key), detectors)
    return backprojector_matrix(image_size, np.asarray(theta_key), detectors)


class ParallelBeamCT(SinogramOperator):
    r"""Parallel-beam Radon transform of square images, with an exact adjoint.

    Parameters
    ----------
    image_size : int
        Side ``n`` of the ``n x n`` images.
    angles : int or sequence of float
        Number of angles uniform in [0°, 180°), or the angles in degrees.
    detectors : int, optional
        Number of unit-width detector cells, centred on the rotation centre. Default: the image diagonal,
        ``ceil(sqrt(2) n)`` (the size of :func:`skimage.transform.radon` with ``circle=False``).
    normalize : bool, default True
        Scale the operator so that its spectral norm is 1. The factor is ``self.scale``: the sinogram of
        :func:`skimage.transform.radon` is ``op.A(x) / op.scale``.
    noise_model : deepinv.physics.NoiseModel, optional
        deepinv noise model applied by ``op(x)``; ``op.A(x)`` is noiseless.

    Notes
    -----
    The ray of angle :math:`\theta` through detector offset :math:`t` is sampled at unit steps :math:`s`
    at the point :math:`c + t(\cos\theta, -\sin\theta) + s(\sin\theta, \cos\theta)` (column, row), with
    bilinear interpolation and zeros outside the image, exactly as ``skimage.transform.radon``. The samples
    form a sparse matrix, built once per geometry (cached) and applied with sparse-dense products; the
    adjoint is the product with its stored transpose, so it is exact up to the rounding of the sums.
    A sparse projector is faster than a matrix-free rotation on CPU for the sizes of the protocols
    (128 x 128) and costs :math:`O(n^2 \cdot \text{angles})` memory: for CT-180 at 128 x 128, 6.5 million
    non-zeros, about 52 MB per stored matrix in float32 (the projector and its transpose are both kept), and
    16 times that at 512 x 512 with 180 angles. Building it takes about :math:`56 \cdot 4 (n + 1)^2
    \cdot \text{angles}` bytes at its peak (1.3 GB for CT-180 at 128 x 128); that figure is estimated first, and
    a geometry that would not fit in the memory available is refused before anything is allocated.

    The products with the stored matrices go through every torch transform: autograd (to any order),
    ``torch.func.jvp``, ``vmap``, ``jacrev`` and ``jacfwd``.

    Measurements have shape ``(B, C, detectors, angles)`` for images of shape ``(B, C, n, n)``; a batch of zero
    images gives a batch of zero sinograms.

    Raises
    ------
    invstable.data.InsufficientMemoryError
        (a ``MemoryError`` and a ``ValueError``) when the projector would need more memory than is available,
        with both figures, e.g. for ``ParallelBeamCT(4096, 180)`` (about 630 GiB).

    Examples
    --------
    >>> import torch
    >>> from invstable.operators import ParallelBeamCT
    >>> op = ParallelBeamCT(64, 30)
    >>> y = op.A(torch.rand(2, 1, 64, 64))
    >>> tuple(y.shape)
    (2, 1, 91, 30)
    """

    name = "ct"
    measurement_ndim = 4
    #: each stored matrix and the one that is its transpose (see :class:`SparseProduct`)
    _transposes = {"projector": "adjoint", "adjoint": "projector",
                   "backprojector": "backprojector_t", "backprojector_t": "backprojector"}

    def __init__(self, image_size: int, angles, *, detectors: int | None = None, normalize: bool = True,
                 noise_model=None, **kwargs):
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 2:
            raise ValueError(f"image_size must be an integer >= 2, got {image_size!r}")
        theta = angles_in_degrees(angles)
        if detectors is None:
            detectors = default_detectors(int(image_size))
        if isinstance(detectors, bool) or not isinstance(detectors, (int, np.integer)) or detectors < 2:
            raise ValueError(f"detectors must be an integer >= 2, got {detectors!r}")
        super().__init__(noise_model=noise_model, **kwargs)
        self.image_size = int(image_size)
        self.image_shape = (self.image_size, self.image_size)
        self.detectors = int(detectors)
        self.normalize = bool(normalize)
        #: the angles in degrees, stored once (configuration, not state: ``.to()`` and ``.double()`` leave them)
        self._theta_key = tuple(float(a) for a in theta)
        _, _, sigma = _geometry(self.image_size, self._theta_key, self.detectors)
        self._sigma = sigma
        #: factor applied to the Radon transform (1 / ||R|| when normalised, else 1)
        self.scale = 1.0 / sigma if self.normalize else 1.0
        self._cache: dict = {}

    @property
    def angles(self) -> torch.Tensor:
        """The projection angles in degrees (float64, a new tensor made from the stored ones)."""
        return torch.tensor(self._theta_key, dtype=torch.float64)

    @property
    def n_angles(self) -> int:
        return len(self._theta_key)

    def config(self) -> dict:
        return {"name": self.name, "params": {
            "image_size": self.image_size, "angles": list(self._theta_key), "detectors": self.detectors,
            "normalize": self.normalize,
        }}

    def norm_bound(self) -> float:
        """Largest singular value (ARPACK, tolerance 1e-12) times ``scale``, plus a relative margin of 1e-6."""
        return self._sigma * self.scale * (1.0 + _NORM_MARGIN)

    def measurement_shape(self, x_shape):
        return (*x_shape[:-2], self.detectors, self.n_angles)

    def _repr_params(self) -> dict:
        uniform = np.linspace(0.0, 180.0, self.n_angles, endpoint=False)
        angles = self.n_angles if np.array_equal(np.asarray(self._theta_key), uniform) else list(self._theta_key)
        return {"image_size": self.image_size, "angles": angles, "detectors": self.detectors,
                "normalize": self.normalize}


    def _matrix(self, which: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """One of the stored matrices (``"projector"``, ``"adjoint"``, ``"backprojector"``, ``"backprojector_t"``)
        as a torch CSR tensor, built on first use for each dtype and device."""
        key = (which, dtype, device)
        if key not in self._cache:
            if which.startswith("backprojector"):
                matrix = _backprojector(self.image_size, self._theta_key, self.detectors)
                matrix = matrix if which == "backprojector" else matrix.T.tocsr()
            else:
                proj, proj_t, _ = _geometry(self.image_size, self._theta_key, self.detectors)
                matrix = proj if which == "projector" else proj_t
            self._cache[key] = to_torch_csr(matrix, dtype, device)
        return self._cache[key]

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_cache"] = {}  # torch sparse tensors cannot be deep-copied or pickled; they are rebuilt lazily
        return state

    def _measurement_origin(self) -> str:
        return f"ParallelBeamCT(image_size={self.image_size}, angles={self.n_angles})"

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        """Pixel-driven back-projection of (filtered) projections, in the units of the unscaled transform.

        This is the back-projection of :func:`skimage.transform.iradon` (linear interpolation on the
        detector); it is not ``A_adjoint``. Used by :func:`invstable.fbp`.
        """
        self.check_measurement(y)
        return self._product("backprojector", y, (self.image_size, self.image_size))
