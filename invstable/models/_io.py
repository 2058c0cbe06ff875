"""Model files: safetensors with the configuration (model and operator) as JSON metadata and a digest.

Loading parses a JSON header and raw tensors only (safetensors); nothing in a file can run code.

Every file this module writes carries a SHA-256 ``digest`` in its header (:func:`content_digest`), checked
on reading, so a damaged file (a flipped bit in a weight or in the header) is refused with
:class:`ModelFileError` instead of loading with other outputs than those it was trained for:

========================  =====================================================================================
format                    digest
========================  =====================================================================================
``invstable.unrolled/2``  required; covers the header (model, operator, extra) and every tensor
``invstable.ridge/1``     required; covers every tensor
``invstable.unrolled/1``  none (the legacy format, written before digests): still read, with a warning that its
                          tensors cannot be checked; ``load_model(path).save(path)`` upgrades it
========================  =====================================================================================

Before anything is allocated, the memory a header describes is estimated (:func:`check_model_size`) and a
model larger than the memory available here is refused with the figure.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from .._files import atomic_write as atomic_write  # the one atomic writer (also imported from here)

FORMAT = "invstable.unrolled/2"
#: the unrolled format before model files carried a digest (read, with a warning)
LEGACY_FORMAT = "invstable.unrolled/1"
RIDGE_FORMAT = "invstable.ridge/1"
#: format -> whether its digest covers the header too (besides the tensors); None: a legacy format without one
_DIGESTS = {FORMAT: True, RIDGE_FORMAT: False, LEGACY_FORMAT: None}


class ModelFileError(ValueError):
    """A model file that is missing, truncated, corrupted or not an invstable model."""


# ---------------------------------------------------------------------------------------------- digests
def content_digest(tensors: dict, *, header: dict[str, str] | None = None) -> str:
    """SHA-256 hex digest of ``header`` (if given) then of ``tensors``.

    ``tensors`` maps names to tensors, or to nested dicts, lists and plain values (a checkpoint); names are
    taken in sorted order and every tensor enters with its name, dtype, shape and bytes, so any change of a
    value, a name, a dtype or a shape changes the digest. For a flat dict of tensors without a header this is
    the digest of the ``invstable.ridge/1`` format.
    """
    h = hashlib.sha256()
    if header:
        h.update(json.dumps({k: header[k] for k in sorted(header)}, sort_keys=True).encode())
    _feed(h, tensors, "")
    return h.hexdigest()


def _feed(h, mapping: dict, prefix: str) -> None:
    for name in sorted(mapping, key=str):
        key, value = f"{prefix}{name}", mapping[name]
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            h.update(f"{key}|dict|{len(value)}|".encode())
            _feed(h, value, f"{key}/")
        elif isinstance(value, (list, tuple)):
            h.update(f"{key}|list|{len(value)}|".encode())
            _feed(h, dict(enumerate(value)), f"{key}/")
        else:
            h.update(f"{key}|{type(value).__name__}|{value!r}|".encode())


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> Path:
    """Write ``tensors`` with ``header`` (which names its ``format``) and the format's digest, atomically."""
    from safetensors.torch import save_file

    fmt = header.get("format")
    if _DIGESTS.get(fmt) is None:
        raise ValueError(f"format {fmt!r} is not one this module writes; use one of {[FORMAT, RIDGE_FORMAT]}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {**header, "digest": content_digest(tensors, header=header if _DIGESTS[fmt] else None)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def read_safetensors(path: str | os.PathLike, *, formats: tuple[str, ...],
                     what: str = "an invstable model") -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """``(header, tensors)`` of a file of :func:`write_safetensors` whose format is one of ``formats``, with
    its digest checked; :class:`ModelFileError` naming the file for a missing, unreadable, foreign or damaged
    file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    where = repr(str(path))
    if not path.is_file():
        raise ModelFileError(f"model file {where} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{where} is not a readable safetensors model file (truncated, corrupted or "
                             f"another format; invstable never unpickles): {err}") from None
    fmt = header.get("format")
    if fmt not in formats:
        raise ModelFileError(f"{where} is a safetensors file but not {what} (format {fmt!r}, expected "
                             f"{' or '.join(map(repr, formats))})")
    covers_header = _DIGESTS.get(fmt)
    if covers_header is None:
        warnings.warn(f"{where} is a model file of the legacy format {fmt!r}, written before model files carried "
                      "a digest: its tensors cannot be checked for damage; re-save it to add one "
                      "(invstable.load_model(path).save(path))", UserWarning, stacklevel=3)
        return header, tensors
    stored = header.pop("digest", None)
    if stored is None:
        raise ModelFileError(f"{where} has no digest in its header although its format {fmt!r} requires one "
                             "(the file was altered); reinstall the package or re-save the model")
    if stored != content_digest(tensors, header=header if covers_header else None):
        raise ModelFileError(f"{where}: the {'header and ' if covers_header else ''}tensors do not match the digest "
                             "in the header (the file is damaged); reinstall the package or re-save the model")
    return header, tensors


# ---------------------------------------------------------------------------------------------- memory
def check_memory(needed: int, *, what: str, where: str, limit: int | None = None) -> None:
    """Raise :class:`ModelFileError` if ``needed`` bytes exceed ``limit`` (default: the memory available here, as
    :func:`invstable.data._memory.available_memory` tells it; nothing is refused where it cannot be told)."""
    from ..data._memory import available_memory, format_bytes

    limit = available_memory() if limit is None else limit
    if limit is not None and needed > limit:
        raise ModelFileError(f"{where}: its header describes {what}, which needs about {format_bytes(needed)} of "
                             f"memory to load, but only {format_bytes(limit)} is available here; the header is "
                             "damaged or the model was not made for this machine (nothing was allocated)")


def _count(config: dict, key: str, where: str, *, default=None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelFileError(f"{where}: damaged header ({key} must be a positive int, got {value!r})")
    return value


def _image_size(model_config: dict, operator_config: dict, where: str) -> tuple[int, int] | None:
    """(H, W) from the model's ``image_shape`` and the operator's ``image_size``, which must agree."""
    shape = model_config.get("image_shape")
    if shape is not None:
        if not (isinstance(shape, list) and len(shape) >= 2
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
            raise ModelFileError(f"{where}: damaged header (image_shape must be a list of positive ints, "
                                 f"got {shape!r})")
        shape = tuple(shape[-2:])
    size = (operator_config.get("params") or {}).get("image_size") if isinstance(operator_config, dict) else None
    if size is not None:
        size = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
        if not (isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in size)):
            raise ModelFileError(f"{where}: damaged header (the operator's image_size must be a positive int or "
                                 f"[H, W], got {size!r})")
        size = tuple(size)
        if shape is not None and shape != size:
            raise ModelFileError(f"{where}: damaged header (the model's image_shape {list(shape)} and the "
                                 f"operator's image_size {list(size)} disagree)")
    return shape or size


def check_model_size(model_config: dict, operator_config: dict, *, where: str, limit: int | None = None) -> int:
    """Estimate the memory an :class:`UnrolledInverse` described by a file's header needs to be loaded and
    run on one image, and refuse (:class:`ModelFileError`, with the figure) more than the memory available here.

    The estimate counts float32 values: the weights (``iterations * depth`` layers of ``width^2 k^2``), the
    power-iteration vectors of every layer (two images of ``width`` channels) and the states of one forward
    pass at batch 1 (eight images of ``width`` channels), where ``width`` is the widest of ``channels``,
    ``hidden`` and ``aux_channels``. Returns the estimate in bytes.
    """
    iterations, depth = _count(model_config, "iterations", where), _count(model_config, "depth", where)
    channels = _count(model_config, "channels", where)
    options = model_config.get("options") or {}
    if not isinstance(options, dict):
        raise ModelFileError(f"{where}: damaged header (options must be a JSON object, got {options!r})")
    width = max([channels] + [_count(options, k, where) for k in ("hidden", "aux_channels")
                              if options.get(k) is not None])
    kernel = _count(options, "kernel_size", where, default=3)
    size = _image_size(model_config, operator_config, where)
    pixels = 0 if size is None else size[0] * size[1]
    layers = iterations * depth
    needed = 4 * (layers * width * width * kernel * kernel + (2 * layers + 8) * width * pixels)
    shape = "" if size is None else f" on {size[0]} x {size[1]} images"
    check_memory(needed, what=f"an unrolled model of {layers} layers of width {width}{shape}", where=where,
                 limit=limit)
    return needed


# ---------------------------------------------------------------------------------------------- unrolled models
def save_model(model, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Write ``model`` (an :class:`UnrolledInverse`) to ``path`` as safetensors, atomically, with a SHA-256
    digest of its header and tensors (checked by :func:`load_model`).

    The operator is stored as its registry configuration (``operator.config()``), so the model can be
    rebuilt by :func:`load_model` wherever the operator's name is registered.

    Raises
    ------
    ValueError
        If the operator has no registry configuration (a user's callable or matrix operator): register it
        with :func:`invstable.operators.register_operator` first.
    """
    from ..operators._base import config_of

    op_config = config_of(model.operator)
    if op_config is None:
        raise ValueError(
            f"cannot save a model whose operator {type(model.operator).__name__} has no registry configuration; "
            "register the operator with invstable.operators.register_operator and give it a config() method")
    model.refresh(reseed=True)  # the vectors become a function of the weights: load_model re-derives them
    header = {"format": FORMAT, "model": json.dumps(model.config()), "operator": json.dumps(op_config),
              "extra": json.dumps(metadata or {})}
    return write_safetensors(path, model.weights(vectors=False), header)


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict, dict, dict[str, torch.Tensor]]:
    """``(model_config, operator_config, extra, tensors)`` of a model file, with every check of :func:`load_model`
    (the digest included)."""
    path = Path(path)
    header, tensors = read_safetensors(path, formats=(FORMAT, LEGACY_FORMAT))
    try:
        parsed = [json.loads(header[k]) for k in ("model", "operator", "extra")]
    except (KeyError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{str(path)!r} has a damaged header ({err}); re-save the model") from None
    if not all(isinstance(p, dict) for p in parsed):
        raise ModelFileError(f"{str(path)!r} has a damaged header (model/operator/extra must be JSON objects)")
    return (*parsed, tensors)


def build_model(model_config: dict, operator_config: dict, tensors: dict[str, torch.Tensor], *, where: str,
                model_class):
    """Rebuild a model of ``model_class`` (:class:`UnrolledInverse`, passed in so that this file layer does not
    import the model it serves) from its configurations and tensors, with the checks of load_model."""
    from ..operators import operator_from_config

    if model_config.get("class") != model_class.__name__:
        raise ModelFileError(f"{where}: unknown model class {model_config.get('class')!r}")
    check_model_size(model_config, operator_config, where=where)  # before the operator or the model allocates
    try:
        operator = operator_from_config(operator_config)
    except (KeyError, ValueError, TypeError) as err:
        raise ModelFileError(f"{where}: cannot rebuild the operator {operator_config!r}: {err}") from None
    try:
        model = model_class.from_config(model_config, operator=operator)
    except (KeyError, ValueError, TypeError) as err:
        raise ModelFileError(f"{where}: cannot rebuild the model from its configuration: {err}") from None
    # files written when the layers' weight maps were called "operator" name them so: the current names
    from ..nn import rename_legacy_keys

    tensors = rename_legacy_keys(model, tensors)
    expected = model.weights(vectors=False)
    # files written before the sub-step count was part of the state lack it: refresh() below recomputes it
    missing = sorted(k for k in set(expected) - set(tensors) if not k.endswith("_extra_state"))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise ModelFileError(f"{where}: weights do not match the configuration (missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]})")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"{where}: non-finite values in {bad[:5]}")
    model.load_state_dict(tensors, strict=False)
    model.refresh(reseed=True)  # the power-iteration vectors, derived from the weights as save_model did
    return model.eval()


