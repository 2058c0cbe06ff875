"""The models shipped with the package and :func:`load_model`."""

from __future__ import annotations

import dataclasses
import math
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
    "blur-ridge": "Blur-G2: the universal regulariser fine-tuned on the task through its minimiser (variational, "
                  "certified 1/(2 sqrt m))",
}

#: the convex ridge regularisers: variational models that serve any operator (``load_model(name, operator=...)``);
#: "universal" was trained as a denoiser, the others were fine-tuned on one task (their preset)
REGULARISERS = ("universal", "blur-ridge")

#: which shipped certified model ``load_model(task=...)`` returns: written by scripts/select_models.py from the
#: validation PSNR of every certified candidate on the same validation images (never from test data)
RECOMMENDED_FILE = "recommended.json"


def _pretrained_path(name: str) -> Path:
    return Path(str(resources.files("invstable.models") / "pretrained" / f"{name}.safetensors"))


def list_models() -> list[str]:
    """Names of the pretrained models shipped in this installation (those whose file is present)."""
    return sorted(name for name in PRETRAINED if _pretrained_path(name).is_file())


def model_info(name_or_path: str | os.PathLike) -> dict:
    r"""What a model file or shipped model is, without building it: its configuration, training record and a
    summary a user can read (:func:`format_info` prints it).

    Returns
    -------
    dict
        The file's records as they are stored (``"model"``, ``"operator"`` (None for the universal regulariser),
        ``"training"``; ``"noise_levels"`` and ``"presets"`` for the universal one) and the summary:

        - ``"name"``, ``"description"``;
        - ``"task"``: the protocol task it was trained for (None for the universal regulariser, which serves any
          operator), ``"task_description"``;
        - ``"geometry"``: the operator's name and parameters (image size, angles, blur sigma...): the task's when
          the file records one, else the stored configuration with long arrays summarised;
        - ``"noise"``: the training noise (``kind``, ``level``, ``relative``; for the universal regulariser the
          denoising levels ``sigmas``);
        - ``"recipe"``: the command that trained it;
        - ``"validation"``: the validation PSNR (``psnr`` and ``count`` of images; ``denoising_psnr`` and
          ``presets`` for the universal one) and, under ``selection``, the scores of ``scripts/select_models.py``
          for each task where the model was a candidate (:func:`recommended`);
        - ``"lipschitz_bound"``: the certified bound recorded at training (``inf``: no certificate); for the
          universal regulariser :math:`1/(2\sqrt m)` for each shipped preset and for the noise rule;
          ``"certified"``: whether the bound is finite.
    """
    path = _resolve(name_or_path)
    if file_format(path) == RIDGE_FORMAT:
        reg, extra = load_regularizer(path)
        raw = {"model": {"class": "ConvexRidgeRegularizer", "channels": list(reg.channels),
                         "kernel_size": reg.kernel_size}, "operator": None, **extra}
    else:
        model_cfg, op_cfg, extra, _ = read_model_file(path)
        raw = {"model": model_cfg, "operator": op_cfg, **extra}
    text = os.fspath(name_or_path)
    return {**raw, **_summary(text if text in PRETRAINED else path.stem, raw)}


def _task_spec(name):
    from ..data._tasks import TASKS  # noqa: PLC0415 (data imports the operators; loaded on demand)

    return TASKS.get(name) if isinstance(name, str) else None


def _geometry(op_config, spec) -> dict | None:
    """The operator's name and readable parameters: the task's when known, else the stored configuration."""
    if spec is not None:
        return {"operator": spec.operator["name"], **spec.operator["params"]}
    if not isinstance(op_config, dict):
        return None
    from ..operators._base import summarise  # noqa: PLC0415

    params = {k: summarise(v) if isinstance(v, (list, tuple)) and (len(v) > 8 or any(
        isinstance(e, (list, tuple)) for e in v)) else v for k, v in (op_config.get("params") or {}).items()}
    return {"operator": op_config.get("name"), **params}


def _noise(spec) -> dict | None:
    if spec is None:
        return None
    return {k: v for k, v in dataclasses.asdict(spec.noise).items() if v is not None}


def _bound(m) -> float:
    return 1.0 / (2.0 * math.sqrt(m))


