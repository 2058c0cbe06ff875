"""Users' own images: a folder of PNG / TIFF / JPEG / .npy files, DICOM slices or NIfTI volumes, or an array
in an HDF5 file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ._errors import ImageReadError as ImageReadError  # defined apart: _medical raises it without importing this
from ._phantoms import _check_index

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy",)
CHANNEL_MODES = ("gray", "keep")


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
    """The images of a folder, as float tensors in [0, 1] (a source): PNG / TIFF / JPEG / .npy files, DICOM
    slices and NIfTI volumes.

    Files are taken in sorted order; other files are ignored.

    - .png, .tif, .tiff, .jpg, .jpeg (imageio, tifffile) and .npy (``numpy.load(allow_pickle=False)``): one image
      per file, scaled by :func:`to_unit_float`.
    - DICOM (.dcm, .dicom, .ima, or no suffix and the DICM marker; pydicom): one image per slice (per frame of a
      multi-frame file). RescaleSlope and RescaleIntercept give Hounsfield units (HU) for CT, which the window
      maps to [0, 1]. The slices of a series are ordered along the slice normal (ImagePositionPatient and
      ImageOrientationPatient), else by InstanceNumber, else by file name; a series takes the place of its first
      file in the sorted order.
    - NIfTI (.nii, .nii.gz; nibabel): one image per slice along ``axis``, the values (with the header's
      scl_slope / scl_inter; HU for CT) through the window.

    Parameters
    ----------
    root : str or os.PathLike
        The folder.
    channels : {"gray", "keep"}
        Convert to grayscale (C = 1) or keep the channel axis (see :func:`to_unit_float`).
    rescale : bool
        Rescale float arrays of image / .npy files from [min, max] to [0, 1] instead of rejecting them.
    recursive : bool
        Also take files in sub-folders.
    size : int or None
        Give every image ``size`` x ``size`` pixels: the central square of a non-square image, resized with
        anti-aliasing (``skimage.transform.resize``, linear), clipped to [0, 1]. ``None`` keeps the images as read
        (a paired dataset then needs images of one size).
    window : "ct", (low, high) or None
        How DICOM and NIfTI values become [0, 1] (image files are not affected). ``"ct"`` (default): the values
        are HU, converted to attenuation (:func:`hu_to_attenuation`) and divided by that of 3071 HU, air being 0
        (:data:`CT_WINDOW`, -1000 to 3071 HU, clipped); the image is then proportional to the attenuation, which a
        CT operator integrates. A DICOM file whose Modality is not CT is refused with this window. ``(low, high)``:
        values in the file's units (HU for CT) clipped to [low, high] and mapped linearly to [0, 1] (a narrower HU
        window shows soft tissue better, but with ``low`` above -1000 HU air is no longer 0). ``None``: each slice's
        min..max to [0, 1] (MR images and other arbitrary units).
    axis : int
        Axis of a NIfTI volume along which slices are taken (default -1, the last: axial slices of a volume stored
        as x, y, z). Each slice keeps the other two axes in the file's order.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder.
    ValueError
        If the folder holds no image file, or an argument is invalid.
    ImageReadError
        If a DICOM or NIfTI header cannot be read (their headers are read here, to count and order the slices);
        the message names every such file.

    Notes
    -----
    Reading an item that cannot be read raises :class:`ImageReadError` naming the file;
    :meth:`check` reads every item and reports every bad file at once. pydicom and nibabel read data only, and
    no file is ever forced open as DICOM.
    """

    def __init__(self, root, *, channels: str = "gray", rescale: bool = False, recursive: bool = False,
                 size: int | None = None, window="ct", axis: int = -1):
        from . import _medical

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a folder; pass a folder of PNG/TIFF/JPEG/.npy images, DICOM "
                                    "slices or NIfTI volumes")
        if channels not in CHANNEL_MODES:
            raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {channels!r}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive int (pixels per side) or None, got {size!r}")
        if isinstance(axis, bool) or not isinstance(axis, int) or not -3 <= axis <= 2:
            raise ValueError(f"axis must be an axis of a 3-D volume, -3 to 2, got {axis!r}")
        self.channels, self.rescale, self.recursive = channels, bool(rescale), bool(recursive)
        self.size, self.window, self.axis = size, _medical.check_window(window), axis
        pattern = "**/*" if recursive else "*"
        suffixes = IMAGE_SUFFIXES + ARRAY_SUFFIXES
        files = sorted(p for p in self.root.glob(pattern) if p.is_file())
        kinds = {}
        for p in files:
            if p.suffix.lower() in suffixes:
                kinds[p] = "image"
            elif _medical.is_nifti(p):
                kinds[p] = "nifti"
            elif _medical.looks_like_dicom(p):
                kinds[p] = "dicom"
        self.files = tuple(p for p in files if p in kinds)
        if not self.files:
            raise ValueError(f"{self.root}: no image files (looked for {', '.join(suffixes)}, DICOM "
                             f"({', '.join(_medical.DICOM_SUFFIXES)} or files marked DICM) and NIfTI "
                             f"({', '.join(_medical.NIFTI_SUFFIXES)}))")
        problems, headers, slices = [], {}, {}
        for p in self.files:
            try:
                if kinds[p] == "dicom":
                    headers[p] = _medical.dicom_header(p, self.window)
                elif kinds[p] == "nifti":
                    slices[p] = _medical.nifti_slices(p, axis)
            except ImageReadError as error:
                problems.append(error)
        if problems:
            listed = "; ".join(str(e) for e in problems[:10]) + ("; ..." if len(problems) > 10 else "")
            raise ImageReadError(self.root, f"{len(problems)} of {len(self.files)} files are unusable: {listed}")
        series_of = {p: files for files in _medical.order_dicom(headers) for p in files}
        items = []
        for p in self.files:
            if kinds[p] == "image":
                items.append((p, "image", 0))
            elif kinds[p] == "nifti":
                items += [(p, "nifti", k) for k in range(slices[p])]
            elif p == min(series_of[p]):  # a series takes the place of its first file name
                items += [(q, "dicom", f) for q in series_of[p] for f in range(headers[q]["frames"])]
        self.items = tuple(items)
        self._volume = {}  # the last compressed NIfTI volume read (see _medical.read_nifti), per process

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_volume"] = {}  # DataLoader workers read their own
        return state

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        from . import _medical

        path, kind, k = self.items[_check_index(index, len(self.items), type(self).__name__)]
        if kind == "image":
            x = to_unit_float(read_array_file(path), channels=self.channels, rescale=self.rescale, what=str(path))
        else:
            values = (_medical.read_dicom(path, k, self.window) if kind == "dicom"
                      else _medical.read_nifti(path, k, self.axis, self.window, self._volume))
            x = torch.from_numpy(values.astype(np.float32))[None]
        return x if self.size is None else _fit(x, self.size)

    def check(self) -> None:
        """Read every item; raise one :class:`ImageReadError` listing every bad file by name."""
        problems, bad = [], set()
        for i, (path, _, _) in enumerate(self.items):
            if path in bad:
                continue
            try:
                self[i]
            except ImageReadError as error:
                problems.append(error)
                bad.add(path)
        if problems:
            lines = "; ".join(str(e) for e in problems)
            raise ImageReadError(self.root, f"{len(problems)} of {len(self.files)} files are unusable: {lines}")

    def config(self) -> dict:
        """JSON description from which :func:`make_source` rebuilds this source."""
        window = list(self.window) if isinstance(self.window, tuple) else self.window
        return {"name": "folder", "params": {"root": os.fspath(self.root.resolve()), "channels": self.channels,
                                             "rescale": self.rescale, "recursive": self.recursive,
                                             "size": self.size, "window": window, "axis": self.axis}}

    def __repr__(self) -> str:
        return (f"ImageFolder({os.fspath(self.root)!r}, {len(self)} images from {len(self.files)} files, "
                f"channels={self.channels!r})")


def _fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central square of ``x`` (C, H, W), resized to ``size`` x ``size`` with anti-aliasing, in [0, 1]."""
    _, h, w = x.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = x[:, top:top + side, left:left + side]
    if side == size:
        return square.contiguous()
    import skimage.transform

    a = skimage.transform.resize(square.numpy().transpose(1, 2, 0).astype(np.float64), (size, size), order=1,
                                 anti_aliasing=side > size, mode="reflect")
    return torch.from_numpy(np.ascontiguousarray(np.clip(a, 0.0, 1.0).transpose(2, 0, 1), dtype=np.float32))


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
