"""Model files: safetensors with the configuration (model and operator) as JSON metadata.

Loading parses a JSON header and raw tensors only (safetensors); nothing in a file can run code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

FORMAT = "invstable.unrolled/1"


class ModelFileError(ValueError):
    """A model file that is missing, truncated, corrupted or not an invstable model."""


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_model(model, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Write ``model`` (an :class:`UnrolledInverse`) to ``path`` as safetensors, atomically.

    The operator is stored as its registry configuration (``operator.config()``), so the model can be
    rebuilt by :func:`load_model` wherever the operator's name is registered.

    Raises
    ------
    ValueError
        If the operator has no registry configuration (a user's callable or matrix operator): register it
        with :func:`invstable.operators.register_operator` first.
    """
    from safetensors.torch import save_file

    config = getattr(model.operator, "config", None)
    try:
        op_config = config() if callable(config) else None
    except NotImplementedError:
        op_config = None
    if op_config is None:
        raise ValueError(
            f"cannot save a model whose operator {type(model.operator).__name__} has no registry configuration; "
            "register the operator with invstable.operators.register_operator and give it a config() method")
    model.refresh(reseed=True)  # the vectors become a function of the weights: load_model re-derives them
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.weights(vectors=False).items()}
    header = {"format": FORMAT, "model": json.dumps(model.config()), "operator": json.dumps(op_config),
              "extra": json.dumps(metadata or {})}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict, dict, dict[str, torch.Tensor]]:
    """``(model_config, operator_config, extra, tensors)`` of a model file, with every check of :func:`load_model`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{str(path)!r} is not a readable safetensors model file (truncated, corrupted or "
                             f"another format; invstable never unpickles): {err}") from None
    if header.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is a safetensors file but not an invstable model "
                             f"(format {header.get('format')!r}, expected {FORMAT!r})")
    try:
        parsed = [json.loads(header[k]) for k in ("model", "operator", "extra")]
    except (KeyError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{str(path)!r} has a damaged header ({err}); re-save the model") from None
    if not all(isinstance(p, dict) for p in parsed):
        raise ModelFileError(f"{str(path)!r} has a damaged header (model/operator/extra must be JSON objects)")
    return (*parsed, tensors)


def build_model(model_config: dict, operator_config: dict, tensors: dict[str, torch.Tensor], *, where: str):
    """Rebuild an :class:`UnrolledInverse` from its configurations and tensors (the checks of load_model)."""
    from ..operators import operator_from_config
    from ._unrolled import UnrolledInverse

    if model_config.get("class") != "UnrolledInverse":
        raise ModelFileError(f"{where}: unknown model class {model_config.get('class')!r}")
    try:
        operator = operator_from_config(operator_config)
    except (KeyError, ValueError, TypeError) as err:
        raise ModelFileError(f"{where}: cannot rebuild the operator {operator_config!r}: {err}") from None
    try:
        model = UnrolledInverse.from_config(model_config, operator=operator)
    except (KeyError, ValueError, TypeError) as err:
        raise ModelFileError(f"{where}: cannot rebuild the model from its configuration: {err}") from None
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


RIDGE_FORMAT = "invstable.ridge/1"


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors' names, dtypes, shapes and bytes (in name order)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_regularizer(regularizer, path: str | os.PathLike, *, metadata: dict, overwrite: bool = False) -> Path:
    """Write a :class:`invstable.nn.ConvexRidgeRegularizer` as safetensors (configuration, record and a SHA-256
    digest of the tensors in the header), atomically; an existing file is replaced only with ``overwrite``."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True (--overwrite) to replace it")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in regularizer.state_dict().items()}
    config = {"class": "ConvexRidgeRegularizer", "channels": list(regularizer.channels),
              "kernel_size": regularizer.kernel_size, "knots": regularizer.activation.knots,
              "span": regularizer.activation.span}
    header = {"format": RIDGE_FORMAT, "model": json.dumps(config), "extra": json.dumps(metadata),
              "digest": _tensor_digest(tensors)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


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
    from safetensors import SafetensorError, safe_open

    from ..nn import ConvexRidgeRegularizer

    path = Path(path)
    where = repr(str(path))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{where} is not a readable safetensors model file: {err}") from None
    if header.get("format") != RIDGE_FORMAT:
        raise ModelFileError(f"{where} is not a convex ridge regulariser (format {header.get('format')!r}, "
                             f"expected {RIDGE_FORMAT!r})")
    if header.get("digest") != _tensor_digest(tensors):
        raise ModelFileError(f"{where}: the tensors do not match the digest in the header (the file is damaged); "
                             "reinstall the package or re-save the model")
    try:
        config, extra = json.loads(header["model"]), json.loads(header["extra"])
        reg = ConvexRidgeRegularizer(tuple(config["channels"]), kernel_size=int(config["kernel_size"]),
                                     knots=int(config["knots"]), span=float(config["span"]))
        reg.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError, RuntimeError) as err:
        raise ModelFileError(f"{where}: damaged header or weights that do not match it ({err})") from None
    return reg.eval(), extra
