"""Users' own images: a folder of PNG / TIFF / JPEG / .npy files, or an array in an HDF5 file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ._phantoms import _check_index

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy",)
CHANNEL_MODES = ("gray", "keep")


class ImageReadError(ValueError):
    """An image (or an array standing for one) could not be read or converted; names the file."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def to_unit_float(array: np.ndarray, *, channels: str = "gray", rescale: bool = False,
                  what: str = "array") -> torch.Tensor:
    """Convert an image array to a float32 tensor of shape (C, H, W) with values in [0, 1].

    Parameters
    ----------
    array : numpy.ndarray
        Shape (H, W) or (H, W, C) with C in {1, 2, 3, 4} (channels last, as image files are
        read). Integer images are divided by the largest value of their dtype, booleans map
        to {0, 1}, float images must already lie in [0, 1] unless ``rescale``.
    channels : {"gray", "keep"}
        ``"gray"`` converts RGB(A) to luma with ``skimage.color.rgb2gray`` (alpha dropped) and
        gives C = 1; ``"keep"`` keeps the channel axis (C = 1 for a 2-D image).
    rescale : bool
        Map a float image linearly from [min, max] to [0, 1] instead of rejecting values
        outside [0, 1].
    what : str
        Name used in error messages (a file name).

    Returns
    -------
    torch.Tensor
        float32, shape (C, H, W).

    Raises
    ------
    ImageReadError
        If the array has an unusable shape, dtype or value range, or non-finite values.
    """
    if channels not in CHANNEL_MODES:
        raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {channels!r}")
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] not in (1, 2, 3, 4):
        raise ImageReadError(what, f"shape {a.shape} is not (H, W) or (H, W, C) with C in 1..4")
    if a.ndim not in (2, 3) or min(a.shape[:2]) < 1:
        raise ImageReadError(what, f"shape {a.shape} is not (H, W) or (H, W, C) with C in 1..4")
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.signedinteger) and a.min() < 0:
            raise ImageReadError(what, f"signed integer image with negative values (min {a.min()})")
        a, _ = scale_integers(a)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ImageReadError(what, "contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if rescale:
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        elif lo < 0 or hi > 1:
            raise ImageReadError(
                what, f"float values span [{lo:.4g}, {hi:.4g}], outside [0, 1]; pass rescale=True to map min..max to [0, 1]"
            )
    else:
        raise ImageReadError(what, f"unsupported dtype {a.dtype}; use an integer, boolean or float array")
    if a.ndim == 2:
        a = a[..., None]
    if channels == "gray" and a.shape[-1] > 1:
        import skimage.color

        a = a[..., :1] if a.shape[-1] == 2 else skimage.color.rgb2gray(a[..., :3])[..., None]
    return torch.from_numpy(np.ascontiguousarray(np.clip(a, 0.0, 1.0).transpose(2, 0, 1), dtype=np.float32))


#: The first bytes of each readable file format (HDF5 files are checked by h5py).
SIGNATURES = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".tif": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    ".tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".npy": (b"\x93NUMPY",),
}


