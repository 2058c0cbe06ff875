"""Grayscale crops of the images that scikit-image ships (the deblurring image source)."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ._phantoms import _check_index, _check_size
from ._random import check_seed, sample_rng

#: Blur-G2 test images (PROTOCOLS.md). Never part of a training or validation source.
TEST_IMAGES: tuple[str, ...] = ("camera", "moon", "coins")

#: Blur-G2 training images: the natural photographs that scikit-image 0.26 loads without a
#: download, other than the test images. ``cat`` is left out because it is the same array as
#: ``chelsea``; synthetic or binary images (``binary_blobs``, ``checkerboard``, ``horse``,
#: ``colorwheel``, ``logo``, ``shepp_logan_phantom``), images smaller than 128 pixels
#: (``microaneurysms``, ``lfw_subset``) and the stereo pair ``stereo_motorcycle`` are left
#: out; ``brain``, ``cells3d``, ``eagle``, ``kidney``, ``lily``, ``skin``, ... need a
#: download and are never touched.
TRAIN_IMAGES: tuple[str, ...] = (
    "astronaut", "brick", "cell", "chelsea", "clock", "coffee", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "page", "retina", "rocket", "text",
)

#: Fraction of the width of each training image kept aside (the right-most columns) for
#: the validation crops; training crops come from the remaining left part.
VALIDATION_FRACTION = 0.2

REGIONS = ("full", "train", "validation")


@functools.lru_cache(maxsize=None)
def _load_gray(name: str) -> np.ndarray:
    import skimage.color
    import skimage.data
    import skimage.util

    if name not in TRAIN_IMAGES + TEST_IMAGES:
        raise ValueError(
            f"unknown bundled image {name!r}; valid names are {sorted(TRAIN_IMAGES + TEST_IMAGES)}"
        )
    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = skimage.color.rgb2gray(image[..., :3])
    image = skimage.util.img_as_float64(image)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    image.setflags(write=False)
    return image


def bundled_image(name: str) -> torch.Tensor:
    """A scikit-image bundled image as a grayscale float tensor in [0, 1].

    Parameters
    ----------
    name : str
        One of :data:`TRAIN_IMAGES` or :data:`TEST_IMAGES`.

    Returns
    -------
    torch.Tensor
        Shape ``(1, H, W)``, float32. RGB images are converted with
        ``skimage.color.rgb2gray`` (ITU-R 709 luma).

    Raises
    ------
    ValueError
        If ``name`` is not a bundled image usable offline.
    """
    return torch.from_numpy(_load_gray(name).copy()).unsqueeze(0)


def _column_range(width: int, size: int, region: str, name: str) -> tuple[int, int]:
    """Columns [lo, hi) a crop of ``size`` may cover in ``region`` of an image of ``width``."""
    if region == "full":
        lo, hi = 0, width
    else:
        held = max(size, math.ceil(VALIDATION_FRACTION * width))
        lo, hi = (0, width - held) if region == "train" else (width - held, width)
    if hi - lo < size:
        raise ValueError(
            f"image {name!r} (width {width}) has a {region} region of {hi - lo} columns, "
            f"too narrow for crops of {size}; use a smaller crop size"
        )
    return lo, hi


class ImageCrops(torch.utils.data.Dataset):
    """Seeded square grayscale crops of scikit-image's bundled images (a source).

    Crop ``i`` is taken from image ``images[i % len(images)]`` (so the images are used in
    turn) at a position drawn from a numpy generator seeded with ``SeedSequence((seed, i))`` alone.

    Parameters
    ----------
    images : sequence of str
        Names of bundled images (see :data:`TRAIN_IMAGES`, :data:`TEST_IMAGES`).
    size : int
        Side of the crops in pixels.
    count : int
        Number of crops.
    seed : int
        Stream seed in [0, 2**31 - 1].
    region : {"full", "train", "validation"}
        Part of each image the crops lie in: the whole image, the left part kept for
        training, or the right-most ``max(size, ceil(0.2 W))`` columns kept for
        validation. The train and validation regions of an image share no pixel.

    Examples
    --------
    >>> from invstable.data import ImageCrops
    >>> crops = ImageCrops(["camera"], size=32, count=2, seed=0)
    >>> tuple(crops[1].shape)
    (1, 32, 32)
    """

    def __init__(self, images, *, size: int, count: int, seed: int, region: str = "full"):
        if isinstance(images, str):
            images = (images,)
        self.images = tuple(images)
        if not self.images:
            raise ValueError("images is empty; pass at least one bundled image name")
        for name in self.images:
            if name not in TRAIN_IMAGES + TEST_IMAGES:
                raise ValueError(
                    f"unknown bundled image {name!r}; valid names are {sorted(TRAIN_IMAGES + TEST_IMAGES)}"
                )
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
        self.size = _check_size(size)
        self.count = _check_size(count, name="count")
        self.seed = check_seed(seed)
        self.region = region

    def __len__(self) -> int:
        return self.count

    def crop_box(self, index: int) -> tuple[str, int, int]:
        """The image name and the (row, column) of the top-left corner of crop ``index``."""
        index = _check_index(index, self.count, type(self).__name__)
        name = self.images[index % len(self.images)]
        height, width = _load_gray(name).shape
        if height < self.size:
            raise ValueError(f"image {name!r} has {height} rows, fewer than the crop size {self.size}")
        lo, hi = _column_range(width, self.size, self.region, name)
        g = sample_rng(self.seed, index)
        row = int(g.integers(0, height - self.size + 1))
        col = lo + int(g.integers(0, hi - lo - self.size + 1))
        return name, row, col

    def __getitem__(self, index: int) -> torch.Tensor:
        name, row, col = self.crop_box(index)
        crop = _load_gray(name)[row : row + self.size, col : col + self.size]
        return torch.from_numpy(crop.copy()).unsqueeze(0)

    def config(self) -> dict:
        """JSON description from which :func:`make_source` rebuilds this source."""
        return {
            "name": "crops",
            "params": {
                "images": list(self.images), "size": self.size, "count": self.count,
                "seed": self.seed, "region": self.region,
            },
        }

    def __repr__(self) -> str:
        return (f"ImageCrops(images={list(self.images)}, size={self.size}, count={self.count}, "
                f"seed={self.seed}, region={self.region!r})")
