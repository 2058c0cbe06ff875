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

from ..baselines import Tikhonov, TotalVariation, fbp, tikhonov
from ..data import task as get_task
from ..models import list_models, load_model, model_info
from ..models._pretrained import REGULARISERS
from ._metrics import psnr
from ._peer import RECIPE as PEER_RECIPE
from ._peer import load_peer, weights_path
from ._record import shown

#: pretrained models of each task (names start with the prefix); CT-180 and CT-30-lowdose have none (baselines only)
MODEL_PREFIX = {"ct-30": "ct30-", "blur-g2": "blur-", "ct-180": None, "ct-30-lowdose": None}
#: the tasks whose preset of the universal regulariser is shipped (tuned on their validation images)
UNIVERSAL_PRESETS = ("ct-30", "blur-g2")
#: what the adversarial search follows for the universal regulariser: its solver at a 10x looser tolerance and
#: the implicit derivative's conjugate gradients stopped at a relative residual of 1e-3 (an ascent direction is
#: enough; every perturbation found is then scored on the model as served, at its own tolerance)
UNIVERSAL_SEARCH = {"tol": 1e-2, "derivative_tol": 1e-3}
#: the initial validation grids (log-spaced) of Tikhonov's alpha and TV's lambda; :func:`tune_weight` widens them
ALPHAS = np.logspace(-4, -0.5, 8)
LAMBDAS = np.logspace(-4, -2, 5)
#: how a grid is widened while its optimum sits at an end (PROTOCOLS.md, "Tuning and training"): ``points`` more
#: values past that end at the grid's own log spacing, at most ``max_widenings`` times; then ``refine`` halvings
#: of the log spacing around the optimum (TV none: each of its values costs minutes of FISTA on a CPU)
WIDENING = {"points": 2, "max_widenings": 4}
REFINE = {"tikhonov": 1, "tv": 0}
#: TV's weight is tuned on the first 8 validation images (Tikhonov's on all of them): TV costs seconds per image
#: on a CPU (the tuning curve is recorded)
TV_VALIDATION = 8
#: (Tikhonov's CG iteration cap, TV's FISTA iteration cap) at the full size (False) and the quick one (True)
ITERATIONS = {False: (500, 300), True: (150, 100)}
#: TV's tolerance on the relative change of x (every sample), the iteration cap of its proximal map (deepinv's TV
#: denoiser, which stops earlier at its own tolerance; with 20, FISTA stalls above TV_TOL), and its FISTA iteration
#: cap per task at the full size, from a measurement of the iterations that reach TV_TOL (docs/baselines.md,
#: "TV iterations")
TV_TOL = 1e-5
TV_PROX_ITER = 100
TV_MAX_ITER = {"ct-30": 1000, "ct-30-lowdose": 1000, "ct-180": 1700, "blur-g2": 1800}
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
    #: ``(y, x0) -> x``: the same map started at ``x0`` (a solver's warm start), differentiable in ``y``; the
    #: adversarial search attacks it started at ``R(y)`` instead of solving from scratch at every step
    warm: Callable | None = None


def pairs(dataset, count: int | None):
    """The first ``count`` samples (all when None) of a protocol split, stacked: (x, y, sigma)."""
    n = len(dataset) if count is None else min(count, len(dataset))
    xs, ys, sigmas = zip(*(dataset.sample(i) for i in range(n)))
    return torch.stack(xs), torch.stack(ys), torch.stack(sigmas)


