"""The ``invstable train`` command (also under ``torchrun``: ``torchrun --nproc-per-node 2 -m invstable train ...``).

Every argument is checked when the command line is parsed (numbers in their range, outputs that can be written,
inputs that exist), and the outputs, the layer options and the data before anything is trained, so that a mistake
is reported in one line naming the flag instead of a traceback minutes later.

The flags of the training group are the fields of :class:`~invstable.training.TrainConfig` and those of the model
group the keywords of :class:`~invstable.models.UnrolledInverse`, with the same names (``--batch-size`` for
``batch_size``) and their defaults read from the library, never copied (:func:`train_config`, :func:`model_kwargs`).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import time
from pathlib import Path

from .dataset import _key_value
from ..data._tasks import TASKS
from ..models._unrolled import FAMILIES, INITS, UnrolledInverse
from ..training._loop import TrainConfig

#: layer options the command sets itself (from --seed and --device): not for --option
_MANAGED_OPTIONS = ("rng", "dtype", "device")
#: the defaults of the training flags: TrainConfig's
TRAIN_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
#: the defaults of the model flags: UnrolledInverse's keywords
MODEL_DEFAULTS = {name: param.default for name, param in inspect.signature(UnrolledInverse).parameters.items()
                  if param.default is not inspect.Parameter.empty}
# None means the model's documented default for these two (denoiser= is not offered on the command line)
MODEL_DEFAULTS.update(family=MODEL_DEFAULTS["family"] or UnrolledInverse.DEFAULT_FAMILY,
                      channels=MODEL_DEFAULTS["channels"] or UnrolledInverse.DEFAULT_CHANNELS)
#: the UnrolledInverse keywords set from the command line (each by the flag of its name; the seed is --seed)
MODEL_FLAGS = ("family", "iterations", "channels", "depth", "step", "max_step", "init", "init_alpha", "init_degree",
               "seed")
#: the TrainConfig fields whose flag is not the field's name: field -> its value from the parsed flags
CONFIG_FROM_FLAGS = {"grad_clip": lambda args: args.grad_clip if args.grad_clip > 0 else None,
                     "progress": lambda args: not args.no_progress}


# ---------------------------------------------------------------------------------------------- argument types
def integer(low: int = 1, high: int | None = None):
    """An argparse ``type``: an int in ``[low, high]``, with a message saying which ints are expected."""
    want = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    parse.__name__ = want  # argparse names the type by it in its own messages
    return parse


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False):
    """An argparse ``type``: a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if low is not None and high is not None:
        want = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low is not None:
        want = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        want = "a finite number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        bad_low = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or bad_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    parse.__name__ = want
    return parse


def output_file(text: str) -> str:
    """An argparse ``type``: a file to write; its missing folders are created later, but it must not be a folder
    nor lie under an existing file."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give the path of the file to write")
    _no_file_above(path, text)
    return text


def output_folder(text: str) -> str:
    """An argparse ``type``: a folder to write into (created if missing); not an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    _no_file_above(path, text)
    return text


