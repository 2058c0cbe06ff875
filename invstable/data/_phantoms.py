"""Random-ellipse phantoms and the Shepp-Logan phantom (the CT image sources)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ._memory import check_memory
from ._random import as_numpy_rng, check_seed, sample_rng

#: Peak bytes per pixel of drawing one phantom (float64 grids and masks; measured 68 for the ellipses, 21 for
#: the resized Shepp-Logan phantom).
ELLIPSE_BYTES_PER_PIXEL = 72
SHEPP_LOGAN_BYTES_PER_PIXEL = 24


def _check_size(size, *, name: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        what = " (pixels per side)" if name == "size" else ""
        raise ValueError(f"{name} must be a positive int{what}, got {size!r}")
    return int(size)


def _check_phantom_memory(size: int, per_pixel: int, what: str) -> None:
    check_memory(per_pixel * size * size, f"a {size} x {size} {what}", hint="use a smaller size")


def random_ellipse_phantom(
    size: int,
    *,
    rng=None,
    count_range: tuple[int, int] = (5, 15),
    axis_range: tuple[float, float] = (0.05, 0.45),
    intensity_range: tuple[float, float] = (-0.4, 1.0),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    r"""Draw one random-ellipse phantom, an image in [0, 1].

    Parameters
    ----------
    size : int
        Side of the square image in pixels.
    rng : torch.Generator, numpy.random.Generator, int or None
        Randomness: a generator (advanced by the call), an int seed (of a numpy PCG64
        generator), or ``None`` (fresh entropy).
    count_range : (int, int)
        The number of ellipses is uniform on these inclusive bounds.
    axis_range : (float, float)
        Semi-axes are uniform in this range, in units of the half-width of the image.
    intensity_range : (float, float)
        Each ellipse adds a value uniform in this range (negative values carve holes).
    dtype : torch.dtype
        Floating dtype of the result.

    Returns
    -------
    torch.Tensor
        Shape ``(1, size, size)``, values in [0, 1].

    Raises
    ------
    InsufficientMemoryError
        If drawing it needs more memory than is available (about 72 bytes per pixel), before allocating.

    Notes
    -----
    On the grid of pixel centres :math:`p \in [-1, 1]^2`, ellipse :math:`k` with centre
    :math:`c_k` (uniform in the disc of radius 0.75), semi-axes :math:`a_k, b_k`, angle
    :math:`\theta_k` (uniform in :math:`[0, \pi)`) and intensity :math:`v_k` adds
    :math:`v_k` where

    .. math:: \left(\frac{(R_{-\theta_k}(p - c_k))_1}{a_k}\right)^2
              + \left(\frac{(R_{-\theta_k}(p - c_k))_2}{b_k}\right)^2 \le 1,

    and the sum is clipped to [0, 1]. The rasterisation is done in float64.

    Examples
    --------
    >>> from invstable.data import random_ellipse_phantom
    >>> x = random_ellipse_phantom(64, rng=0)
    >>> tuple(x.shape), bool(x.min() >= 0), bool(x.max() <= 1)
    ((1, 64, 64), True, True)
    >>> bool((x == random_ellipse_phantom(64, rng=0)).all())
    True
    """
    size = _check_size(size)
    _check_phantom_memory(size, ELLIPSE_BYTES_PER_PIXEL, "ellipse phantom")
    lo, hi = count_range
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ValueError(f"count_range must be two ints 1 <= low <= high, got {count_range!r}")
    if not 0 < axis_range[0] <= axis_range[1]:
        raise ValueError(f"axis_range must satisfy 0 < low <= high, got {axis_range!r}")
    if not intensity_range[0] <= intensity_range[1]:
        raise ValueError(f"intensity_range must satisfy low <= high, got {intensity_range!r}")
    g = as_numpy_rng(rng)
    n = int(g.integers(lo, hi + 1))
    radius = 0.75 * np.sqrt(g.random(n))
    phi = g.uniform(0.0, 2 * math.pi, n)
    cx, cy = radius * np.cos(phi), radius * np.sin(phi)
    a = g.uniform(*axis_range, n)
    b = g.uniform(*axis_range, n)
    theta = g.uniform(0.0, math.pi, n)
    value = g.uniform(*intensity_range, n)

    f64 = torch.float64
    t = (2 * torch.arange(size, dtype=f64) + 1) / size - 1
    py, px = torch.meshgrid(-t, t, indexing="ij")  # row 0 at the top (y = +1)
    image = torch.zeros(size, size, dtype=f64)
    for k in range(n):
        dx, dy = px - float(cx[k]), py - float(cy[k])
        c, s = math.cos(theta[k]), math.sin(theta[k])
        u = (c * dx + s * dy) / a[k]
        v = (-s * dx + c * dy) / b[k]
        image += float(value[k]) * (u * u + v * v <= 1)
    return image.clamp_(0.0, 1.0).to(dtype).unsqueeze(0)


def shepp_logan(size: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (modified) Shepp-Logan phantom of scikit-image, resized to ``size`` x ``size``.

    Parameters
    ----------
    size : int
        Side of the square image in pixels.
    dtype : torch.dtype
        Floating dtype of the result.

    Returns
    -------
    torch.Tensor
        Shape ``(1, size, size)``, values in [0, 1]: ``skimage.data.shepp_logan_phantom()``
        (400 x 400) resized with anti-aliasing (``skimage.transform.resize``), clipped to [0, 1].

    Raises
    ------
    InsufficientMemoryError
        If resizing needs more memory than is available (about 24 bytes per pixel), before allocating.

    Examples
    --------
    >>> from invstable.data import shepp_logan
    >>> tuple(shepp_logan(128).shape)
    (1, 128, 128)
    """
    size = _check_size(size)
    _check_phantom_memory(size, SHEPP_LOGAN_BYTES_PER_PIXEL, "Shepp-Logan phantom")
    import skimage.data
    import skimage.transform

    image = skimage.data.shepp_logan_phantom()
    if image.shape != (size, size):
        image = skimage.transform.resize(image, (size, size), order=1, anti_aliasing=True, mode="reflect")
    return torch.from_numpy(np.clip(image, 0.0, 1.0)).to(dtype).unsqueeze(0)