def _summary(name: str, raw: dict) -> dict:
    """The readable summary of :func:`model_info` from a file's records, the task registry and recommended()."""
    training = raw.get("training") or {}
    selection = {}
    for task, choice in recommended().items():
        row = choice.get("candidates", {}).get(name)
        if row is not None:
            selection[task] = {"validation_psnr": row.get("validation_psnr"),
                               "validation_count": choice.get("validation_count"),
                               "recommended": choice.get("name") == name}
    out = {"name": name, "description": PRETRAINED.get(name),
           "recipe": training.get("recipe") or training.get("command")}
    if raw.get("model", {}).get("class") == "ConvexRidgeRegularizer":
        from ._variational import DEFAULT_STRONG_CONVEXITY  # noqa: PLC0415

        presets = raw.get("presets") or {}
        bounds = {task: _bound(p["strong_convexity"]) for task, p in presets.items()}
        tuned_on = (training.get("config") or {}).get("task")
        if tuned_on is not None:  # fine-tuned on a task (training.finetune_ridge): that task's problem and preset
            spec = _task_spec(tuned_on)
            out.update(task=tuned_on, task_description=None if spec is None else spec.description,
                       geometry=_geometry(None, spec), noise=_noise(spec),
                       validation={"psnr": training.get("validation_psnr"),
                                   "count": (presets.get(tuned_on) or {}).get("n_validation"),
                                   "presets": {t: {"psnr": p.get("validation_psnr"), "count": p.get("n_validation")}
                                               for t, p in presets.items()},
                                   "selection": selection},
                       lipschitz_bound=bounds, certified=True)
            return out
        sigmas = [lv["sigma"] for lv in raw.get("noise_levels") or []] or (training.get("config") or {}).get("sigmas")
        bounds["noise_rule"] = _bound(DEFAULT_STRONG_CONVEXITY)
        out.update(task=None, task_description="any linear operator (pass operator= to load_model)", geometry=None,
                   noise={"kind": "gaussian", "denoising": True, "sigmas": sigmas},
                   validation={"denoising_psnr": training.get("validation_denoising_psnr"),
                               "presets": {task: {"psnr": p.get("validation_psnr"), "count": p.get("n_validation")}
                                           for task, p in presets.items()},
                               "selection": selection},
                   lipschitz_bound=bounds, certified=True)
        return out
    task = training.get("task")
    spec = _task_spec(task)
    bound = training.get("lipschitz_bound")
    out.update(task=task, task_description=None if spec is None else spec.description,
               geometry=_geometry(raw.get("operator"), spec), noise=_noise(spec),
               validation={"psnr": training.get("validation_psnr"), "count": training.get("validation_count"),
                           "selection": selection},
               lipschitz_bound=bound, certified=isinstance(bound, (int, float)) and math.isfinite(bound))
    return out


def _number(value, fmt: str = ".2f") -> str:
    return "?" if not isinstance(value, (int, float)) else format(value, fmt)


