"""The models shipped with the package and :func:`load_model`."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ._io import ModelFileError, build_model, read_model_file

#: name -> what it is (the files live in invstable/models/pretrained/<name>.safetensors)
PRETRAINED = {
    "ct30-gradflow": "CT-30, gradient-flow (non-expansive) unrolled inverse",
    "ct30-hamiltonian": "CT-30, Hamiltonian (Verlet) unrolled inverse",
    "ct30-unconstrained": "CT-30, unconstrained ResNet unrolled inverse (the baseline, no certificate)",
    "blur-gradflow": "Blur-G2, gradient-flow (non-expansive) unrolled inverse",
    "blur-hamiltonian": "Blur-G2, Hamiltonian (Verlet) unrolled inverse",
    "blur-unconstrained": "Blur-G2, unconstrained ResNet unrolled inverse (the baseline, no certificate)",
}


def _pretrained_path(name: str) -> Path:
    return Path(str(resources.files("invstable.models") / "pretrained" / f"{name}.safetensors"))


def list_models() -> list[str]:
    """Names of the pretrained models shipped in this installation (those whose file is present)."""
    return sorted(name for name in PRETRAINED if _pretrained_path(name).is_file())


def model_info(name_or_path: str | os.PathLike) -> dict:
    """The configuration and training record of a model file or shipped model, without building it."""
    model_cfg, op_cfg, extra, _ = read_model_file(_resolve(name_or_path))
    return {"model": model_cfg, "operator": op_cfg, **extra}


def _resolve(name_or_path) -> Path:
    text = os.fspath(name_or_path)
    if text in PRETRAINED:
        path = _pretrained_path(text)
        if not path.is_file():
            raise ModelFileError(f"the pretrained model {text!r} is not in this installation (missing {path}); "
                                 f"shipped here: {list_models()}")
        return path
    path = Path(text)
    if not path.exists() and path.suffix == "" and os.sep not in text:
        raise ModelFileError(f"unknown model {text!r}: not a pretrained name nor an existing file; "
                             f"pretrained models: {list_models()}")
    return path


def load_model(name_or_path: str | os.PathLike, *, device=None):
    """Load a shipped model by name (:func:`list_models`) or a file written by ``model.save``.

    Nothing in the file is executed: it is a safetensors file whose header holds the model's and the
    operator's configurations as JSON; the operator is rebuilt through the operator registry.

    Returns
    -------
    UnrolledInverse
        In eval mode, on ``device`` (default CPU).

    Raises
    ------
    ModelFileError
        Unknown name, missing, truncated, corrupted or foreign file, weights that do not match the
        configuration.

    Examples
    --------
    >>> import invstable
    >>> model = invstable.load_model("ct30-gradflow")  # doctest: +SKIP
    >>> model.lipschitz_bound()  # doctest: +SKIP
    """
    path = _resolve(name_or_path)
    model_cfg, op_cfg, _, tensors = read_model_file(path)
    model = build_model(model_cfg, op_cfg, tensors, where=repr(str(path)))
    return model if device is None else model.to(device)