def existing_file(text: str) -> str:
    """An argparse ``type``: a file that exists."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text!r} does not exist" if not Path(text).exists()
                                         else f"{text!r} is not a file")
    return text


def _no_file_above(path: Path, text: str) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"cannot write {text!r}: {str(parent)!r} is a file, not a folder")
            return


POSITIVE = integer(1)


# ---------------------------------------------------------------------------------------------- the command
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train a learned unrolled inverse on a protocol task",
        description="Train an unrolled learned inverse (data-consistency steps and stable flows) on a task of "
                    "PROTOCOLS.md by the mean squared error; keeps the best model on the validation split. "
                    "Checkpoints are written atomically; rerun with --resume after an interruption (the checkpoint "
                    "records the settings, the task, the operator and the data, and a resume with other ones is "
                    "refused). An existing model or checkpoint is never replaced without --resume or --overwrite; "
                    "missing folders of --out and --checkpoint are created. Under torchrun each process takes a "
                    "share of every batch (gloo on CPU, NCCL on GPU).")
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="protocol task (operator, noise, splits)")
    p.add_argument("--out", required=True, type=output_file,
                   help="model file to write (.safetensors); its missing folders are created")
    p.add_argument("--overwrite", action="store_true",
                   help="start over even if --out or the checkpoint exists (replacing them)")
    m = p.add_argument_group("model")
    from_model = MODEL_DEFAULTS
    m.add_argument("--family", default=from_model["family"], choices=sorted(FAMILIES),
                   help="family of the regularising blocks (default: %(default)s)")
    m.add_argument("--iterations", type=POSITIVE, default=from_model["iterations"],
                   help="unrolled iterations K (default: %(default)s)")
    m.add_argument("--channels", type=POSITIVE, default=from_model["channels"],
                   help="width of the state (default: %(default)s)")
    m.add_argument("--depth", type=POSITIVE, default=from_model["depth"],
                   help="layers per block at the first level (default: %(default)s)")
    m.add_argument("--step", type=number(0, low_open=True), default=from_model["step"],
                   help="layer step h (default: %(default)s)")
    m.add_argument("--max-step", type=number(0, 1, low_open=True), default=from_model["max_step"],
                   help="data-consistency step as a fraction of 2/||A||^2 at most (default: %(default)s)")
    m.add_argument("--init", default=from_model["init"], choices=INITS, help="first guess (default: %(default)s)")
    m.add_argument("--init-alpha", type=number(0, low_open=True), default=None,  # None: told apart from a given one
                   help=f"alpha of the first guess (default: {from_model['init_alpha']}; not with --init zero)")
    m.add_argument("--init-degree", type=integer(1, 200), default=None,
                   help=f"polynomial degree of the first guess (default: {from_model['init_degree']}; not with "
                        "--init zero)")
    m.add_argument("--option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="layer option of the family, VALUE read as JSON (repeatable), e.g. --option hidden=16; an "
                        "unknown KEY is refused with the list of the family's options")
    t = p.add_argument_group("training")
    from_config = TRAIN_DEFAULTS
    t.add_argument("--steps", type=POSITIVE, default=from_config["steps"],
                   help="optimisation steps (default: %(default)s)")
    t.add_argument("--batch-size", type=POSITIVE, default=from_config["batch_size"],
                   help="global batch (default: %(default)s)")
    t.add_argument("--lr", type=number(0, low_open=True), default=from_config["lr"],
                   help="peak learning rate, cosine decay (default: %(default)s)")
    t.add_argument("--final-lr-ratio", type=number(0, 1, low_open=True), default=from_config["final_lr_ratio"],
                   help="final / peak learning rate (default: %(default)s)")
    t.add_argument("--smoothness", type=number(0), default=from_config["smoothness"],
                   help="weight of the time-smoothness term (default: %(default)s)")
    t.add_argument("--levels", type=POSITIVE, default=from_config["levels"],
                   help="multi-level training: the depth doubles between levels (default: %(default)s)")
    t.add_argument("--grad-clip", type=number(0), default=from_config["grad_clip"] or 0.0,
                   help="gradient-norm clip, 0 for none (default: %(default)s)")
    t.add_argument("--train-count", type=POSITIVE, default=None,
                   help="training pairs made on the fly (default: the task's 10 000; not with --data)")
    t.add_argument("--data", type=existing_file,
                   help="training pairs from an HDF5 file of `invstable dataset make --split train` instead of on "
                        "the fly")
    t.add_argument("--validation-data", type=existing_file,
                   help="validation pairs from an HDF5 file (not of the test split) instead of on the fly")
    t.add_argument("--validation-count", type=POSITIVE, default=32,
                   help="validation pairs scored (first ones of the split; default: %(default)s)")
    t.add_argument("--validate-every", type=POSITIVE, default=from_config["validate_every"],
                   help="in steps (default: %(default)s)")
    t.add_argument("--checkpoint", type=output_file,
                   help="checkpoint file (default: OUT.ckpt; its missing folders are created)")
    t.add_argument("--checkpoint-every", type=POSITIVE, default=from_config["checkpoint_every"],
                   help="in steps (default: %(default)s)")
    t.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint (with the same settings, task and data)")
    t.add_argument("--seed", type=integer(0), default=from_config["seed"],
                   help="seed of the weights and of the batches (default: %(default)s)")
    t.add_argument("--device", default=from_config["device"], help="auto, cpu, cuda, cuda:N (default: %(default)s)")
    t.add_argument("--amp", action="store_true", default=from_config["amp"], help="bfloat16 mixed precision (GPU)")
    t.add_argument("--threads", type=POSITIVE, help="CPU threads of torch (default: torch's)")
    t.add_argument("--no-progress", action="store_true", default=not from_config["progress"], help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import torch

    from ..data import HDF5PairedDataset, task
    from ..training._distributed import distributed
    from ..training._loop import evaluate, resolve_device, train

    _check_flags(args)
    options = layer_options(args.family, args.option)
    checkpoint = _check_outputs(args)
    resolve_device(args.device)  # an unknown or absent device is refused before anything is built
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = task(args.task)
    cfg = train_config(args)
    model = _build_model(spec.operator, args, options)
    train_data = (HDF5PairedDataset(args.data, operator=spec.operator) if args.data
                  else spec.pairs("train", count=args.train_count))
    validation = (HDF5PairedDataset(args.validation_data, operator=spec.operator) if args.validation_data
                  else spec.pairs("validation"))
    validation = torch.utils.data.Subset(validation, range(min(args.validation_count, len(validation))))
    start = time.perf_counter()
    with distributed(cfg.device) as (rank, _world):
        result = train(model, train_data, validation=validation, config=cfg, checkpoint=checkpoint,
                       resume=args.resume, overwrite=args.overwrite, context={"task": args.task})
        if rank == 0:
            model = result.model.refresh(reseed=True)  # as save() does: the figures below are the file's
            record = {"task": args.task, "command": "invstable train " + " ".join(_argv(args)),
                      "steps": result.steps, "best_step": result.best_step,
                      "validation_psnr": round(evaluate(model, validation), 3),
                      "lipschitz_bound": model.lipschitz_bound(),
                      "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__}
            path = model.save(args.out, training=record)
            print(json.dumps({"model": str(Path(path).resolve()), **record}))
    return 0


def _check_flags(args) -> None:
    """Flags that contradict each other or would be ignored; fills in the defaults of the first-guess flags."""
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the checkpoint and --overwrite starts over: give one of them")
    if args.data and args.train_count is not None:
        raise ValueError("--train-count sets the number of pairs made on the fly; with --data the file's pairs are "
                         "used (make a file of that size with `invstable dataset make --count N`)")
    if args.init == "zero":
        given = [flag for flag, value in (("--init-alpha", args.init_alpha), ("--init-degree", args.init_degree))
                 if value is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} set the Tikhonov-like first guess, which --init zero does not "
                             "use; drop them or choose another --init")
    for name in ("init_alpha", "init_degree"):  # recorded in the model file's command line
        if getattr(args, name) is None:
            setattr(args, name, MODEL_DEFAULTS[name])


def train_config(args) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``invstable train`` flags: every field from the flag of its name
    (``CONFIG_FROM_FLAGS`` for the others)."""
    return TrainConfig(**{field.name: CONFIG_FROM_FLAGS[field.name](args) if field.name in CONFIG_FROM_FLAGS
                          else getattr(args, field.name) for field in dataclasses.fields(TrainConfig)})


