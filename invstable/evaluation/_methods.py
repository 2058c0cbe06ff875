"""The methods every benchmark compares (PROTOCOLS.md, "Methods compared on every task"), built once here.

Each :class:`Method` is a reconstructor ``y -> x`` on batched tensors, differentiable in ``y`` (so the
adversarial search of :mod:`invstable.stability` can attack it), with its Lipschitz bound and what kind of
bound it is. Regularisation weights are tuned on the validation split, never on the test split.

``reference_dir`` (where it is asked for) is the folder of earlier results that a run may reuse: the quality
run's tuning (:func:`tuned`) and the deepinv peer's weights (:func:`peer`); ``None`` reuses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..baselines import Tikhonov, fbp, tikhonov, tv
from ..data import task as get_task
from ..models import list_models, load_model
from ._metrics import psnr
from ._peer import RECIPE as PEER_RECIPE
from ._peer import load_peer, weights_path
from ._record import shown

#: pretrained models of each task (names start with the prefix); CT-180 and CT-30-lowdose have none (baselines only)
MODEL_PREFIX = {"ct-30": "ct30-", "blur-g2": "blur-", "ct-180": None, "ct-30-lowdose": None}
ALPHAS = np.logspace(-4, -0.5, 8)
LAMBDAS = np.logspace(-4, -2, 5)
#: TV's weight is tuned on the first 8 validation images (Tikhonov's on all of them): TV costs seconds per image
#: on a CPU (the tuning curve is recorded)
TV_VALIDATION = 8
#: (Tikhonov's CG iteration cap, TV's FISTA iterations) at the full size (False) and the quick one (True)
ITERATIONS = {False: (500, 300), True: (150, 100)}
_MODELS: dict = {}


@dataclasses.dataclass
class Method:
    """One row of every table: ``reconstruct(y) -> x`` and its Lipschitz bound.

    ``bound()`` is computed on demand (Tikhonov's exact constant takes Lanczos iterations on CT);
    ``bound_kind`` says what it is: "certified", "exact constant", "upper bound ...", "no certificate".
    """

    name: str
    kind: str  # "baseline", "learned" or "peer"
    reconstruct: Callable[[torch.Tensor], torch.Tensor]
    bound: Callable[[], float | None]
    bound_kind: str
    extra: dict = dataclasses.field(default_factory=dict)
    module: torch.nn.Module | None = None  # the network, for learned models and the peer
    rebuild: Callable | None = None  # baselines: operator -> the same reconstructor on it (another device)


def pairs(dataset, count: int | None):
    """The first ``count`` samples (all when None) of a protocol split, stacked: (x, y, sigma)."""
    n = len(dataset) if count is None else min(count, len(dataset))
    xs, ys, sigmas = zip(*(dataset.sample(i) for i in range(n)))
    return torch.stack(xs), torch.stack(ys), torch.stack(sigmas)


def tune(values, run, x_val):
    """The value of ``values`` with the best mean validation PSNR, and the curve (never the test set)."""
    best, curve = None, []
    for v in values:
        with torch.no_grad():
            p = float(psnr(run(float(v)), x_val).mean())
        curve.append([float(v), p])
        if best is None or p > best[1]:
            best = (float(v), p)
    return best[0], curve


_TUNING: dict = {}
_BOUNDS: dict = {}


def tuned(name: str, *, n_val: int | None, quick: bool, reference_dir: str | Path | None = None) -> dict:
    """Tikhonov's alpha (identity, gradient) and TV's lambda with the best mean PSNR on the first ``n_val``
    validation images, with the curves; computed once per process for the same arguments, or taken from
    ``reference_dir/quality.json`` when that recorded the same computation.

    ``n_val=0`` tunes nothing: every weight is the middle of its grid (a smoke run of the speed benchmark, whose
    timings need weights, not good ones); the record says so.
    """
    if n_val == 0:
        max_iter, tv_iter = ITERATIONS[quick]
        middle = lambda grid: float(grid[len(grid) // 2])  # noqa: E731
        return {"n_validation": 0, "untuned": "no validation images: the middle of each grid (a smoke run)",
                **{f"tikhonov_{reg}": {"alpha": middle(ALPHAS), "max_iter": max_iter, "validation_psnr": []}
                   for reg in ("identity", "gradient")},
                "tv": {"lambda": middle(LAMBDAS), "max_iter": tv_iter, "n_validation": 0, "validation_psnr": []}}
    key = (name, n_val, quick, ITERATIONS[quick], None if reference_dir is None else str(Path(reference_dir).resolve()))
    if key not in _TUNING:
        _TUNING[key] = None if reference_dir is None else _published_tuning(name, n_val, quick, reference_dir)
    if _TUNING[key] is None:
        spec = get_task(name)
        op = spec.operator
        xv, yv, _ = pairs(spec.pairs("validation"), n_val)
        tuning = {}
        max_iter, tv_iter = ITERATIONS[quick]
        for reg in ("identity", "gradient"):
            alpha, curve = tune(ALPHAS, lambda a: tikhonov(yv, op, a, regularizer=reg, max_iter=max_iter), xv)
            tuning[f"tikhonov_{reg}"] = {"alpha": alpha, "max_iter": max_iter, "validation_psnr": curve}
        n_tv = min(len(xv), TV_VALIDATION)
        lam, curve = tune(LAMBDAS, lambda v: tv(yv[:n_tv], op, v, max_iter=tv_iter), xv[:n_tv])
        tuning["tv"] = {"lambda": lam, "max_iter": tv_iter, "n_validation": n_tv, "validation_psnr": curve}
        _TUNING[key] = {"n_validation": int(len(xv)), **tuning}
    return _TUNING[key]


def same_tuning(tuning: dict, n_val: int, quick: bool) -> bool:
    """Whether a recorded tuning was made on the first ``n_val`` validation images with this module's grids and
    iteration budgets (then it is the same computation as :func:`tuned` would make)."""
    max_iter, tv_iter = ITERATIONS[quick]
    try:
        return bool(tuning["n_validation"] == n_val
                    and tuning["tv"]["n_validation"] == min(n_val, TV_VALIDATION) and tuning["tv"]["max_iter"] == tv_iter
                    and np.allclose([v for v, _ in tuning["tv"]["validation_psnr"]], LAMBDAS)
                    and all(tuning[f"tikhonov_{r}"]["max_iter"] == max_iter
                            and np.allclose([v for v, _ in tuning[f"tikhonov_{r}"]["validation_psnr"]], ALPHAS)
                            for r in ("identity", "gradient")))
    except (KeyError, TypeError, ValueError):
        return False


def _published_tuning(name: str, n_val: int | None, quick: bool, folder: str | Path) -> dict | None:
    """The tuning recorded in ``folder/quality.json`` when it is :func:`same_tuning` (the other benchmarks reuse
    it: TV's tuning costs many minutes on a CPU), else None."""
    path = Path(folder) / "quality.json"
    if quick or n_val is None or not path.is_file():
        return None
    payload = json.loads(path.read_text())
    for t in payload.get("tasks", []):
        tuning = t.get("tuning", {})
        if t.get("task") == name and same_tuning(tuning, n_val, quick):
            commit = str(payload.get("environment", {}).get("git_commit", "?"))[:10]
            return {**tuning, "source": f"{shown(path)} (commit {commit})"}
    return None


def _tikhonov_bound(name, op, alpha, reg, exact):
    if exact:
        def exact_constant():
            key = (name, reg, alpha)
            if key not in _BOUNDS:
                _BOUNDS[key] = Tikhonov(op, alpha, regularizer=reg).lipschitz_bound()
            return _BOUNDS[key]
        return exact_constant, "exact constant"
    if reg == "identity":
        return lambda: 1 / (2 * math.sqrt(alpha)), "upper bound 1/(2 sqrt(alpha))"
    return lambda: None, "not computed"


def baselines(name: str, *, n_val: int | None, quick: bool, exact_bounds: bool = True,
              gradient_bound: bool | None = None, reference_dir: str | Path | None = None) -> tuple[list[Method], dict]:
    """FBP (CT), Tikhonov (identity, gradient) and TV with weights tuned on ``n_val`` validation images.

    Returns the methods and the tuning record (the validation curves). ``exact_bounds`` computes Tikhonov's
    exact constant on demand (Lanczos; minutes for the gradient regulariser on CT, which is skipped unless
    ``gradient_bound=True``).
    """
    op = get_task(name).operator
    tuning = tuned(name, n_val=n_val, quick=quick, reference_dir=reference_dir)
    methods = []
    if name.startswith("ct"):
        for filt in ("ramp", "hann"):
            make = (lambda f: lambda o: lambda y: fbp(y, o, filter=f))(filt)
            methods.append(Method(f"FBP ({filt.capitalize()})", "baseline", make(op), lambda: None, "not computed",
                                  rebuild=make))
    if gradient_bound is None:
        gradient_bound = not name.startswith("ct")
    for reg in ("identity", "gradient"):
        alpha, max_iter = tuning[f"tikhonov_{reg}"]["alpha"], tuning[f"tikhonov_{reg}"]["max_iter"]
        bound, kind = _tikhonov_bound(name, op, alpha, reg, exact_bounds and (reg == "identity" or gradient_bound))
        make = (lambda a, r, n: lambda o: Tikhonov(o, a, regularizer=r, max_iter=n))(alpha, reg, max_iter)
        methods.append(Method(f"Tikhonov ({reg}, validation alpha)", "baseline", make(op), bound, kind,
                              {"alpha": alpha}, rebuild=make))
    lam, tv_iter = tuning["tv"]["lambda"], tuning["tv"]["max_iter"]
    make = lambda o: lambda y: tv(y, o, lam, max_iter=tv_iter)  # noqa: E731
    methods.append(Method("TV (validation lambda)", "baseline", make(op), lambda: math.inf, "no certificate",
                          {"lambda": lam, "max_iter": tv_iter}, rebuild=make))
    return methods, tuning


def learned(name: str, models: list[str] | None = None) -> list[Method]:
    """The pretrained models shipped for task ``name`` (all of them unless ``models`` names some)."""
    prefix = MODEL_PREFIX[name]
    if prefix is None:
        return []
    out = []
    for model_name in models if models is not None else list_models():
        if not model_name.startswith(prefix):
            continue
        if model_name not in _MODELS:  # loading re-derives the spectral norms: once per process
            _MODELS[model_name] = load_model(model_name).eval().requires_grad_(False)  # attacks need no weight grads
        model = _MODELS[model_name]
        certified = model.family != "unconstrained"
        out.append(Method(model_name, "learned", model, model.lipschitz_bound,
                          "certified" if certified else "no certificate", {"family": model.family}, module=model))
    return out


def peer(name: str, reference_dir: str | Path | None) -> list[Method]:
    """The deepinv peer of ``name`` when its trained weights are in ``reference_dir``, else nothing."""
    if reference_dir is None or name not in PEER_RECIPE or not weights_path(name, reference_dir).is_file():
        return []
    model, record = load_peer(name, weights_path(name, reference_dir))
    model.requires_grad_(False)
    return [Method("deepinv unrolled PGD + DnCNN", "peer", model, lambda: math.inf, "no certificate",
                   {"validation_psnr": record["validation_psnr"], "steps": record["recipe"]["steps"]},
                   module=model)]