class EllipsePhantoms(torch.utils.data.Dataset):
    """A seeded, finite stream of random-ellipse phantoms (a source).

    Item ``i`` is ``random_ellipse_phantom(size, rng=g_i)`` where ``g_i`` is a numpy PCG64
    generator seeded with ``SeedSequence((seed, i))`` alone, so items are reproducible in any
    order and in any DataLoader worker, and streams of different seeds do not share a draw.

    Parameters
    ----------
    size : int
        Side of the images in pixels.
    count : int
        Number of phantoms.
    seed : int
        Stream seed in [0, 2**31 - 1].

    Examples
    --------
    >>> from invstable.data import EllipsePhantoms
    >>> source = EllipsePhantoms(32, count=4, seed=1)
    >>> len(source), tuple(source[3].shape)
    (4, (1, 32, 32))
    """

    def __init__(self, size: int, *, count: int, seed: int):
        self.size = _check_size(size)
        _check_phantom_memory(self.size, ELLIPSE_BYTES_PER_PIXEL, "ellipse phantom")
        self.count = _check_size(count, name="count")
        self.seed = check_seed(seed)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        index = _check_index(index, self.count, type(self).__name__)
        return random_ellipse_phantom(self.size, rng=sample_rng(self.seed, index))

    def config(self) -> dict:
        """JSON description from which :func:`make_source` rebuilds this source."""
        return {"name": "ellipses", "params": {"size": self.size, "count": self.count, "seed": self.seed}}

    def __repr__(self) -> str:
        return f"EllipsePhantoms(size={self.size}, count={self.count}, seed={self.seed})"


class SheppLogan(torch.utils.data.Dataset):
    """A one-item source holding :func:`shepp_logan` at ``size``."""

    def __init__(self, size: int):
        self.size = _check_size(size)
        _check_phantom_memory(self.size, SHEPP_LOGAN_BYTES_PER_PIXEL, "Shepp-Logan phantom")

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> torch.Tensor:
        _check_index(index, 1, type(self).__name__)
        return shepp_logan(self.size)

    def config(self) -> dict:
        """JSON description from which :func:`make_source` rebuilds this source."""
        return {"name": "shepp-logan", "params": {"size": self.size}}

    def __repr__(self) -> str:
        return f"SheppLogan(size={self.size})"


def _check_index(index, length: int, owner: str) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{owner} index must be an int, got {index!r}")
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"{owner} index {index} out of range for length {length}")
    return index
