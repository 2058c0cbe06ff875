"""Medical images: DICOM slices (pydicom) and NIfTI volumes (nibabel), from Hounsfield units to [0, 1].

A CT scanner stores Hounsfield units (HU), an affine map of the linear attenuation coefficient that sets water to 0
and air to -1000. invstable's CT operators integrate attenuation along rays, so an image for them must be
proportional to the attenuation: :func:`hu_to_attenuation` inverts the definition of HU, and :func:`to_window` maps a
window of HU to [0, 1]. With the default window :data:`CT_WINDOW` (-1000 HU to 3071 HU, the 12-bit CT range) air is
0 and the image is the attenuation divided by that of 3071 HU, as in LoDoPaB-CT.

Nothing read is executed: pydicom and nibabel parse the headers and pixel arrays as data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._errors import ImageReadError

#: Linear attenuation of water at about 70 keV, the effective energy of a 120 kVp CT beam, in 1/mm (NIST XCOM: mass
#: attenuation 0.193 cm^2/g at 70 keV).
MU_WATER = 0.0192
#: Default window of CT images, in HU: air (-1000 HU, no attenuation) to 3071 HU, the top of the 12-bit range that CT
#: scanners store; the image is then attenuation / attenuation(3071 HU) (LoDoPaB-CT's normalisation).
CT_WINDOW = (-1000.0, 3071.0)
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def hu_to_attenuation(hu, *, mu_water: float = MU_WATER):
    r"""Linear attenuation coefficients (1/mm) of Hounsfield units.

    .. math:: \mu = \mu_\text{water}\,(1 + \text{HU} / 1000)

    Parameters
    ----------
    hu : float or numpy.ndarray
        Hounsfield units (-1000 is air, 0 is water).
    mu_water : float
        Attenuation of water in 1/mm at the beam's effective energy (default :data:`MU_WATER`, about 70 keV).

    Examples
    --------
    >>> from invstable.data import hu_to_attenuation
    >>> float(hu_to_attenuation(-1000.0)), float(hu_to_attenuation(0.0))
    (0.0, 0.0192)
    """
    if isinstance(mu_water, bool) or not isinstance(mu_water, (int, float)) or not (
            math.isfinite(mu_water) and mu_water > 0):
        raise ValueError(f"mu_water must be a finite attenuation > 0 in 1/mm, got {mu_water!r}")
    return mu_water * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0)


def check_window(window):
    """``"ct"``, ``None`` or a (low, high) pair of finite numbers with low < high, as a tuple of floats."""
    if window is None or (isinstance(window, str) and window == "ct"):
        return window
    if isinstance(window, (list, tuple)) and len(window) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in window):
        low, high = float(window[0]), float(window[1])
        if low < high:
            return (low, high)
    raise ValueError(f"window must be 'ct' (the HU window {CT_WINDOW}), a pair (low, high) with low < high in the "
                     f"file's units, or None (each slice's min..max), got {window!r}")


def to_window(values: np.ndarray, window, *, what: str) -> np.ndarray:
    """Map ``values`` (HU for ``"ct"``) to [0, 1] through ``window``, clipped; ``None`` maps min..max."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ImageReadError(what, "contains NaN or infinite values")
    if window is None:
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    low, high = CT_WINDOW if window == "ct" else window
    if window == "ct":  # the image is proportional to attenuation: through mu, as the module docstring says
        mu, mu_low, mu_high = hu_to_attenuation(values), hu_to_attenuation(low), hu_to_attenuation(high)
        return np.clip((mu - mu_low) / (mu_high - mu_low), 0.0, 1.0)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def looks_like_dicom(path: Path) -> bool:
    """A DICOM suffix, or no suffix and the "DICM" marker after the 128-byte preamble (scanner exports)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _failure(path, kind: str, error: Exception) -> ImageReadError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return ImageReadError(path, f"cannot be read as {kind} ({type(error).__name__}: {first})")


# ------------------------------------------------------------------------------------------------------------ DICOM
def dicom_header(path: Path, window) -> dict:
    """What ordering and reading a DICOM file needs, from its header only (the pixels are not read).

    Returns ``{"series", "position", "instance", "frames"}``: the series it belongs to, its position along the
    slice normal (``None`` without ImagePositionPatient / ImageOrientationPatient), its InstanceNumber (or None)
    and its number of frames.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as error:
        raise ImageReadError(path, f"not a DICOM file ({error})") from None
    except Exception as error:  # a truncated or malformed header becomes a named error
        raise _failure(path, "DICOM", error) from None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise ImageReadError(path, f"a colour DICOM image ({samples} samples per pixel); only grayscale "
                                   "(MONOCHROME) images are read")
    modality = str(ds.get("Modality", "")) or "none"
    if window == "ct" and modality != "CT":
        raise ImageReadError(path, f"modality {modality!r} has no Hounsfield units for the default window 'ct'; "
                                   "pass window=(low, high) in the file's units, or window=None for each slice's "
                                   "min..max")
    position = None
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is not None and iop is not None and len(ipp) == 3 and len(iop) == 6:
        normal = np.cross(np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float))
        position = float(np.dot(normal, np.asarray(ipp, dtype=float)))
    instance = ds.get("InstanceNumber")
    return {"series": str(ds.get("SeriesInstanceUID", "")), "position": position,
            "instance": None if instance in (None, "") else int(instance),
            "frames": int(ds.get("NumberOfFrames", 1) or 1)}