def model_kwargs(args) -> dict:
    """The :class:`UnrolledInverse` keywords of parsed ``invstable train`` flags (``MODEL_FLAGS``); a first-guess
    flag not given takes UnrolledInverse's default."""
    return {name: MODEL_DEFAULTS[name] if getattr(args, name) is None else getattr(args, name) for name in MODEL_FLAGS}


def _check_outputs(args) -> str:
    """The checkpoint path; an existing model or checkpoint is refused unless --resume or --overwrite."""
    checkpoint = args.checkpoint or f"{args.out}.ckpt"
    if Path(checkpoint).resolve() == Path(args.out).resolve():
        raise ValueError(f"--checkpoint and --out are the same file {args.out!r}; give two paths")
    if Path(checkpoint).is_dir():
        raise ValueError(f"the checkpoint {checkpoint!r} is a folder; give another --checkpoint")
    if not args.resume and not args.overwrite:
        existing = [str(p) for p in (args.out, checkpoint) if Path(p).exists()]
        if existing:
            raise FileExistsError(f"{' and '.join(map(repr, existing))} already exist{'s' if len(existing) == 1 else ''}"
                                  "; continue that run with --resume, or start over and replace "
                                  f"{'it' if len(existing) == 1 else 'them'} with --overwrite")
    return checkpoint


