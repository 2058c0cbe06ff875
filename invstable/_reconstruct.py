"""``invstable reconstruct``: measurements from a file -> image file, by a learned model or a baseline."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from .data._cli import _key_value

READABLE = (".npy", ".tif", ".tiff", ".h5", ".hdf5", ".png")
WRITABLE = (".png", ".npy", ".tif", ".tiff", ".h5", ".hdf5")
BASELINES = ("fbp", "tikhonov", "tv")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "reconstruct", help="reconstruct an image from measurements in a file",
        description="Reconstruct x from measurements y = A x + noise read from a file (.npy, .tif/.tiff, .h5, "
                    ".png). The method is a pretrained model name (see `invstable models`), a model file written "
                    "by `invstable train` / model.save, or a baseline: fbp (CT), tikhonov, tv. A model brings its "
                    "own operator; baselines need --operator.",
        epilog="example: invstable reconstruct --operator ct --angles 30 --input sinogram.npy "
               "--method ct30-gradflow --out x.png")
    p.add_argument("--input", required=True, help="measurements: .npy, .tif/.tiff, .h5/.hdf5 (see --key) or .png; "
                                                  "one measurement (e.g. detectors x angles) or a batch")
    p.add_argument("--key", help="dataset inside an HDF5 input (default: 'y' if present, else the only dataset)")
    p.add_argument("--out", required=True, help="reconstruction: .png (clipped to [0, 1], 16 bit), .npy, .tif/.tiff "
                                                "or .h5 (dataset 'x'); written atomically")
    p.add_argument("--method", required=True,
                   help=f"pretrained model name, model file (.safetensors), or one of {', '.join(BASELINES)}")
    p.add_argument("--operator", help="registered operator name (ct, blur, a plugin's); required for baselines, "
                                      "checked against a model's own operator")
    p.add_argument("--angles", type=int, help="ct: number of angles, uniform in [0, 180) degrees")
    p.add_argument("--image-size", type=int, help="ct, blur: image size (default 128)")
    p.add_argument("--sigma", type=float, help="blur: standard deviation of the Gaussian kernel in pixels")
    p.add_argument("--param", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="further operator parameter, VALUE read as JSON (repeatable)")
    p.add_argument("--alpha", default="auto",
                   help="tikhonov: a number, or 'auto' (discrepancy principle with --noise-level, else GCV); "
                        "tv: the weight lambda (default for tv: 1e-3)")
    p.add_argument("--regularizer", default="identity", choices=("identity", "gradient"),
                   help="tikhonov regulariser (default: %(default)s)")
    p.add_argument("--noise-level", type=float, help="noise standard deviation, for --alpha auto")
    p.add_argument("--filter", default="ramp", help="fbp filter: ramp, shepp-logan, cosine, hamming, hann")
    p.add_argument("--preset", help="universal: the weights tuned on a protocol task's validation split (ct-30, "
                                    "ct-180, blur-g2); default: the noise-level rule (--noise-level)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto (default: %(default)s)")
    p.set_defaults(func=run)
    return p


# ---------------------------------------------------------------------------------------------- files
def read_array(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """A float64 array from .npy, .tif/.tiff, .png or .h5 (never unpickles)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise ValueError(f"cannot read {str(path)!r}: unknown extension {suffix!r}; use one of {READABLE}")
    if not path.is_file():
        raise FileNotFoundError(f"input file {str(path)!r} does not exist")
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        elif suffix == ".png":
            import imageio.v3 as iio

            arr = iio.imread(path)
            arr = arr / np.iinfo(arr.dtype).max if np.issubdtype(arr.dtype, np.integer) else arr
        else:
            import h5py

            with h5py.File(path, "r") as fh:
                names = [k for k in fh if isinstance(fh[k], h5py.Dataset)]
                if key is None:
                    key = "y" if "y" in names else (names[0] if len(names) == 1 else None)
                if key is None or key not in fh:
                    raise ValueError(f"{str(path)!r}: choose the dataset with --key; datasets here: {names}")
                arr = fh[key][()]
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot read {str(path)!r}: {err}") from None
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{str(path)!r} holds {arr.dtype} data; expected real numbers")
    return arr.astype(np.float64)


def write_array(path: str | os.PathLike, x: np.ndarray) -> Path:
    """Write a reconstruction atomically; PNG is clipped to [0, 1] and 16 bit (one image only)."""
    from .models._io import atomic_write

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE:
        raise ValueError(f"cannot write {str(path)!r}: unknown extension {suffix!r}; use one of {WRITABLE}")
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
    return atomic_write(path, write)


