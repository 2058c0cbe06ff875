"""The ``invstable dataset`` command: ``make``, ``check`` and ``info``.

``add_parser(subparsers)`` adds the command to a parent parser (``invstable.cli``); ``main``
runs it on its own: ``python -m invstable.cli.dataset dataset check FILE.h5``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from ..operators import config_summary
from ..data._hdf5 import DatasetFileError, check_dataset, dataset_info, make_dataset
from ..data._paired import NOISE_KINDS, Noise, PairedDataset
from ..data._params import check_parameters
from ..data._sources import SOURCES, make_source
from ..data._tasks import SPLITS, TASKS, task

CUSTOM = "custom"


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value  # a bare string


#: float64 copies of an image that simulating or reconstructing it holds at once (iterates, gradients, the
#: operator's buffers): the floor of the memory estimate made before an operator is built from a command line.
IMAGE_COPIES = 16


def check_image_memory(image_size, *, batch: int = 1) -> None:
    """Refuse images of ``image_size`` (an int or (H, W); anything else is not checked) whose ``IMAGE_COPIES``
    float64 copies, ``batch`` of them, would not fit in the available memory (:class:`InsufficientMemoryError`)."""
    from ..data._memory import check_memory

    hw = tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size)
    if len(hw) != 2 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in hw):
        return
    h, w = int(hw[0]), int(hw[1])
    what = (f"simulating or reconstructing {h} x {w} images" if batch == 1
            else f"reconstructing a batch of {batch} images of {h} x {w}")
    check_memory(IMAGE_COPIES * 8 * batch * h * w, f"{what} ({IMAGE_COPIES} float64 copies of each)",
                 hint="use a smaller image size" + (" or a smaller batch" if batch > 1 else ""))


def build_operator(name: str, params: dict, *, flag: str = "--param"):
    """``make_operator(name, **params)`` for a command: parameters checked against the operator's, memory estimated.

    Raises
    ------
    ValueError
        For an unknown operator (listing the registered ones) or an unknown / missing parameter (listing those the
        operator takes).
    InsufficientMemoryError
        If images of the requested ``image_size`` cannot be held (``IMAGE_COPIES`` float64 copies), before anything
        is allocated.
    """
    from ..operators import available_operators, make_operator
    from ..operators._registry import _REGISTRY

    if name not in available_operators():
        return make_operator(name, **params)  # its error lists the registered names
    check_parameters(f"operator {name!r}", params, _REGISTRY[name].factory, flag=flag)
    check_image_memory(params.get("image_size"))
    with given_values(flag, params):
        return make_operator(name, **params)


@contextlib.contextmanager
def given_values(flag: str, params: dict):
    """Around building an object from ``flag KEY=VALUE`` values read as JSON: a ``TypeError`` (a value of the wrong
    type, such as a string where a number is taken) becomes a ``ValueError`` naming the flag and the values, so that
    the command reports it as the user's mistake; without given values a ``TypeError`` stays a bug."""
    try:
        yield
    except TypeError as err:
        if not params:
            raise
        given = " ".join(f"{key}={json.dumps(value)}" for key, value in params.items())
        raise ValueError(f"{flag} {given}: {err}") from err


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``dataset`` command (``make``, ``check``, ``info``) to ``subparsers``."""
    dataset = subparsers.add_parser("dataset", help="make, check and inspect paired HDF5 datasets",
                                    description="Make, check and inspect paired (x, y = A x + noise) HDF5 datasets.")
    commands = dataset.add_subparsers(dest="dataset_command", metavar="{make,check,info}")
    commands.required = True

    make = commands.add_parser(
        "make", help="write a paired dataset to an HDF5 file",
        description="Write pairs (x, A x + noise) to an HDF5 file, atomically; an interrupted make resumes "
                    "when run again with the same arguments.")
    make.add_argument("--task", required=True, choices=sorted(TASKS) + [CUSTOM],
                      help="a protocol task of PROTOCOLS.md, or 'custom' (then give --operator, --noise-level, --source)")
    make.add_argument("--split", choices=SPLITS, help="split of a protocol task (required for protocol tasks)")
    make.add_argument("--count", type=int, help="number of pairs (training split and custom sources; default: all)")
    make.add_argument("--seed", type=int, help="seed of the training split (protocol tasks; default 0)")
    make.add_argument("--out", required=True, help="the HDF5 file to write (missing folders are created; an existing "
                                                   "file is refused unless --overwrite; one make at a time per file)")
    make.add_argument("--overwrite", action="store_true", help="replace an existing file")
    make.add_argument("--no-resume", action="store_true", help="start over even if an interrupted make left a partial file")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")
    make.add_argument("--images", metavar="DIR",
                      help="your images: a folder of PNG/TIFF/JPEG/.npy files, DICOM slices or NIfTI volumes (HU "
                           "window and slice axis as --source-param window=... axis=...). With a protocol task they "
                           "replace its images (resized to its image size) under its operator and noise; with "
                           "--task custom the same as --source folder --source-param root=DIR")
    custom = make.add_argument_group("custom task")
    custom.add_argument("--operator", help="registered operator name (invstable.operators.available_operators())")
    custom.add_argument("--param", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="operator parameter, VALUE read as JSON (repeatable), e.g. --param image_size=64")
    custom.add_argument("--noise-level", type=float, help="noise standard deviation (or ratio with --relative-noise)")
    custom.add_argument("--noise-kind", choices=NOISE_KINDS,
                        help="gaussian (default; give --noise-level), poisson (give --photons) or log-poisson, "
                             "low-dose CT (give --photons and --attenuation)")
    custom.add_argument("--photons", type=float, help="photons per detector bin of an unattenuated ray (log-poisson) "
                                                      "or per unit of A x (poisson): the dose")
    custom.add_argument("--attenuation", type=float, help="log-poisson: the attenuation one unit of A x stands for "
                                                          "(a ray's transmission is exp(-attenuation * (A x)_j))")
    custom.add_argument("--relative-noise", action="store_true", help="std = level * mean |A x| of each sample")
    custom.add_argument("--noise-seed", type=int, help="seed of the noise (default 0)")
    custom.add_argument("--source", choices=sorted(SOURCES), help="image source")
    custom.add_argument("--source-param", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="source parameter, VALUE read as JSON (repeatable), e.g. --source-param size=64; "
                             "for 'folder' give root=PATH, for 'hdf5-images' path=FILE key=NAME")
    make.set_defaults(func=_make)

    check = commands.add_parser("check", help="verify files completely (structure, fields, checksum, every sample)",
                                description="Verify dataset files; exit 1 with one line per bad file.")
    check.add_argument("files", nargs="+", help="HDF5 dataset files")
    check.set_defaults(func=_check)

    info = commands.add_parser("info", help="print what a dataset file holds")
    info.add_argument("file", help="HDF5 dataset file")
    info.add_argument("--json", action="store_true", help="print the metadata as JSON")
    info.set_defaults(func=_info)
    return dataset


def _error(command: str, message: str) -> int:
    print(f"invstable dataset {command}: error: {message}", file=sys.stderr)
    return 2


def _pairs_from_args(args) -> tuple[PairedDataset, int | None, str | None]:
    if args.images is not None:
        if args.source not in (None, "folder"):
            raise ValueError(f"--images DIR is the folder source; drop --source {args.source} or --images")
        if any(key == "root" for key, _ in args.source_param):
            raise ValueError("--images DIR is the folder's root; drop --source-param root=...")
        args.source = "folder"
        args.source_param = [*args.source_param, ("root", args.images)]
    photon = args.noise_kind in ("poisson", "log-poisson")
    custom = (("--operator", args.operator), ("--noise-level", None if photon else args.noise_level),
              ("--source", args.source), ("--param", args.param or None),
              ("--source-param", args.source_param or None), ("--relative-noise", args.relative_noise or None),
              ("--noise-seed", args.noise_seed), ("--noise-kind", args.noise_kind), ("--photons", args.photons),
              ("--attenuation", args.attenuation), ("--noise-level", args.noise_level if photon else None))
    if args.task == CUSTOM:
        missing = [flag for flag, value in custom[:3] if value is None and not (photon and flag == "--noise-level")]
        if missing:
            raise ValueError(f"--task custom needs {', '.join(missing)} (--source: or --images DIR)")
        if args.seed is not None:
            raise ValueError("--seed is for protocol tasks; give a custom source its seed with --source-param seed=S")
        params = dict(args.source_param)
        if args.count is not None and args.source in ("ellipses", "crops"):
            params.setdefault("count", args.count)
        with given_values("--source-param", params):
            source = make_source({"name": args.source, "params": params}, flag="--source-param")
        operator = build_operator(args.operator, dict(args.param))
        noise = Noise(args.noise_level or 0.0, relative=args.relative_noise, kind=args.noise_kind or "gaussian",
                      photons=args.photons, attenuation=args.attenuation)
        seed = 0 if args.noise_seed is None else args.noise_seed
        return PairedDataset(source, operator, noise, seed=seed), args.count, args.split
    if args.split is None:
        raise ValueError(f"--task {args.task} needs --split ({', '.join(SPLITS)})")
    stray = [flag for flag, value in custom if value is not None
             and not (args.images is not None and flag in ("--source", "--source-param"))]
    if stray:
        raise ValueError(f"{', '.join(stray)} only applies to --task custom; protocol tasks fix the operator, "
                         "the noise and the source")
    t = task(args.task)
    if args.images is not None:  # the user's images under the task's operator and noise; the split's noise seed
        if args.seed is not None:
            raise ValueError("--seed picks the task's own training images; with --images the noise seed is the "
                             "split's, so drop --seed")
        params = {"size": TASKS[args.task].operator["params"]["image_size"], **dict(args.source_param)}
        with given_values("--source-param", params):
            source = make_source({"name": "folder", "params": params}, flag="--source-param")
        return PairedDataset(source, t.operator, t.noise, seed=t.seeds[args.split]), args.count, args.split
    if args.split == "train":
        pairs = t.pairs("train", count=args.count, seed=args.seed)
        return pairs, None, "train"
    if args.seed is not None:
        raise ValueError(f"the {args.split} split is fixed by the protocol; --seed only applies to --split train")
    pairs = t.pairs(args.split)
    return pairs, args.count, args.split


def _make(args) -> int:
    try:
        pairs, count, split = _pairs_from_args(args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        result = make_dataset(args.out, pairs, count=count, task=args.task, split=split,
                              resume=not args.no_resume, overwrite=args.overwrite, progress=not args.no_progress)
    except (ValueError, OSError) as error:  # DatasetFileError, ImageReadError, not enough memory too
        return _error("make", str(error))
    resumed = f", resumed at {result.resumed_from}" if result.resumed_from else ""
    print(f"{result.path}: {result.count} pairs{resumed}, sha256 {result.checksum}")
    return 0


def _check(args) -> int:
    status = 0
    for path in args.files:
        try:
            info = check_dataset(path)
        except DatasetFileError as error:
            print(str(error).replace("\n", " "), file=sys.stderr)
            status = 1
            continue
        print(f"{path}: ok, {info['count']} pairs, sha256 {info['checksum']}")
    return status


def _info(args) -> int:
    try:
        info = dataset_info(args.file)
    except DatasetFileError as error:
        print(str(error).replace("\n", " "), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    op = info["operator"]
    noise = info["noise"]
    lines = [
        ("file", f"{args.file} ({info['file_bytes']} bytes)"),
        ("task / split", f"{info['task']} / {info['split']}"),
        ("pairs", info["count"]),
        ("x shape", tuple(info["x_shape"])),
        ("y shape", tuple(info["y_shape"])),
        ("operator", config_summary(op)),
        ("noise", f"{Noise(**noise).describe()}, seed {info['noise_seed']}"
                  + ("" if info["fixed_noise"] else ", resampled per epoch")),
        ("source", json.dumps(info["source"])),
        ("made by", f"invstable {info['invstable_version']}"),
        ("sha256", info["checksum"]),
    ]
    for key, value in lines:
        print(f"{key:>13}: {value}")
    return 0


def main(argv=None) -> int:
    """Run ``dataset ...`` from ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = argparse.ArgumentParser(prog="invstable")
    commands = parser.add_subparsers(dest="command", metavar="{dataset}")
    commands.required = True
    add_parser(commands)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
