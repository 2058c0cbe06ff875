"""The models shipped with the package and :func:`load_model`."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ._io import RIDGE_FORMAT, ModelFileError, build_model, file_format, load_regularizer, read_model_file
from ._unrolled import UnrolledInverse

#: name -> what it is (the files live in invstable/models/pretrained/<name>.safetensors)
PRETRAINED = {
    "ct30-gradflow": "CT-30, gradient-flow (non-expansive) unrolled inverse",
    "ct30-hamiltonian": "CT-30, Hamiltonian (Verlet) unrolled inverse",
    "ct30-unconstrained": "CT-30, unconstrained ResNet unrolled inverse (the baseline, no certificate)",
    "blur-gradflow": "Blur-G2, gradient-flow (non-expansive) unrolled inverse",
    "blur-hamiltonian": "Blur-G2, Hamiltonian (Verlet) unrolled inverse",
    "blur-unconstrained": "Blur-G2, unconstrained ResNet unrolled inverse (the baseline, no certificate)",
    "ct30-wide": "CT-30, wide gradient-flow unrolled inverse (10 iterations, 32 hidden features, learned first guess)",
    "blur-wide": "Blur-G2, wide gradient-flow unrolled inverse (10 iterations, 32 hidden features, learned first guess)",
    "universal": "any operator: learned convex ridge regulariser (variational, certified 1/(2 sqrt m))",
}

#: models that serve any operator (``load_model(name, operator=...)``)
UNIVERSAL = ("universal",)

#: which shipped certified model ``load_model(task=...)`` returns: written by scripts/select_models.py from the
#: validation PSNR of every certified candidate on the same validation images (never from test data)
RECOMMENDED_FILE = "recommended.json"


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


def recommended() -> dict:
    """The recommended certified model of each protocol task, with the validation scores it was chosen on.

    ``{task: {"name": ..., "validation_count": n, "candidates": {name: {"validation_psnr", "lipschitz_bound"}},
    "command": ...}}`` as written by ``scripts/select_models.py``; ``{}`` when the file is not shipped.
    """
    import json

    path = Path(str(resources.files("invstable.models") / "pretrained" / RECOMMENDED_FILE))
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{path} is not a readable recommendation file ({err}); reinstall invstable") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "name" in v for v in data.values()):
        raise ModelFileError(f"{path} is not a recommendation file of this invstable version; reinstall invstable")
    return data


def _recommended_model(task: str, device):
    table = recommended()
    if task not in table:
        raise ValueError(f"no recommended model for task {task!r}; tasks with one: {sorted(table)} "
                         f"(or load a model by name: {list_models()})")
    choice = table[task]
    name = choice["name"]
    if name in UNIVERSAL:
        from ..data import task as protocol_task

        model = load_model(name, operator=protocol_task(task).operator, preset=task, device=device)
    else:
        model = load_model(name, device=device)
        model.info = model_info(name)
    model.info = {**getattr(model, "info", {}), "recommended_for": task, "selection": choice}
    return model


def load_model(name_or_path: str | os.PathLike | None = None, *, task: str | None = None, operator=None,
               device=None, preset: str | None = None, noise_level: float | None = None, **options):
    """Load a shipped model by name (:func:`list_models`), a file written by ``model.save``, or the most accurate
    certified model shipped for a protocol task (``task="ct-30"``, ``"blur-g2"``).

    Nothing in the file is executed: it is a safetensors file whose header holds the model's and the
    operator's configurations as JSON; the operator is rebuilt through the operator registry.

    A universal regulariser (``"universal"``, or a file of :func:`invstable.models.save_regularizer`) serves any
    operator: pass ``operator=`` (a deepinv ``LinearPhysics`` or anything ``as_operator`` takes). Its weights
    ``lam``, ``scale`` and ``strong_convexity`` come from ``preset`` (a protocol task whose validation tuning is
    shipped: "ct-30", "ct-180", "blur-g2"), else from the noise-level rule at ``noise_level`` (the standard
    deviation of the noise on ``y``), else the rule's middle level; call ``.tune(x_val, y_val)`` for the best
    values on your data. ``options`` go to :class:`VariationalInverse` (``bounds``, ``tol``, ``max_iter``, or
    ``lam`` / ``scale`` / ``strong_convexity`` directly).

    ``task`` picks, among the certified models shipped for that task (the "universal" regulariser with the
    task's preset included), the one with the highest PSNR on the task's validation images
    (:func:`recommended` holds the scores it was chosen on); its ``info`` carries the training record
    (recipe, validation scores, certified bound) and the selection.

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
    >>> best = invstable.load_model(task="ct-30")  # doctest: +SKIP
    """
    if task is not None:
        if name_or_path is not None or operator is not None or preset is not None or noise_level is not None \
                or options:
            raise ValueError(f"task={task!r} chooses the model and its settings; pass either a name or a task")
        return _recommended_model(task, device)
    if name_or_path is None:
        raise TypeError("load_model() needs a model name or path (see invstable.list_models()) or task=")
    path = _resolve(name_or_path)
    if file_format(path) == RIDGE_FORMAT:
        model = _universal(path, operator, preset, noise_level, options)
    else:
        if operator is not None or preset is not None or noise_level is not None or options:
            raise ValueError(f"{os.fspath(name_or_path)!r} is an unrolled model trained for its own operator; it "
                             "takes no operator, preset, noise_level or solver options (the 'universal' model "
                             "serves any operator)")
        model_cfg, op_cfg, _, tensors = read_model_file(path)
        model = build_model(model_cfg, op_cfg, tensors, where=repr(str(path)), model_class=UnrolledInverse)
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