def format_info(info: dict) -> str:
    """A few readable lines from :func:`model_info` (or a loaded model's ``info``): task, operator and geometry,
    training noise, recipe, validation scores and certified bound; ``invstable models`` prints them."""
    lines = [f"{info.get('name', '?')}: {info.get('description') or ''}".rstrip(": ")]
    task = info.get("task")
    if task is None and info.get("task_description"):
        lines.append(f"  task: {info['task_description']}")
    elif task is not None:
        lines.append(f"  task: {task}" + (f" ({info['task_description']})" if info.get("task_description") else ""))
    geometry = info.get("geometry")
    if geometry:
        params = ", ".join(f"{k}={v}" for k, v in geometry.items() if k != "operator")
        lines.append(f"  operator: {geometry.get('operator')} ({params})")
    noise = info.get("noise")
    if noise:
        if noise.get("denoising"):
            lines.append("  training noise: gaussian denoising at sigma "
                         + ", ".join(_number(s, ".4g") for s in noise.get("sigmas") or []))
        else:
            rel = " relative to mean |A x| per sample" if noise.get("relative") else ""
            lines.append(f"  training noise: {noise.get('kind')}, level {_number(noise.get('level'), 'g')}{rel}")
    if info.get("recipe"):
        lines.append(f"  recipe: {info['recipe']}")
    val = info.get("validation") or {}
    scores = []
    if val.get("psnr") is not None:
        count = f" on {val['count']} images" if val.get("count") else ""
        scores.append(f"PSNR {_number(val['psnr'])} dB{count} (training record)")
    if val.get("denoising_psnr"):
        scores.append("denoising PSNR " + ", ".join(f"{_number(p)} dB at sigma {s}/255"
                                                    for s, p in val["denoising_psnr"].items()))
    for task_name, p in (val.get("presets") or {}).items():
        scores.append(f"preset {task_name} {_number(p.get('psnr'))} dB on {p.get('count', '?')} images")
    for task_name, row in (val.get("selection") or {}).items():
        mark = ", recommended" if row.get("recommended") else ""
        scores.append(f"selection {task_name} {_number(row.get('validation_psnr'))} dB on "
                      f"{row.get('validation_count', '?')} images{mark}")
    if scores:
        lines.append("  validation: " + "; ".join(scores))
    bound = info.get("lipschitz_bound")
    if isinstance(bound, dict):
        lines.append("  certified Lipschitz bound 1/(2 sqrt m): "
                     + ", ".join(f"{k} {_number(v)}" for k, v in bound.items()))
    elif isinstance(bound, (int, float)) and math.isfinite(bound):
        lines.append(f"  certified Lipschitz bound: {_number(bound)}")
    elif bound is not None:
        lines.append("  certified Lipschitz bound: none (no certificate)")
    return "\n".join(lines)


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
    if name in REGULARISERS:
        from ..data import task as protocol_task

        model = load_model(name, operator=protocol_task(task).operator, preset=task, device=device)
    else:
        model = load_model(name, device=device)
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
    shipped: "ct-30", "blur-g2"), else from the noise-level rule at ``noise_level`` (the standard
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
        model_cfg, op_cfg, extra, tensors = read_model_file(path)
        model = build_model(model_cfg, op_cfg, tensors, where=repr(str(path)), model_class=UnrolledInverse)
        text = os.fspath(name_or_path)
        raw = {"model": model_cfg, "operator": op_cfg, **extra}
        model.info = {**raw, **_summary(text if text in PRETRAINED else path.stem, raw)}
        model.info["lipschitz_bound"] = model.lipschitz_bound()  # computed from the weights, as loaded
    return model if device is None else model.to(device)


def _universal(path: Path, operator, preset, noise_level, options):
    from ._variational import VariationalInverse, noise_rule

    if operator is None:
        raise ValueError(f"the universal regulariser {str(path)!r} serves any operator: pass operator= (a deepinv "
                         "LinearPhysics, an invstable operator, or anything invstable.as_operator takes)")
    reg, extra = load_regularizer(path)
    presets = extra.get("presets", {})
    weights_given = {"lam", "scale", "strong_convexity"} <= set(options)
    if preset is None and "noise_levels" not in extra and not weights_given:
        if noise_level is not None or len(presets) != 1:
            raise ValueError(f"the regulariser {str(path)!r} was fine-tuned on a task and has no noise-level rule; "
                             f"pass preset= (its presets: {sorted(presets)}) or lam=, scale= and strong_convexity=")
        preset = next(iter(presets))  # fine-tuned on one task: its learned weights are the default
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"no preset {preset!r} in {str(path)!r}; shipped presets: {sorted(presets)}")
        values = {k: presets[preset][k] for k in ("lam", "scale", "strong_convexity")}
        values["bounds"] = tuple(presets[preset].get("bounds", (0.0, 1.0)))
        values["reference"] = float(presets[preset].get("reference", 0.0))
    elif "noise_levels" in extra:
        values = noise_rule(extra["noise_levels"], noise_level)
    else:
        values = {}
    values.update(options)
    model = VariationalInverse(reg, operator, **values)
    raw = {"model": {"class": "ConvexRidgeRegularizer", "channels": list(reg.channels),
                     "kernel_size": reg.kernel_size}, "operator": None, **extra}
    info = {**{k: v for k, v in raw.items() if k != "curve"}, **_summary(path.stem, raw)}
    spec = _task_spec(preset)
    config = getattr(model.operator, "config", None)
    try:
        op_config = config() if callable(config) else None
    except NotImplementedError:
        op_config = None
    geometry = _geometry(op_config, None) or {"operator": type(model.operator).__name__}
    info.update(preset=preset, noise_level=noise_level, operator=op_config, geometry=geometry,
                task=preset if spec is not None else None,
                task_description=(spec.description if spec is not None
                                  else "any linear operator: this one given to load_model"),
                settings={k: getattr(model, k) for k in ("lam", "scale", "strong_convexity", "reference", "bounds")},
                lipschitz_bound=model.lipschitz_bound(), certified=True)
    model.info = info
    return model.eval()
