"""``invstable reconstruct``: measurements from a file -> image file, by a learned model or a baseline."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from .dataset import _key_value, build_operator, check_image_memory
from ..data._folder import read_array_file, scale_integers

READABLE = (".npy", ".tif", ".tiff", ".h5", ".hdf5", ".png")
HDF5 = (".h5", ".hdf5")
WRITABLE = (".png", ".npy", ".tif", ".tiff", ".h5", ".hdf5")
BASELINES = ("fbp", "tikhonov", "tv")
#: How stored numbers become measurements, the same for every input format.
SCALING_RULE = ("integer data, in any format, are divided by the largest value of their dtype (uint8 by 255, "
                "uint16 by 65535, int16 by 32767, ...) and booleans become 0 / 1; floats are taken as they are")
#: The options that only some methods use: option -> (attribute, the method kinds that use it, what it is).
#: A kind is a baseline's name, "model" (a learned model) or "universal" (the universal regulariser).
METHOD_OPTIONS = {
    "--filter": ("filter", ("fbp",), "the FBP filter"),
    "--alpha": ("alpha", ("tikhonov", "tv"), "the regularisation weight of tikhonov / tv"),
    "--regularizer": ("regularizer", ("tikhonov",), "the Tikhonov regulariser"),
    "--noise-level": ("noise_level", ("tikhonov", "universal"), "the noise level of tikhonov's automatic alpha "
                                                                 "and of the universal regulariser's weights"),
    "--preset": ("preset", ("universal",), "the universal regulariser's tuned weights"),
}
OPERATOR_OPTIONS = (("--angles", "angles"), ("--image-size", "image_size"), ("--sigma", "sigma"), ("--param", "param"))


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "reconstruct", help="reconstruct an image from measurements in a file",
        description="Reconstruct x from measurements y = A x + noise read from a file (.npy, .tif/.tiff, .h5, "
                    ".png). The method is a pretrained model name (see `invstable models`), a model file written "
                    "by `invstable train` / model.save, or a baseline: fbp (CT), tikhonov, tv. A model brings its "
                    "own operator; baselines need --operator. Input scaling: " + SCALING_RULE + ". An option "
                    "the chosen method does not use is an error, not ignored.",
        epilog="example: invstable reconstruct --operator ct --angles 30 --input sinogram.npy "
               "--method ct30-gradflow --out x.png")
    p.add_argument("--input", required=True, help="measurements: .npy, .tif/.tiff, .h5/.hdf5 (see --key) or .png; "
                                                  "one measurement (e.g. detectors x angles) or a batch; "
                                                  "integer data are divided by the largest value of their dtype, "
                                                  "whatever the format")
    p.add_argument("--key", help="dataset inside an HDF5 input (default: 'y' if present, else the only dataset); "
                                 "HDF5 input only")
    p.add_argument("--out", required=True, help="reconstruction: .png (clipped to [0, 1], 16 bit), .npy, .tif/.tiff "
                                                "or .h5 (dataset 'x'); written atomically; missing folders are "
                                                "created; an existing file is refused unless --overwrite; never "
                                                "the input")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (the whole file, an .h5 too); the input is never replaced")
    p.add_argument("--method", required=True,
                   help=f"pretrained model name, model file (.safetensors), or one of {', '.join(BASELINES)}")
    p.add_argument("--operator", help="registered operator name (ct, blur, a plugin's); required for baselines, "
                                      "checked against a model's own operator")
    p.add_argument("--angles", type=int, help="ct: number of angles, uniform in [0, 180) degrees")
    p.add_argument("--image-size", type=int, help="ct, blur: image size (default 128)")
    p.add_argument("--sigma", type=float, help="blur: standard deviation of the Gaussian kernel in pixels")
    p.add_argument("--param", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="further operator parameter, VALUE read as JSON (repeatable)")
    p.add_argument("--alpha",
                   help="tikhonov: a number, or 'auto' (default; discrepancy principle with --noise-level, else "
                        "GCV); tv: the weight lambda (default 1e-3)")
    p.add_argument("--regularizer", choices=("identity", "gradient"),
                   help="tikhonov regulariser (default: identity)")
    p.add_argument("--noise-level", type=float, help="noise standard deviation: tikhonov's --alpha auto, the "
                                                     "universal regulariser's weights")
    p.add_argument("--filter", help="fbp filter: ramp (default), shepp-logan, cosine, hamming, hann")
    p.add_argument("--preset", help="universal: the weights tuned on a protocol task's validation split (ct-30, "
                                    "ct-180, blur-g2); default: the noise-level rule (--noise-level)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, auto (default: %(default)s); a device "
                                                   "that is not there is an error")
    p.set_defaults(func=run)
    return p


# ---------------------------------------------------------------------------------------------- files
def read_array(path: str | os.PathLike, key: str | None = None) -> tuple[np.ndarray, str | None]:
    """The measurements in a file as float64, and a note on the scaling applied (``None`` if none).

    .npy (never unpickled), .tif/.tiff, .png and .h5/.hdf5 (dataset ``key``) are read; integer data are
    divided by their dtype's largest value whatever the format (:data:`SCALING_RULE`).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file: an unknown extension, ``key`` on a non-HDF5 file, an empty or unreadable file, a
        missing HDF5 dataset (listing those there), complex, empty or non-finite data.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise ValueError(f"cannot read {str(path)!r}: unknown extension {suffix!r}; use one of {READABLE}")
    if path.is_dir():
        raise ValueError(f"--input {path} is a folder; give a file")
    if not path.is_file():
        raise FileNotFoundError(f"input file {str(path)!r} does not exist")
    if key is not None and suffix not in HDF5:
        raise ValueError(f"--key applies to HDF5 input (.h5, .hdf5); {path} is a {suffix} file: leave --key out")
    arr = np.asarray(_read_hdf5(path, key) if suffix in HDF5 else read_array_file(path))
    if np.iscomplexobj(arr):
        raise ValueError(f"{path}: holds complex numbers ({arr.dtype}); reconstruct takes real measurements: "
                         "store the real part (or the magnitude) instead")
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{path}: holds {arr.dtype} data; expected real numbers")
    if arr.size == 0:
        raise ValueError(f"{path}: holds an empty array of shape {arr.shape}")
    arr, note = scale_integers(arr)
    arr = arr.astype(np.float64)
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ValueError(f"{path}: {bad} of {arr.size} values are NaN or infinite")
    return arr, note