def read_dicom(path: Path, frame: int, window) -> np.ndarray:
    """Frame ``frame`` of a DICOM file in [0, 1]: stored values, RescaleSlope / RescaleIntercept (HU for CT,
    pydicom's modality LUT), then the window."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds:
            raise ImageReadError(path, "a DICOM file without pixel data (PixelData)")
        stored = ds.pixel_array
        values = apply_modality_lut(stored, ds)
    except ImageReadError:
        raise
    except Exception as error:  # missing decoder for compressed pixels, truncated pixel data, ...
        raise _failure(path, "DICOM", error) from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        values = values[frame]
    if values.ndim != 2:
        raise ImageReadError(path, f"pixel array of shape {values.shape} is not one 2-D slice per frame")
    return to_window(values, window, what=str(path))


def order_dicom(headers: dict) -> list:
    """DICOM files ordered: by series (in the order of each series' first file name), then along the slice normal
    (ImagePositionPatient), else by InstanceNumber, else by file name."""
    series: dict = {}
    for path in sorted(headers):
        series.setdefault((path.parent, headers[path]["series"]), []).append(path)
    ordered = []
    for files in series.values():
        if all(headers[p]["position"] is not None for p in files):
            files = sorted(files, key=lambda p: (headers[p]["position"], p))
        elif all(headers[p]["instance"] is not None for p in files):
            files = sorted(files, key=lambda p: (headers[p]["instance"], p))
        ordered.append(files)
    return ordered


# ------------------------------------------------------------------------------------------------------------ NIfTI
def _volume_shape(shape: tuple, path) -> tuple:
    """The 2-D or 3-D shape of a NIfTI image (trailing axes of length 1 dropped)."""
    shape = tuple(int(n) for n in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ImageReadError(path, f"a NIfTI image of shape {shape}; only 2-D slices and 3-D volumes are read "
                                   "(split a 4-D series into volumes first)")
    return shape


def nifti_slices(path: Path, axis: int) -> int:
    """Number of 2-D slices along ``axis`` of a NIfTI file (its header only)."""
    import nibabel

    try:
        image = nibabel.load(path)
    except Exception as error:
        raise _failure(path, "NIfTI", error) from None
    shape = _volume_shape(image.shape, path)
    return 1 if len(shape) == 2 else shape[axis]


def read_nifti(path: Path, index: int, axis: int, window, cache: dict | None = None) -> np.ndarray:
    """Slice ``index`` along ``axis`` of a NIfTI volume in [0, 1] (nibabel applies scl_slope / scl_inter; CT
    volumes are in HU).

    A compressed volume (.nii.gz) cannot be read slice by slice without decompressing everything before the slice;
    with ``cache`` (a dict owned by the caller) its stored values are kept, one volume at a time, so reading every
    slice in turn decompresses it once. An uncompressed .nii is memory-mapped and read slice by slice.
    """
    import nibabel

    try:
        if cache is not None and path.name.lower().endswith(".gz"):
            key = (path, path.stat().st_mtime_ns)
            if cache.get("key") != key:
                cache.clear()  # one volume at a time: the previous one is freed before the next is read
                image = nibabel.load(path)
                shape = _volume_shape(image.shape, path)
                proxy = image.dataobj
                cache.update(key=key, shape=shape, stored=np.asarray(proxy.get_unscaled()).reshape(shape),
                             slope=float(proxy.slope), inter=float(proxy.inter))
            shape, stored = cache["shape"], cache["stored"]
            part = stored if len(shape) == 2 else np.take(stored, index, axis=axis)
            values = part * cache["slope"] + cache["inter"]
        else:
            image = nibabel.load(path)
            shape = _volume_shape(image.shape, path)
            proxy = image.dataobj
            if len(shape) == 2:
                values = np.asarray(proxy).reshape(shape)
            else:
                where = [slice(None)] * len(image.shape)
                where[axis % 3] = index
                values = np.asarray(proxy[tuple(where)]).reshape([n for i, n in enumerate(shape) if i != axis % 3])
    except ImageReadError:
        raise
    except Exception as error:  # truncated data, bad compression, ...
        raise _failure(path, "NIfTI", error) from None
    return to_window(values, window, what=f"{path}[slice {index}]")