def layer_options(family: str, given: list[tuple[str, object]]) -> dict:
    """The ``--option KEY=VALUE`` pairs of ``family``, checked: the key is one of the family's layer options and
    the value has the type that option takes; ValueError naming the option (and the valid ones) otherwise."""
    from ..nn import LAYER_FAMILIES

    classes = _layer_classes(family)
    valid = sorted(LAYER_FAMILIES[FAMILIES[family]][1] - set(_MANAGED_OPTIONS))
    options = {}
    for key, value in given:
        if key in _MANAGED_OPTIONS:
            raise ValueError(f"--option {key} is set by the command itself (from --seed and --device); drop it")
        if key not in valid:
            raise ValueError(f"--option {key}: the {family} family has no layer option {key!r}; its options are "
                             f"{', '.join(valid)}")
        expected, default = _expected(classes, key)
        if expected is not None and not _has_type(value, expected):
            raise ValueError(f"--option {key}={json.dumps(value)}: {key} takes {expected} (default "
                             f"{json.dumps(default)}), got {type(value).__name__} {value!r}")
        options[key] = value
    return options


def _layer_classes(family: str) -> list[type]:
    from .. import nn as inn
    from ..nn import SCHEMES

    # the shared options (features, kernel_size, ...) are the fields of LayerOptions
    return {"gradient_flow": [inn.GradientFlowLayer], "hamiltonian": list(SCHEMES.values()),
            "antisymmetric": [inn.AntisymmetricLayer], "dense": [inn.DenseNetwork],
            "unconstrained": [inn.ResNetLayer]}[family] + [inn.LayerOptions]


def _expected(classes, key) -> tuple[str | None, object]:
    """(annotation, default) of the keyword ``key`` in the first of ``classes`` that takes it."""
    for cls in classes:
        param = inspect.signature(cls.__init__).parameters.get(key)
        if param is not None:
            annotation = param.annotation if isinstance(param.annotation, str) else getattr(
                param.annotation, "__name__", None)
            default = None if param.default is inspect.Parameter.empty else param.default
            return annotation, default
    return ("str", None) if key == "scheme" else (None, None)


def _has_type(value, annotation: str) -> bool:
    """Whether a JSON value fits an annotation made of int, float, str, bool and None (others: not checked)."""
    checks = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
              "None": lambda v: v is None}
    names = [part.strip() for part in annotation.split("|")]
    if not all(name in checks for name in names):
        return True
    return any(checks[name](value) for name in names)


def _build_model(operator, args, options: dict):
    """The model of the command line; a value an option refuses is reported with the option's name."""
    kwargs = model_kwargs(args)
    try:
        return UnrolledInverse(operator, **kwargs, **options)
    except (ValueError, TypeError) as err:
        if not options:
            raise
        culprits = [k for k, v in options.items() if not _builds(operator, kwargs, {k: v})]
        if not culprits:
            raise
        key = culprits[0]
        expected, default = _expected(_layer_classes(args.family), key)
        raise ValueError(f"--option {key}={json.dumps(options[key])} is refused by the {args.family} layers "
                         f"({key} takes {expected or 'a JSON value'}, default {json.dumps(default)}): {err}") from None


def _builds(operator, kwargs, options) -> bool:
    small = {**kwargs, "iterations": 1, "depth": 1}
    try:
        UnrolledInverse(operator, **small, **options)
    except (ValueError, TypeError):
        return False
    return True


def _argv(args) -> list[str]:
    """The options of this run, as a command line (recorded in the model file)."""
    out = []
    for key, value in sorted(vars(args).items()):
        if key in ("func", "command") or value is None or value is False or value == []:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif key == "option":
            out += [f"--option {k}={json.dumps(v)}" for k, v in value]
        else:
            out.append(f"{flag} {value}")
    return out