def _read_hdf5(path: Path, key: str | None):
    import h5py

    if path.stat().st_size == 0:
        raise ValueError(f"{path}: cannot be read as HDF5: the file is empty (0 bytes)")
    try:
        with h5py.File(path, "r") as fh:
            names = []
            fh.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            if key is None:
                key = "y" if "y" in names else (names[0] if len(names) == 1 else None)
                if key is None:
                    raise ValueError(f"{path}: holds {len(names) or 'no'} datasets {names}; choose one with --key")
            elif key not in fh:
                raise ValueError(f"{path}: has no dataset {key!r}; datasets in the file: {names}")
            elif not isinstance(fh[key], h5py.Dataset):
                raise ValueError(f"{path}: {key!r} is a group, not a dataset; datasets in the file: {names}")
            return fh[key][()]
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file, truncated or corrupted ({error})") from None


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_output(path: str | os.PathLike, *, inputs=(), overwrite: bool = False) -> Path:
    """Refuse an output path before any work: an unknown extension, one of ``inputs``, or an existing file
    unless ``overwrite``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE:
        raise ValueError(f"cannot write {str(path)!r}: unknown extension {suffix!r}; use one of {WRITABLE}")
    for read in inputs:
        if _same_file(path, Path(read)):
            raise ValueError(f"--out {path} is the input {read}; write the reconstruction to another file")
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"--out {path} already exists; pass --overwrite to replace it (the whole file)")
    return path


def _write_file(path: Path, write, *, overwrite: bool) -> Path:
    """Write through ``write(tmp)`` atomically; without ``overwrite`` the file appears only where none is."""
    from .._files import atomic_write

    try:
        return atomic_write(path, write, overwrite=overwrite)
    except FileExistsError:
        raise FileExistsError(f"--out {path} appeared while reconstructing (another process wrote it); "
                              "pass --overwrite to replace it") from None


def write_array(path: str | os.PathLike, x: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a reconstruction atomically; PNG is clipped to [0, 1] and 16 bit (one image only).

    An existing file is refused unless ``overwrite`` (which replaces the whole file, an .h5 too).
    """
    path = check_output(path, overwrite=overwrite)
    suffix = path.suffix.lower()
    if suffix == ".png":
        img = np.squeeze(x)
        if img.ndim != 2:
            raise ValueError(f"a PNG holds one grayscale image; the reconstruction has shape {x.shape}: use .npy/.h5")

        def write(tmp):
            import imageio.v3 as iio

            iio.imwrite(tmp, (np.clip(img, 0, 1) * 65535).round().astype(np.uint16), extension=".png")
    elif suffix == ".npy":
        def write(tmp):
            with open(tmp, "wb") as fh:
                np.save(fh, x)
    elif suffix in (".tif", ".tiff"):
        def write(tmp):
            import tifffile

            tifffile.imwrite(tmp, x.astype(np.float32))
    else:
        def write(tmp):
            import h5py

            with h5py.File(tmp, "w") as fh:
                fh.create_dataset("x", data=x)
    return _write_file(path, write, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------- operator
def _operator_params(args) -> dict:
    params = dict(args.param)
    for name, value in (("angles", args.angles), ("image_size", args.image_size), ("sigma", args.sigma)):
        if value is not None:
            params[name] = value
    return params


def _build_operator(args):
    params = _operator_params(args)
    if args.operator in ("ct", "blur"):
        params.setdefault("image_size", 128)
    if args.operator == "ct" and "angles" not in params:
        raise ValueError("--operator ct needs --angles N (or --param angles=[...])")
    if args.operator == "blur" and "sigma" not in params and "kernel" not in params:
        raise ValueError("--operator blur needs --sigma S (or --param kernel=[[...]])")
    return build_operator(args.operator, params)


def _as_batch(y: np.ndarray, op):
    """Shape the measurement as the operator takes it: one measurement, or a batch of them."""
    import torch

    from ..operators import Operator

    want = None
    if isinstance(op, Operator) and op.image_shape is not None:
        want = tuple(op.measurement_shape((1, *op.image_shape)))[1:]  # one measurement, no batch axis
    t = torch.from_numpy(y).float()
    if want is None:
        return t if t.ndim >= 3 else t[None, None]
    if tuple(t.shape[-len(want):]) != want:
        raise ValueError(f"the measurement has shape {tuple(y.shape)}, but the operator {op!r} makes measurements of "
                         f"shape {want} (one) or (B, {', '.join(map(str, want))}); check --angles / --image-size")
    lead = t.shape[:-len(want)]
    if len(lead) == 0:
        return t[None, None]
    if len(lead) == 1:
        return t[:, None]
    if len(lead) == 2 and lead[1] == 1:
        return t
    raise ValueError(f"the measurement has shape {tuple(y.shape)}; expected {want}, (B, *{want}) or (B, 1, *{want})")


# ---------------------------------------------------------------------------------------------- run
def _method_kind(method: str) -> str:
    """A baseline's name, "model" (a learned model) or "universal"; raises for an unknown method."""
    from ..models import list_models
    from ..models._io import RIDGE_FORMAT, file_format
    from ..models._pretrained import PRETRAINED, _resolve

    if method in BASELINES:
        return method
    if method not in PRETRAINED and not Path(method).exists():
        raise ValueError(f"unknown method {method!r}: not a baseline ({', '.join(BASELINES)}), a pretrained "
                         f"model ({', '.join(list_models()) or 'none installed'}) or an existing model file")
    return "universal" if file_format(_resolve(method)) == RIDGE_FORMAT else "model"


def _refuse_unused_options(args, kind: str) -> None:
    """An option the method would ignore is an error, so that nothing given is silently dropped."""
    name = {"model": f"{args.method} (a learned model)", "universal": f"{args.method} (the universal regulariser)"}
    for flag, (attr, users, what) in METHOD_OPTIONS.items():
        if getattr(args, attr) is not None and kind not in users:
            raise ValueError(f"{flag} does not apply to --method {name.get(kind, kind)}: it sets {what}; leave it out")
    if not args.operator:
        given = [flag for flag, attr in OPERATOR_OPTIONS if getattr(args, attr) not in (None, [])]
        if given:
            raise ValueError(f"{', '.join(given)} describe{'s' if len(given) == 1 else ''} an operator: give "
                             "--operator NAME with them (with a model, its operator is then checked against it)")


def run(args) -> int:
    import torch

    from ..models import load_model
    from ..training._loop import resolve_device

    method = args.method
    kind = _method_kind(method)
    _refuse_unused_options(args, kind)
    device = resolve_device(args.device)
    inputs = [args.input] + ([method] if Path(method).exists() else [])
    check_output(args.out, inputs=inputs, overwrite=args.overwrite)
    if kind in BASELINES:
        if not args.operator:
            raise ValueError(f"--method {method} needs --operator (e.g. --operator ct --angles 30)")
        op = _build_operator(args)
        from ..operators import ParallelBeamCT

        if method == "fbp" and not isinstance(op, ParallelBeamCT):
            raise ValueError(f"--method fbp inverts parallel-beam CT (--operator ct) only, got --operator "
                             f"{args.operator} ({type(op).__name__}); use --method tikhonov or --method tv for it")
    elif kind == "universal":
        if not args.operator:
            raise ValueError(f"--method {method} serves any operator: pass --operator NAME (ct, blur, a plugin's) "
                             "with its parameters")
        op = _build_operator(args)
        model = load_model(method, operator=op, preset=args.preset, noise_level=args.noise_level)
    else:
        model = load_model(method)
        op = model.operator
        if args.operator:
            asked = _build_operator(args)
            if asked.config() != op.config():
                raise ValueError(f"the model {method!r} was trained for {op!r}, not for {asked!r}; leave --operator "
                                 "out to use the model's own operator, or pick a model for this operator")
    array, scaling = read_array(args.input, args.key)
    y = _as_batch(array, op)
    from ..operators import Operator

    check_image_memory(op.image_shape if isinstance(op, Operator) else None, batch=int(y.shape[0]))
    y = y.to(device)
    with torch.no_grad():
        if method == "fbp":
            from ..baselines import fbp

            filt = args.filter or "ramp"
            x = fbp(y, op, filter=filt)
            note = {"method": "fbp", "filter": filt}
        elif method == "tikhonov":
            from ..baselines import choose_alpha, tikhonov

            regularizer = args.regularizer or "identity"
            if args.alpha in (None, "auto"):
                rule = "discrepancy" if args.noise_level is not None else "gcv"
                alpha = choose_alpha(y, op, noise_level=args.noise_level, rule=rule, regularizer=regularizer)
            else:
                alpha = _float(args.alpha, "--alpha")
            x = tikhonov(y, op, alpha, regularizer=regularizer)
            note = {"method": "tikhonov",
                    "alpha": [alpha] if isinstance(alpha, float) else torch.as_tensor(alpha).flatten().tolist(),
                    "regularizer": regularizer}
        elif method == "tv":
            from ..baselines import tv

            lam = 1e-3 if args.alpha in (None, "auto") else _float(args.alpha, "--alpha")
            x = tv(y, op, lam)
            note = {"method": "tv", "lambda": lam}
        else:
            model = model.to(device)
            x = model(y)
            note = {"method": method, "lipschitz_bound": model.lipschitz_bound()}
            if hasattr(model, "last_solve"):  # a variational model (an unrolled one has a certificate() too)
                cert = model.certificate(rounding=False)  # only its additive term is reported (no measurement)
                note.update(model.parameters_dict(), additive=cert.additive,
                            iterations=model.last_solve.iterations)
    if scaling is not None:
        note["input_scaling"] = scaling
    out = x.detach().cpu().numpy()
    out = out[0, 0] if out.shape[:2] == (1, 1) else out
    path = write_array(args.out, out, overwrite=args.overwrite)
    print(json.dumps({"out": str(path.resolve()), "shape": list(out.shape), **note}))
    return 0


def _float(text, name):
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number or 'auto', got {text!r}") from None