def scale_integers(array: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Apply invstable's one rule for integer data, whatever the file format.

    Integer arrays are divided by the largest value of their dtype (uint8 by 255, uint16 by 65535,
    int16 by 32767, ...), booleans map to {0, 1}; float arrays are returned as they are.

    Returns
    -------
    (numpy.ndarray, str or None)
        The float64 (or untouched float) array and a note saying what was done (``None`` for floats).
    """
    a = np.asarray(array)
    if a.dtype == bool:
        return a.astype(np.float64), "bool mapped to {0, 1}"
    if np.issubdtype(a.dtype, np.integer):
        top = np.iinfo(a.dtype).max
        return a.astype(np.float64) / top, f"{a.dtype} divided by {top}"
    return a, None


def read_array_file(path) -> np.ndarray:
    """The array in an image or .npy file, as stored (no scaling); every failure is an :class:`ImageReadError`.

    .npy files are read with ``numpy.load(allow_pickle=False)``, .tif/.tiff with tifffile, .png and
    .jpg/.jpeg with imageio. The file is opened and closed here, also when it cannot be decoded, and its
    first bytes are checked against the format its name claims before a decoder sees it.

    Raises
    ------
    ImageReadError
        If the file is missing, empty, not of the format its extension names, or cannot be decoded.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SIGNATURES:
        raise ImageReadError(path, f"unknown extension {suffix!r}; readable are {', '.join(SIGNATURES)}")
    kind = suffix[1:].upper()
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            if not head:
                raise ImageReadError(path, f"cannot be read as {kind}: the file is empty (0 bytes)")
            if not head.startswith(SIGNATURES[suffix]):
                text = all(32 <= b < 127 or b in b"\t\r\n" for b in head)
                raise ImageReadError(
                    path, f"cannot be read as {kind}: not a {kind} file (it starts with {head[:8]!r}"
                          f"{', a text file' if text else ''}); check the file or its extension")
            fh.seek(0)
            if suffix == ".npy":
                return np.load(fh, allow_pickle=False)
            if suffix in (".tif", ".tiff"):
                import tifffile

                return tifffile.imread(fh)
            import imageio.v3 as iio

            return iio.imread(fh.read(), extension=suffix)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not a file") from None
    except Exception as error:  # every decoder failure becomes a named error
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ImageReadError(path, f"cannot be read as {kind} ({type(error).__name__}: {first})") from None


class ImageFolder(torch.utils.data.Dataset):
    """The images of a folder, as float tensors in [0, 1] (a source).

    Files ending in .png, .tif, .tiff, .jpg, .jpeg (read with imageio) or .npy (read with
    ``numpy.load(allow_pickle=False)``) are taken, in sorted order; other files are ignored.

    Parameters
    ----------
    root : str or os.PathLike
        The folder.
    channels : {"gray", "keep"}
        Convert to grayscale (C = 1) or keep the channel axis (see :func:`to_unit_float`).
    rescale : bool
        Rescale float arrays from [min, max] to [0, 1] instead of rejecting them.
    recursive : bool
        Also take files in sub-folders.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder.
    ValueError
        If the folder holds no image file.

    Notes
    -----
    Reading an item that cannot be read raises :class:`ImageReadError` naming the file;
    :meth:`check` reads every file and reports every bad one at once.
    """

    def __init__(self, root, *, channels: str = "gray", rescale: bool = False, recursive: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a folder; pass a folder of PNG/TIFF/JPEG/.npy images")
        if channels not in CHANNEL_MODES:
            raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {channels!r}")
        self.channels, self.rescale, self.recursive = channels, bool(rescale), bool(recursive)
        pattern = "**/*" if recursive else "*"
        suffixes = IMAGE_SUFFIXES + ARRAY_SUFFIXES
        self.files = tuple(sorted(
            p for p in self.root.glob(pattern) if p.is_file() and p.suffix.lower() in suffixes
        ))
        if not self.files:
            raise ValueError(f"{self.root}: no image files (looked for {', '.join(suffixes)})")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.files[_check_index(index, len(self.files), type(self).__name__)]
        return to_unit_float(read_array_file(path), channels=self.channels, rescale=self.rescale, what=str(path))

    def check(self) -> None:
        """Read every file; raise one :class:`ImageReadError` listing every bad file by name."""
        problems = []
        for i, path in enumerate(self.files):
            try:
                self[i]
            except ImageReadError as error:
                problems.append(error)
        if problems:
            lines = "; ".join(str(e) for e in problems)
            raise ImageReadError(self.root, f"{len(problems)} of {len(self.files)} files are unusable: {lines}")

    def config(self) -> dict:
        """JSON description from which :func:`make_source` rebuilds this source."""
        return {"name": "folder", "params": {"root": os.fspath(self.root.resolve()), "channels": self.channels,
                                             "rescale": self.rescale, "recursive": self.recursive}}

    def __repr__(self) -> str:
        return f"ImageFolder({os.fspath(self.root)!r}, {len(self)} files, channels={self.channels!r})"


class HDF5Images(torch.utils.data.Dataset):
    """Images stored as one array in an HDF5 file (a source), read lazily with h5py.

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 file.
    key : str
        Name of the dataset inside the file.
    layout : {"NHW", "NHWC", "NCHW", None}
        Axis order of the array; ``None`` infers it: 3 axes give NHW, 4 axes give NHWC when
        the last axis has 1 to 4 entries, otherwise NCHW when axis 1 has 1 to 4 entries.
    channels, rescale
        As for :class:`ImageFolder`.

    Notes
    -----
    The file is opened on first access in each process, so the dataset works with
    DataLoader workers. Nothing in the file is executed.
    """

    LAYOUTS = ("NHW", "NHWC", "NCHW")

    def __init__(self, path, *, key: str, layout: str | None = None, channels: str = "gray", rescale: bool = False):
        import h5py

        self.path, self.key = Path(path), key
        if channels not in CHANNEL_MODES:
            raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {channels!r}")
        self.channels, self.rescale = channels, bool(rescale)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file")
        try:
            with h5py.File(self.path, "r") as f:
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    names = []
                    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
                    raise ImageReadError(self.path, f"has no dataset {key!r}; datasets in the file: {names}")
                shape = f[key].shape
        except OSError as error:
            raise ImageReadError(self.path, f"not a readable HDF5 file ({error})") from None
        if layout is None:
            if len(shape) == 3:
                layout = "NHW"
            elif len(shape) == 4 and 1 <= shape[3] <= 4:
                layout = "NHWC"
            elif len(shape) == 4 and 1 <= shape[1] <= 4:
                layout = "NCHW"
            else:
                raise ImageReadError(self.path, f"dataset {key!r} has shape {shape}; pass layout= one of {self.LAYOUTS}")
        if layout not in self.LAYOUTS or len(shape) != len(layout):
            raise ImageReadError(self.path, f"dataset {key!r} of shape {shape} does not fit layout {layout!r}")
        self.layout, self.shape = layout, tuple(shape)
        self._file, self._pid = None, None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None
        return state

    def __getitem__(self, index: int) -> torch.Tensor:
        import h5py

        index = _check_index(index, len(self), type(self).__name__)
        if self._file is None or self._pid != os.getpid():
            try:
                self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
            except OSError as error:
                raise ImageReadError(self.path, f"cannot be reopened ({error})") from None
        try:
            a = self._file[self.key][index]
        except OSError as error:
            raise ImageReadError(self.path, f"item {index} of {self.key!r} cannot be read ({error})") from None
        if self.layout == "NCHW":
            a = np.moveaxis(a, 0, -1)
        return to_unit_float(a, channels=self.channels, rescale=self.rescale, what=f"{self.path}[{self.key}][{index}]")

    def config(self) -> dict:
        """JSON description from which :func:`make_source` rebuilds this source."""
        return {"name": "hdf5-images", "params": {"path": os.fspath(self.path.resolve()), "key": self.key,
                                                  "layout": self.layout, "channels": self.channels,
                                                  "rescale": self.rescale}}
