"""The models shipped with the package and :func:`load_model`."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ._io import RIDGE_FORMAT, ModelFileError, build_model, file_format, load_regularizer, read_model_file

#: name -> what it is (the files live in invstable/models/pretrained/<name>.safetensors)
PRETRAINED = {
    "ct30-gradflow": "CT-30, gradient-flow (non-expansive) unrolled inverse",
    "ct30-hamiltonian": "CT-30, Hamiltonian (Verlet) unrolled inverse",
    "ct30-unconstrained": "CT-30, unconstrained ResNet unrolled inverse (the baseline, no certificate)",
    "blur-gradflow": "Blur-G2, gradient-flow (non-expansive) unrolled inverse",
    "blur-hamiltonian": "Blur-G2, Hamiltonian (Verlet) unrolled inverse",
    "blur-unconstrained": "Blur-G2, unconstrained ResNet unrolled inverse (the baseline, no certificate)",
    "universal": "any operator: learned convex ridge regulariser (variational, certified 1/(2 sqrt m))",
}

#: models that serve any operator (``load_model(name, operator=...)``)
UNIVERSAL = ("universal",)


def _pretrained_path(name: str) -> Path:
    return Path(str(resources.files("invstable.models") / "pretrained" / f"{name}.safetensors"))


def list_models() -> list[str]:
    """Names of the pretrained models shipped in this installation (those whose file is present)."""
    return sorted(name for name in PRETRAINED if _pretrained_path(name).is_file())


def model_info(name_or_path: str | os.PathLike) -> dict:
    """The configuration and training record of a model file or shipped model, without building it."""
    path = _resolve(name_or_path)
    if file_format(path) == RIDGE_FORMAT:
        reg, extra = load_regularizer(path)
        return {"model": {"class": "ConvexRidgeRegularizer", "channels": list(reg.channels),
                          "kernel_size": reg.kernel_size}, "operator": None, **extra}
    model_cfg, op_cfg, extra, _ = read_model_file(path)
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


def load_model(name_or_path: str | os.PathLike, *, operator=None, device=None, preset: str | None = None,
               noise_level: float | None = None, **options):
    """Load a shipped model by name (:func:`list_models`) or a file written by ``model.save``.

    Nothing in the file is executed: it is a safetensors file whose header holds the model's and the
    operator's configurations as JSON; the operator is rebuilt through the operator registry.

    A universal regulariser (``"universal"``, or a file of :func:`invstable.models.save_regularizer`) serves any
    operator: pass ``operator=`` (a deepinv ``LinearPhysics`` or anything ``as_operator`` takes). Its weights
    ``lam``, ``scale`` and ``strong_convexity`` come from ``preset`` (a protocol task whose validation tuning is
    shipped: "ct-30", "ct-180", "blur-g2"), else from the noise-level rule at ``noise_level`` (the standard
    deviation of the noise on ``y``), else the rule's middle level; call ``.tune(x_val, y_val)`` for the best
    values on your data. ``options`` go to :class:`VariationalInverse` (``bounds``, ``tol``, ``max_iter``, or
    ``lam`` / ``scale`` / ``strong_convexity`` directly).

    Returns
    -------
    UnrolledInverse or VariationalInverse
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
    if file_format(path) == RIDGE_FORMAT:
        model = _universal(path, operator, preset, noise_level, options)
    else:
        if operator is not None or preset is not None or noise_level is not None or options:
            raise ValueError(f"{os.fspath(name_or_path)!r} is an unrolled model trained for its own operator; it "
                             "takes no operator, preset, noise_level or solver options (the 'universal' model "
                             "serves any operator)")
        model_cfg, op_cfg, _, tensors = read_model_file(path)
        model = build_model(model_cfg, op_cfg, tensors, where=repr(str(path)))
    return model if device is None else model.to(device)


def _universal(path: Path, operator, preset, noise_level, options):
    from ._variational import VariationalInverse, noise_rule

    if operator is None:
        raise ValueError(f"the universal regulariser {str(path)!r} serves any operator: pass operator= (a deepinv "
                         "LinearPhysics, an invstable operator, or anything invstable.as_operator takes)")
    reg, extra = load_regularizer(path)
    presets = extra.get("presets", {})
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"no preset {preset!r} in {str(path)!r}; shipped presets: {sorted(presets)}")
        values = {k: presets[preset][k] for k in ("lam", "scale", "strong_convexity")}
        values["bounds"] = tuple(presets[preset].get("bounds", (0.0, 1.0)))
        values["reference"] = float(presets[preset].get("reference", 0.0))
    else:
        values = noise_rule(extra["noise_levels"], noise_level)
    values.update(options)
    model = VariationalInverse(reg, operator, **values)
    model.info = {"name": path.stem, "preset": preset, **{k: v for k, v in extra.items() if k != "curve"}}
    return model.eval()