def tune_weight(values, score: Callable[[float], float], *, points: int = WIDENING["points"],
                max_widenings: int = WIDENING["max_widenings"], refine: int = 0) -> dict:
    """The weight with the best ``score`` (a validation PSNR) on a log grid that is widened while its optimum
    sits at an end.

    Parameters
    ----------
    values : sequence of float
        The initial grid: at least two positive values, log-spaced (sorted here).
    score : callable
        ``weight -> score`` (higher is better; NaN counts as the worst).
    points : int
        Values added past the end where the optimum sits, at the grid's log spacing, per widening.
    max_widenings : int
        The limit of widenings; when the optimum is still at an end after them, the record says so
        (``grid["limit_reached"]``).
    refine : int
        Halvings of the log spacing around the optimum after the widening (two more scores each, inside the grid).

    Returns
    -------
    dict
        ``value`` (the best weight), ``score``, ``validation_psnr`` (every ``[weight, score]`` evaluated, sorted by
        weight) and ``grid``: ``initial`` and ``final`` (the grid after widening, refinements excluded),
        ``widenings``, ``max_widenings``, ``points``, ``refine``, ``limit_reached`` and ``at_end`` (``"lower"``,
        ``"upper"`` or None: where the optimum sits on the final grid).

    Examples
    --------
    >>> import math
    >>> record = tune_weight([1e-3, 1e-2, 1e-1], lambda v: -(math.log10(v) + 4) ** 2)  # best at 1e-4
    >>> f"{record['value']:.3g}", f"{record['grid']['final'][0]:.3g}", record["grid"]["widenings"]
    ('0.0001', '1e-05', 1)
    """
    grid = sorted(float(v) for v in values)
    if len(grid) < 2 or grid[0] <= 0 or len(set(grid)) != len(grid):
        raise ValueError(f"values must be at least two distinct positive weights, got {list(values)!r}")
    for name, v, low in (("points", points, 1), ("max_widenings", max_widenings, 0), ("refine", refine, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    log_step = (math.log(grid[-1]) - math.log(grid[0])) / (len(grid) - 1)
    scores: dict[float, float] = {}

    def evaluate(v: float) -> None:
        if v not in scores:
            p = float(score(v))
            scores[v] = -math.inf if math.isnan(p) else p

    def best() -> float:
        return max(sorted(scores), key=lambda v: scores[v])

    for v in grid:
        evaluate(v)
    widenings = 0
    while True:
        b = best()
        at_end = "lower" if b == grid[0] else "upper" if b == grid[-1] else None
        if at_end is None or widenings == max_widenings:
            break
        sign = -1 if at_end == "lower" else 1
        new = [math.exp(math.log(b) + sign * k * log_step) for k in range(1, points + 1)]
        for v in new:
            evaluate(v)
        grid = sorted(grid + new)
        widenings += 1
    step = log_step
    for _ in range(refine):
        step /= 2
        b = best()
        for v in (math.exp(math.log(b) - step), math.exp(math.log(b) + step)):
            if grid[0] < v < grid[-1]:
                evaluate(v)
    limit_reached = at_end is not None
    b = best()
    at_end = "lower" if b == grid[0] else "upper" if b == grid[-1] else None
    return {"value": b, "score": scores[b], "validation_psnr": [[v, scores[v]] for v in sorted(scores)],
            "grid": {"initial": sorted(float(v) for v in values), "final": grid, "widenings": widenings,
                     "max_widenings": max_widenings, "points": points, "refine": refine,
                     "limit_reached": limit_reached, "at_end": at_end}}


def validation_score(run: Callable[[float], torch.Tensor], x_val: torch.Tensor) -> Callable[[float], float]:
    """``weight -> mean PSNR of run(weight) against x_val`` (the validation images; never the test set)."""
    def score(v: float) -> float:
        with torch.no_grad():
            return float(psnr(run(float(v)), x_val).mean())
    return score


def tune(values, run, x_val, **widening):
    """The weight with the best mean validation PSNR of ``run(weight)`` against ``x_val`` and the curve
    ``[[weight, PSNR], ...]``, on the grid ``values`` widened by :func:`tune_weight` (its keywords pass through)."""
    record = tune_weight(values, validation_score(run, x_val), **widening)
    return record["value"], record["validation_psnr"]


def tv_max_iter(name: str, quick: bool) -> int:
    """TV's FISTA iteration cap on task ``name``: :data:`TV_MAX_ITER` at the full size (else the default of
    :data:`ITERATIONS`), the quick budget otherwise."""
    return ITERATIONS[True][1] if quick else TV_MAX_ITER.get(name, ITERATIONS[False][1])


_TUNING: dict = {}
_BOUNDS: dict = {}


def tuned(name: str, *, n_val: int | None, quick: bool, reference_dir: str | Path | None = None) -> dict:
    """Tikhonov's alpha (identity, gradient) and TV's lambda with the best mean PSNR on the first ``n_val``
    validation images, each on its grid widened by :func:`tune_weight` until the optimum is inside it, with the
    curves and the final grids; TV's record also gives, per lambda, the FISTA iterations and the final relative
    change (largest over the images). Computed once per process for the same arguments, or taken from
    ``reference_dir/quality.json`` when that recorded the same computation.

    ``n_val=0`` tunes nothing: every weight is the middle of its grid (a smoke run of the speed benchmark, whose
    timings need weights, not good ones); the record says so.
    """
    max_iter, tv_iter = ITERATIONS[quick][0], tv_max_iter(name, quick)
    if n_val == 0:
        middle = lambda grid: float(grid[len(grid) // 2])  # noqa: E731
        return {"n_validation": 0, "untuned": "no validation images: the middle of each grid (a smoke run)",
                **{f"tikhonov_{reg}": {"alpha": middle(ALPHAS), "max_iter": max_iter, "validation_psnr": []}
                   for reg in ("identity", "gradient")},
                "tv": {"lambda": middle(LAMBDAS), "max_iter": tv_iter, "tol": TV_TOL, "prox_iter": TV_PROX_ITER,
                       "n_validation": 0, "validation_psnr": []}}
    key = (name, n_val, quick, max_iter, tv_iter, None if reference_dir is None else str(Path(reference_dir).resolve()))
    if key not in _TUNING:
        _TUNING[key] = None if reference_dir is None else _published_tuning(name, n_val, quick, reference_dir)
    if _TUNING[key] is None:
        spec = get_task(name)
        op = spec.operator
        xv, yv, _ = pairs(spec.pairs("validation"), n_val)
        tuning = {}
        for reg in ("identity", "gradient"):
            record = tune_weight(ALPHAS, validation_score(
                lambda a: tikhonov(yv, op, a, regularizer=reg, max_iter=max_iter), xv), refine=REFINE["tikhonov"])
            tuning[f"tikhonov_{reg}"] = {"alpha": record["value"], "max_iter": max_iter,
                                         "validation_psnr": record["validation_psnr"], "grid": record["grid"]}
        n_tv = min(len(xv), TV_VALIDATION)
        convergence = {}

        def run_tv(lam):
            solver = TotalVariation(op, lam, max_iter=tv_iter, tol=TV_TOL, prox_iter=TV_PROX_ITER)
            out = solver(yv[:n_tv])
            convergence[lam] = [lam, solver.last_solve.iterations, solver.last_solve.max_relative_change]
            return out

        record = tune_weight(LAMBDAS, validation_score(run_tv, xv[:n_tv]), refine=REFINE["tv"])
        tuning["tv"] = {"lambda": record["value"], "max_iter": tv_iter, "tol": TV_TOL, "prox_iter": TV_PROX_ITER,
                        "n_validation": n_tv,
                        "validation_psnr": record["validation_psnr"], "grid": record["grid"],
                        "convergence": [convergence[v] for v, _ in record["validation_psnr"]]}
        _TUNING[key] = {"n_validation": int(len(xv)), **tuning}
    return _TUNING[key]


def same_tuning(tuning: dict, n_val: int, quick: bool, name: str | None = None) -> bool:
    """Whether a recorded tuning was made on the first ``n_val`` validation images with this module's initial
    grids, widening and iteration budgets (then it is the same computation as :func:`tuned` would make; a record
    from before the grids were widened is not). ``name``: the task, whose TV iteration cap is checked (when None,
    any cap that :func:`tv_max_iter` gives some task at this size)."""
    max_iter = ITERATIONS[quick][0]
    caps = {tv_max_iter(name, quick)} if name is not None else (
        {ITERATIONS[True][1]} if quick else {ITERATIONS[False][1], *TV_MAX_ITER.values()})

    def same_grid(record, initial, refine):
        g = record["grid"]
        return bool(np.allclose(g["initial"], initial) and g["points"] == WIDENING["points"]
                    and g["max_widenings"] == WIDENING["max_widenings"] and g["refine"] == refine)

    try:
        return bool(tuning["n_validation"] == n_val
                    and tuning["tv"]["n_validation"] == min(n_val, TV_VALIDATION)
                    and tuning["tv"]["max_iter"] in caps and tuning["tv"]["tol"] == TV_TOL
                    and tuning["tv"]["prox_iter"] == TV_PROX_ITER
                    and same_grid(tuning["tv"], LAMBDAS, REFINE["tv"])
                    and all(tuning[f"tikhonov_{r}"]["max_iter"] == max_iter
                            and same_grid(tuning[f"tikhonov_{r}"], ALPHAS, REFINE["tikhonov"])
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
        if t.get("task") == name and same_tuning(tuning, n_val, quick, name):
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
              gradient_bound: bool | None = None, reference_dir: str | Path | None = None,
              tuning: dict | None = None) -> tuple[list[Method], dict]:
    """FBP (CT), Tikhonov (identity, gradient) and TV with weights tuned on ``n_val`` validation images.

    Returns the methods and the tuning record (the validation curves). ``exact_bounds`` computes Tikhonov's
    exact constant on demand (Lanczos; minutes for the gradient regulariser on CT, which is skipped unless
    ``gradient_bound=True``). ``tuning``: a recorded tuning to use instead (an earlier run's weights and budgets).
    """
    op = get_task(name).operator
    if tuning is None:
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
    tol, prox_iter = tuning["tv"].get("tol", TV_TOL), tuning["tv"].get("prox_iter", TV_PROX_ITER)
    make = lambda o: TotalVariation(o, lam, max_iter=tv_iter, tol=tol, prox_iter=prox_iter)  # noqa: E731
    methods.append(Method("TV (validation lambda)", "baseline", make(op), lambda: math.inf, "no certificate",
                          {"lambda": lam, "max_iter": tv_iter, "tol": tol, "prox_iter": prox_iter}, rebuild=make))
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
        if model_name in REGULARISERS:  # a regulariser fine-tuned on this task, with its preset
            if model_info(model_name).get("task") == name:
                out.append(_regulariser(model_name, name, model_name))
            continue
        if model_name not in _MODELS:  # loading re-derives the spectral norms: once per process
            _MODELS[model_name] = load_model(model_name).eval().requires_grad_(False)  # attacks need no weight grads
        model = _MODELS[model_name]
        certified = model.family != "unconstrained"
        out.append(Method(model_name, "learned", model, model.lipschitz_bound,
                          "certified" if certified else "no certificate", {"family": model.family}, module=model))
    return out


def _regulariser(model_name: str, task: str, label: str) -> Method:
    """A shipped convex ridge regulariser with its preset for ``task`` as a method: certified, with its solver's
    additive term in ``extra``, and a looser copy (``UNIVERSAL_SEARCH``) that an adversarial search follows."""
    key = (model_name, task)
    if key not in _MODELS:
        op = get_task(task).operator
        # the model as served, and a looser copy that the search follows (its perturbations are scored on the other)
        _MODELS[key] = load_model(model_name, operator=op, preset=task).eval().requires_grad_(False)
        _MODELS[key, "search"] = load_model(model_name, operator=op, preset=task,
                                            tol=UNIVERSAL_SEARCH["tol"]).eval().requires_grad_(False)
        _MODELS[key, "search"].derivative_tol = UNIVERSAL_SEARCH["derivative_tol"]
    model, search = _MODELS[key], _MODELS[key, "search"]
    return Method(label, "learned", model, model.lipschitz_bound, "certified",
                  {"family": "convex ridge regulariser", "tol": model.tol, "search": dict(UNIVERSAL_SEARCH)},
                  module=model, warm=lambda y, x0: search(y, x0=x0))


def universal(name: str) -> list[Method]:
    """The universal regulariser with the preset of ``name`` (what ``load_model(task=name)`` serves when it is the
    recommended model), as a method; nothing for a task without a preset."""
    if "universal" not in list_models() or name not in UNIVERSAL_PRESETS:
        return []
    return [_regulariser("universal", name, "universal (task preset)")]


def peer(name: str, reference_dir: str | Path | None) -> list[Method]:
    """The deepinv peer of ``name`` when its trained weights are in ``reference_dir``, else nothing."""
    if reference_dir is None or name not in PEER_RECIPE or not weights_path(name, reference_dir).is_file():
        return []
    model, record = load_peer(name, weights_path(name, reference_dir))
    model.requires_grad_(False)
    return [Method("deepinv unrolled PGD + DnCNN", "peer", model, lambda: math.inf, "no certificate",
                   {"validation_psnr": record["validation_psnr"], "steps": record["recipe"]["steps"],
                    "train_seconds": record.get("train_seconds"), "train_threads": record.get("threads")},
                   module=model)]