# ---------------------------------------------------------------------------------------------- regularisers
def save_regularizer(regularizer, path: str | os.PathLike, *, metadata: dict, overwrite: bool = False) -> Path:
    """Write a :class:`invstable.nn.ConvexRidgeRegularizer` as safetensors (configuration, record and a SHA-256
    digest of the tensors in the header), atomically; an existing file is replaced only with ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True (--overwrite) to replace it")
    config = {"class": "ConvexRidgeRegularizer", "channels": list(regularizer.channels),
              "kernel_size": regularizer.kernel_size, "knots": regularizer.activation.knots,
              "span": regularizer.activation.span}
    header = {"format": RIDGE_FORMAT, "model": json.dumps(config), "extra": json.dumps(metadata)}
    return write_safetensors(path, regularizer.state_dict(), header)


def file_format(path: str | os.PathLike) -> str | None:
    """The ``format`` field of a safetensors model file's header (None if it has none or cannot be read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return (fh.metadata() or {}).get("format")
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return None


def load_regularizer(path: str | os.PathLike):
    """``(regularizer, extra)`` from a file of :func:`save_regularizer`; the digest and every shape are checked."""
    from ..nn import ConvexRidgeRegularizer

    path = Path(path)
    where = repr(str(path))
    header, tensors = read_safetensors(path, formats=(RIDGE_FORMAT,), what="a convex ridge regulariser")
    try:
        config, extra = json.loads(header["model"]), json.loads(header["extra"])
        channels, kernel = tuple(int(c) for c in config["channels"]), int(config["kernel_size"])
        knots, span = int(config["knots"]), float(config["span"])
        # the weights the header describes (float64 while they are drawn), before anything is allocated
        count = sum(abs(a * b) for a, b in zip(channels, channels[1:])) * kernel ** 2 + abs(channels[-1] * knots)
        check_memory(8 * count, what=f"a ridge regulariser of channels {list(channels)}, kernel {kernel}, "
                     f"{knots} knots", where=where)
        reg = ConvexRidgeRegularizer(channels, kernel_size=kernel, knots=knots, span=span)
        reg.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, IndexError, json.JSONDecodeError, RuntimeError) as err:
        if isinstance(err, ModelFileError):
            raise
        raise ModelFileError(f"{where}: damaged header or weights that do not match it ({err})") from None
    return reg.eval(), extra