# ---------------------------------------------------------------------------------------------- operator
def _operator_params(args) -> dict:
    params = dict(args.param)
    for name, value in (("angles", args.angles), ("image_size", args.image_size), ("sigma", args.sigma)):
        if value is not None:
            params[name] = value
    return params


def _build_operator(args):
    from .operators import make_operator

    params = _operator_params(args)
    if args.operator in ("ct", "blur"):
        params.setdefault("image_size", 128)
    if args.operator == "ct" and "angles" not in params:
        raise ValueError("--operator ct needs --angles N (or --param angles=[...])")
    if args.operator == "blur" and "sigma" not in params and "kernel" not in params:
        raise ValueError("--operator blur needs --sigma S (or --param kernel=[[...]])")
    return make_operator(args.operator, **params)


def _as_batch(y: np.ndarray, op):
    """Shape the measurement as the operator takes it: one measurement, or a batch of them."""
    import torch

    probe = getattr(op, "measurement_shape", None)
    want = None
    if callable(probe):
        size = getattr(op, "image_size", None)
        if size is not None:
            hw = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            want = tuple(probe((1, 1) + hw))[2:]
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
def run(args) -> int:
    import torch

    from .models import list_models, load_model
    from .models._pretrained import PRETRAINED

    method = args.method
    if method in BASELINES:
        if not args.operator:
            raise ValueError(f"--method {method} needs --operator (e.g. --operator ct --angles 30)")
        op = _build_operator(args)
    else:
        if method not in PRETRAINED and not Path(method).exists():
            raise ValueError(f"unknown method {method!r}: not a baseline ({', '.join(BASELINES)}), a pretrained "
                             f"model ({', '.join(list_models()) or 'none installed'}) or an existing model file")
        from .models._io import RIDGE_FORMAT, file_format
        from .models._pretrained import _resolve

        universal = file_format(_resolve(method)) == RIDGE_FORMAT  # a universal regulariser: any operator
        if universal:
            if not args.operator:
                raise ValueError(f"--method {method} serves any operator: pass --operator NAME (ct, blur, a plugin's) "
                                 "with its parameters")
            op = _build_operator(args)
            model = load_model(method, operator=op, preset=args.preset, noise_level=args.noise_level)
        else:
            if args.preset is not None:
                raise ValueError(f"--preset applies to the universal regulariser, not to {method!r}")
            model = load_model(method)
            op = model.operator
        if args.operator and not universal:
            asked = _build_operator(args)
            if asked.config() != op.config():
                raise ValueError(f"the model {method!r} was trained for {op!r}, not for {asked!r}; leave --operator "
                                 "out to use the model's own operator, or pick a model for this operator")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    y = _as_batch(read_array(args.input, args.key), op).to(device)
    with torch.no_grad():
        if method == "fbp":
            from .baselines import fbp

            x = fbp(y, op, filter=args.filter)
            note = {"method": "fbp", "filter": args.filter}
        elif method == "tikhonov":
            from .baselines import choose_alpha, tikhonov

            if args.alpha == "auto":
                rule = "discrepancy" if args.noise_level is not None else "gcv"
                alpha = choose_alpha(y, op, noise_level=args.noise_level, rule=rule, regularizer=args.regularizer)
            else:
                alpha = _float(args.alpha, "--alpha")
            x = tikhonov(y, op, alpha, regularizer=args.regularizer)
            note = {"method": "tikhonov",
                    "alpha": [alpha] if isinstance(alpha, float) else torch.as_tensor(alpha).flatten().tolist(),
                    "regularizer": args.regularizer}
        elif method == "tv":
            from .baselines import tv

            lam = 1e-3 if args.alpha == "auto" else _float(args.alpha, "--alpha")
            x = tv(y, op, lam)
            note = {"method": "tv", "lambda": lam}
        else:
            model = model.to(device)
            x = model(y)
            note = {"method": method, "lipschitz_bound": model.lipschitz_bound()}
            if hasattr(model, "certificate"):
                cert = model.certificate()
                note.update(model.parameters_dict(), additive=cert.additive,
                            iterations=model.last_solve.iterations)
    out = x.detach().cpu().numpy()
    out = out[0, 0] if out.shape[:2] == (1, 1) else out
    path = write_array(args.out, out)
    print(json.dumps({"out": str(path.resolve()), "shape": list(out.shape), **note}))
    return 0


def _float(text, name):
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number or 'auto', got {text!r}") from None
