"""Stability to perturbations of the measurements (PROTOCOLS.md, "Stability"; Genzel, Macdonald & März 2022,
Antun et al. 2020).

For every method of the benchmarks (FBP, Tikhonov, TV, each shipped model, the deepinv peer), on the first
test images of a task and relative noise levels eta (of ||y||):

- random: a Gaussian perturbation of norm eta ||y||, PSNR against the truth;
- adversarial: :func:`invstable.stability.adversarial_search` (projected Adam, random starts, worst kept)
  maximising ||R(y + d) - R(y)||, and again maximising ||R(y + d) - x||; PSNR against the truth of both;
- the empirical Lipschitz ratio ||R(y + d) - R(y)|| / ||d|| of every perturbation tried, its maximum, the
  method's bound (certified for the stable models, the exact constant for Tikhonov) and the count of
  violations (a ratio above a certified bound), which must be 0.

Every method is attacked through autograd by :func:`invstable.stability.adversarial_search`: all the images and
all the random starts of a method in one batch, R(y) computed once, the eta levels in increasing order with each
level warm-started from the previous one's worst perturbation, and early stopping of a start once its best
objective has stopped rising (after ``min_steps``; the protocol's steps are the cap; the steps used are recorded).
Tikhonov is differentiated implicitly, FBP as the linear map it is, the networks as networks; the universal
regulariser (its task preset, certified with a solver's additive term) implicitly too, through a looser copy
(``UNIVERSAL_SEARCH``) whose solves start at R(y), the perturbations found scored on the model as served and its
violations read against L + additive / ||d||. TV is attacked twice:
directly, through an unrolled TV (``TV_UNROLLED`` FISTA iterations warm-started at the converged TV solution of y)
whose perturbations are then evaluated on the full TV, and by transfer (the perturbations found for Tikhonov); for
each image the larger loss of the two is reported, and both estimates are kept in the row.

The protocol size (20 images, eta in {0.5, 1, 2, 5} %, 200 steps x 3 starts, both objectives) is the default;
``--images/--steps/--restarts/--etas`` shrink it and the JSON records the settings actually used, with
``"protocol": false`` when they are below the protocol. ``--resume`` keeps the methods already measured with
the same settings (results are written after each method); ``--methods`` runs only the methods named, so that a
run too long for one sitting is done a few methods at a time.

Run it with ``invstable benchmark --only stability`` or, in the source checkout, ``python -m benchmarks.stability``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..baselines import tv
from ..data import task as get_task
from ..models._certificate import rounding_allowance
from ..stability import adversarial_search
from ._evaluate import MIN_STEPS, STABILITY_PROTOCOL, stats, study
from ._methods import baselines, learned, pairs, peer, universal
from ._record import environment, results_folder, write_result
from ._report import stability_task_figure

PROTOCOL = {**STABILITY_PROTOCOL, "validation": 32}
QUICK = {"images": 2, "etas": [0.01, 0.05], "steps": 5, "restarts": 1, "validation": 8}
#: FISTA iterations (and prox iterations) of the unrolled TV that TV's direct attack differentiates
TV_UNROLLED = {"max_iter": 50, "prox_iter": 5}
REFERENCE = "Tikhonov (identity, validation alpha)"
#: TV is also attacked with the perturbations found for this method (a transfer attack, the second estimate)
TRANSFER_SOURCE = REFERENCE
#: left out of the stability protocol: FBP with the ramp filter (the Hann one is what a user runs) and Tikhonov
#: with the gradient regulariser (CG on CT costs seconds per attack step; the identity one is the reference)
SKIPPED = ("FBP (Ramp)", "Tikhonov (gradient, validation alpha)")


def _unrolled_tv(method, op):
    """TV's direct attack: the unrolled TV (``TV_UNROLLED``) warm-started at ``x0``, called as ``R(y, x0)``."""
    lam = method.extra["lambda"]

    def reconstruct(y, x0):
        with warnings.catch_warnings():  # the unrolled solver stops at its cap by design
            warnings.simplefilter("ignore")
            return tv(y, op, lam, tol=1e-12, x0=x0, **TV_UNROLLED)
    return reconstruct


def _attacked(method, y, operator, batch: int):
    """What the search differentiates instead of ``method.reconstruct``, as ``(R', R(y))`` with ``R'(y, x0)``:
    TV's unrolled TV (given its ``operator``) or a solver's warm-started copy (``method.warm``), both started at
    R(y); None when the method itself is searched."""
    if operator is not None and "lambda" in method.extra:
        fn = _unrolled_tv(method, operator)
    elif method.warm is not None:
        fn = method.warm
    else:
        return None
    with torch.no_grad():
        x0 = torch.cat([method.reconstruct(y[i:i + batch]) for i in range(0, len(y), batch)])
    return fn, x0


def _methods_option(methods) -> str:
    """``methods`` as the ``--methods`` option of a recorded command line ('' for all)."""
    return " --methods " + " ".join(repr(m) if " " in m else m for m in methods) if methods else ""


def _protocol_methods(name: str, found: list, reference_dir) -> list:
    """The baselines ``found`` (less ``SKIPPED``), the shipped models, the universal regulariser and the peer."""
    return [m for m in found if m.name not in SKIPPED] + learned(name) + universal(name) + peer(name, reference_dir)


def evaluate_method(method, x, y, settings: dict, *, batch: int = 20, seed: int = 0,
                    transfer: dict | None = None, found: dict | None = None, operator=None) -> dict:
    """The random and adversarial protocol (:func:`study`) for one method on the images ``x`` (measurements
    ``y``), with its bound, the ratio to it and the violations.

    TV (a method with a ``lambda``, given its ``operator``) is searched directly through the unrolled TV
    warm-started at its converged solution, and ``transfer`` (the perturbations ``found`` for another method,
    by (batch start, eta, objective)) adds the transfer estimate; per image the larger loss is kept. Without an
    operator, a method given ``transfer`` is only evaluated at those perturbations. ``found``, when given,
    collects this method's perturbations in that form.
    """
    start = time.perf_counter()
    attack, how = _attacked(method, y, operator, batch), "search on this method"
    if attack is not None:
        how = (f"direct (unrolled TV, {TV_UNROLLED['max_iter']} FISTA x {TV_UNROLLED['prox_iter']} prox iterations "
               "warm-started at TV(y))" if method.warm is None else
               "search on this method (through a looser copy of its solver, warm-started at R(y); scored on the "
               "model as served)")
    if transfer is not None:
        how = f"transfer from {TRANSFER_SOURCE}" if attack is None else \
            f"{how} and transfer from {TRANSFER_SOURCE}; the larger loss per image"
        attack = False if attack is None else attack  # False: only the transferred perturbations
    result = study(method.reconstruct, x, y, settings, attack=attack, transfer=transfer, found=found, batch=batch,
                   seed=seed)
    bound = method.bound()
    ratios = result["ratios"]
    certified = method.bound_kind == "certified"
    finite = bound is not None and math.isfinite(bound)
    # a ratio counts as a violation only above what the certificate in floating point allows (docs/models.md)
    allowed, rounding = rounding_allowance(method.module, bound, settings["etas"], ratios,
                                           largest_measurement=float(y.flatten(1).norm(dim=1).max())) \
        if certified and finite else (bound, None)
    return {
        "method": method.name, "kind": method.kind, "settings": settings, **method.extra,
        "attack": how, "clean_psnr": stats(result["clean"]), "per_eta": result["per_eta"],
        "empirical_lipschitz": float(ratios.max()), "pairs_checked": int(ratios.size),
        "lipschitz_bound": bound, "bound_kind": method.bound_kind,
        "ratio_to_bound": float(ratios.max() / bound) if finite else None,
        "violations": int((ratios > allowed).sum()) if certified and finite else None,
        "rounding": rounding,
        "seconds": round(time.perf_counter() - start, 1),
        "_example": result["example"], "_picture": result["picture"],
    }


def _settings(quick: bool, overrides: dict) -> dict:
    s = dict(QUICK if quick else PROTOCOL)
    s.update({k: v for k, v in overrides.items() if v is not None})
    s["etas"] = [float(e) for e in s["etas"]]
    s["protocol"] = (s["images"] >= PROTOCOL["images"] and s["steps"] >= PROTOCOL["steps"]
                     and s["restarts"] >= PROTOCOL["restarts"] and set(PROTOCOL["etas"]) <= set(s["etas"]))
    return s


def _with_source(names: set) -> set:
    """``names`` and, when TV is among them, the method whose perturbations TV's transfer attack reuses."""
    return names | {TRANSFER_SOURCE} if any(n.startswith("TV") for n in names) else names


def evaluate_task(name: str, settings: dict, *, quick: bool = False, previous: dict | None = None, on_method=None,
                  log=print, reference_dir: str | Path | None = None, methods: list[str] | None = None) -> dict:
    """Every method of the stability protocol on the first ``settings["images"]`` test images of ``name``;
    ``previous`` (an earlier run's task) keeps the methods measured with the same settings; ``methods`` (names)
    runs only those (TV brings the method its transfer attack comes from)."""
    spec = get_task(name)
    x, y, _ = pairs(spec.pairs("test"), settings["images"])
    chosen = methods
    done = {r["method"]: r for r in (previous or {}).get("methods", []) if r.get("settings") == settings}
    # the baselines' weights are tuned (minutes for TV) only when a baseline is measured in this run
    found, tuning = baselines(name, n_val=0, quick=quick, exact_bounds=False)
    methods = _protocol_methods(name, found, reference_dir)
    names = [m.name for m in methods]
    if chosen is not None:
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValueError(f"no method {unknown} in the stability protocol of {name}; its methods are {names}")
    measured = _with_source({n for n in (names if chosen is None else chosen) if n not in done})
    if measured & {m.name for m in found} or previous is None or "tuning" not in previous:
        found, tuning = baselines(name, n_val=settings["validation"], quick=quick, exact_bounds=not quick,
                                  reference_dir=reference_dir)
        methods = _protocol_methods(name, found, reference_dir)
    else:
        tuning = previous["tuning"]  # every baseline is kept: so is the tuning its rows were measured with
    if chosen is not None:  # the others: kept when measured earlier with these settings, else left out
        wanted = _with_source(set(chosen))
        methods = [m for m in methods if m.name in wanted or m.name in done]
    result = {"task": name, "images": int(len(x)), "tuning": tuning, "methods": [], "_examples": {},
              "_pictures": {}, "_truth": x[0, 0].numpy()}
    methods.sort(key=lambda m: m.name != TRANSFER_SOURCE)  # its perturbations are reused for TV
    found: dict = {}
    source_needed = any(m.name.startswith("TV") and m.name not in done for m in methods)
    for m in methods:
        transfer = found if m.name.startswith("TV") else None
        if m.name in done and not (m.name == TRANSFER_SOURCE and source_needed):
            log(f"stability: {name} {m.name}: kept from the previous run")
            result["methods"].append(done[m.name])
            continue
        row = evaluate_method(m, x, y, settings, transfer=transfer, operator=spec.operator,
                              found=found if m.name == TRANSFER_SOURCE else None)
        result["_examples"][m.name] = row.pop("_example")
        result["_pictures"][m.name] = row.pop("_picture")
        result["methods"].append(row)
        log(f"stability: {name} {m.name}: max ratio {row['empirical_lipschitz']:.3f} bound {row['lipschitz_bound']} "
            f"violations {row['violations']} ({row['seconds']:.0f} s)")
        if on_method is not None:
            on_method(result)
    result["targets"] = targets(result)
    return result


def _search_cost(fn, y, aux, steps: int, restarts: int) -> float:
    start = time.perf_counter()
    adversarial_search(fn, y, [0.01], steps=steps, restarts=restarts, min_steps=steps, aux=aux)
    return time.perf_counter() - start


def step_costs(name: str, settings: dict, *, images: int = 2, methods: list[str] | None = None, log=print,
               reference_dir: str | Path | None = None) -> dict:
    """Seconds per step of the adversarial search of every method of ``name`` at the protocol's batch
    (``settings``: images x restarts), and the time of the whole protocol they imply.

    Each method is searched for 1 and for 3 steps on ``images`` test images x ``settings["restarts"]`` starts
    (what the search runs per step: one forward and one backward of the attacked map); the difference over 2 steps
    removes the setup (R(y), a solver's first solve), and the cost is scaled linearly to ``settings["images"]``
    images (a CPU's work on these sizes is linear in the batch). The protocol's time is then that per-step cost
    times the steps of each start (between the early-stopping minimum and the cap) times the levels times the two
    objectives, plus nothing for the evaluations (a few full solves): a lower estimate of what a run takes. The
    baselines' weights are not tuned (the middle of their grids; their solvers' budgets are the protocol's).
    """
    spec = get_task(name)
    x, y, _ = pairs(spec.pairs("test"), images)
    # the baselines' weights at the middle of their grids: the time of a step is measured, not a reconstruction
    found = _protocol_methods(name, baselines(name, n_val=0, quick=False, exact_bounds=False)[0], reference_dir)
    if methods is not None:
        found = [m for m in found if m.name in methods]
    restarts, scale = settings["restarts"], settings["images"] / images
    searches = len(settings["etas"]) * 2  # the levels x the two objectives
    low = min(MIN_STEPS, settings["steps"])
    rows = []
    for m in found:
        fn, aux = _attacked(m, y, spec.operator, len(y)) or (m.reconstruct, None)
        one = _search_cost(fn, y, aux, 1, restarts)
        three = _search_cost(fn, y, aux, 3, restarts)
        per_step = max(three - one, 0.0) / 2 * scale
        row = {"method": m.name, "seconds_per_step": round(per_step, 3),
               "measured_batch": images * restarts, "protocol_batch": settings["images"] * restarts,
               "protocol_hours_at_min_steps": round(per_step * low * searches / 3600, 2),
               "protocol_hours_at_cap": round(per_step * settings["steps"] * searches / 3600, 2)}
        rows.append(row)
        log(f"stability cost: {name} {m.name}: {per_step:.2f} s per step at batch {row['protocol_batch']}, "
            f"{row['protocol_hours_at_min_steps']:.2f}-{row['protocol_hours_at_cap']:.2f} h")
    return {"task": name, "images_measured": images, "min_steps": low, "searches": searches, "methods": rows,
            "hours_at_min_steps": round(sum(r["protocol_hours_at_min_steps"] for r in rows), 2),
            "hours_at_cap": round(sum(r["protocol_hours_at_cap"] for r in rows), 2)}


def run_cost(*, results_dir: str | Path, tasks=("ct-30", "blur-g2"), threads: int = 2, images: int = 2,
             methods: list[str] | None = None, log=print, reference_dir: str | Path | None = None) -> dict:
    """:func:`step_costs` of ``tasks`` at the protocol's size, written to ``results_dir/stability_cost.json``.

    With ``methods``, the rows of the other methods already in that file are kept (each row records the batch it
    was measured at) and the totals are recomputed."""
    torch.set_num_threads(threads)
    folder = results_folder(results_dir)
    path = folder / "stability_cost.json"
    before = json.loads(path.read_text()) if methods is not None and path.is_file() else {}
    earlier = {t["task"]: t for t in before.get("tasks", [])}
    command = ("python -m benchmarks.stability --cost --tasks " + " ".join(tasks) + f" --images {images}"
               + _methods_option(methods))
    payload = {"benchmark": "stability_cost", "environment": environment("cpu"), "command": command,
               "settings": PROTOCOL, "tasks": []}
    if earlier:
        payload["earlier_commands"] = before.get("earlier_commands", []) + [before.get("command")]
    for t in tasks:
        new = step_costs(t, PROTOCOL, images=images, methods=methods, log=log, reference_dir=reference_dir)
        if t in earlier:
            measured = {r["method"] for r in new["methods"]}
            new["methods"] = [r for r in earlier[t]["methods"] if r["method"] not in measured] + new["methods"]
            for key in ("hours_at_min_steps", "hours_at_cap"):
                new[key] = round(sum(r[f"protocol_{key}"] for r in new["methods"]), 2)
        payload["tasks"].append(new)
        write_result("stability_cost", payload, results_dir=folder)
    return payload


def targets(result: dict) -> list[dict]:
    """Zero violations; at the largest eta the stable models lose no more PSNR under the adversarial search
    against the truth than Tikhonov (validation alpha); certified bound at most twice Tikhonov's exact constant."""
    rows = {r["method"]: r for r in result["methods"]}
    out = [{"model": "all", "target": "zero certificate violations",
            "value": sum(r["violations"] or 0 for r in rows.values()), "met": all(not r["violations"] for r in rows.values())}]
    ref = rows.get(REFERENCE)
    for r in rows.values():
        if r["kind"] != "learned" or r["bound_kind"] != "certified":
            continue
        if ref is not None:
            loss, ref_loss = r["per_eta"][-1]["adversarial_x_loss_db"], ref["per_eta"][-1]["adversarial_x_loss_db"]
            out.append({"model": r["method"], "target": f"adversarial PSNR loss at eta = {r['per_eta'][-1]['eta']:g} "
                        "<= Tikhonov's", "value": round(loss, 3), "reference": round(ref_loss, 3),
                        "met": bool(loss <= ref_loss)})
            if ref["bound_kind"] == "exact constant":
                ratio = r["lipschitz_bound"] / ref["lipschitz_bound"]
                out.append({"model": r["method"], "target": "bound at most twice Tikhonov's exact constant",
                            "value": round(ratio, 3), "met": bool(ratio <= 2)})
    return out


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def _figure(results: list[dict], folder: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 4 * len(results)), squeeze=False)
    for (ax, bx), r in zip(axes, results):
        for i, m in enumerate(r["methods"]):
            etas = [100 * e["eta"] for e in m["per_eta"]]
            color = f"C{i % 10}"
            ax.plot(etas, [e["adversarial_x_psnr"]["mean"] for e in m["per_eta"]], "-o", color=color, label=m["method"])
            ax.plot(etas, [e["random_psnr"]["mean"] for e in m["per_eta"]], "--", color=color, alpha=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("eta (% of ||y||)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{r['task']}: adversarial (solid) and random (dashed)", fontsize=9)
        ax.legend(fontsize=6)
        names = [m["method"] for m in r["methods"]]
        found = [m["empirical_lipschitz"] for m in r["methods"]]
        bounds = [m["lipschitz_bound"] if m["lipschitz_bound"] and math.isfinite(m["lipschitz_bound"]) else np.nan
                  for m in r["methods"]]
        pos = np.arange(len(names))
        bx.bar(pos - 0.2, found, 0.4, label="largest ratio found")
        bx.bar(pos + 0.2, bounds, 0.4, label="bound (certified / exact)")
        bx.set_xticks(pos, names, rotation=35, ha="right", fontsize=6)
        bx.set_yscale("log")
        bx.set_title(f"{r['task']}: empirical Lipschitz ratio and bound", fontsize=9)
        bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "stability.png", dpi=110)
    plt.close(fig)
    examples = [r for r in results if r.get("_examples")]  # kept tasks (an earlier run) have no pictures
    if not examples:
        return
    n = 1 + max(len(r["_examples"]) for r in examples)
    fig, axes = plt.subplots(len(examples), n, figsize=(1.9 * n, 2.3 * len(examples)), squeeze=False)
    for row, r in zip(axes, examples):
        panels = [("truth", r["_truth"])] + [(k, v["image"]) for k, v in r["_examples"].items()]
        for ax, (title, img) in zip(row, panels + [(None, None)] * (n - len(panels))):  # tasks differ in methods
            ax.axis("off")
            if img is not None:
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                ax.set_title(title.replace(" (", "\n("), fontsize=6)
    fig.suptitle("worst case found against the truth at the largest eta (first test image)", fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "stability_examples.png", dpi=110)
    plt.close(fig)


def run(*, quick: bool, results_dir: str | Path, tasks=("ct-30", "blur-g2"), threads: int = 2, resume: bool = False,
        log=print, reference_dir: str | Path | None = None, command: str | None = None,
        methods: list[str] | None = None, **overrides) -> dict:
    """Run the protocol on ``tasks``; write ``results_dir/stability.json`` after every method and the figures;
    return the payload. ``overrides``: ``images``, ``steps``, ``restarts``, ``etas``, ``validation`` (None keeps
    the size of ``quick``). ``reference_dir``: earlier results to reuse (the quality run's tuning, the deepinv
    peer's weights). ``command``: the command line recorded in the JSON (default: the source checkout's
    ``python -m benchmarks.stability ...`` equivalent). ``methods``: run only these (by name; with ``resume``,
    the others measured earlier with the same settings are kept). With ``resume``, the tasks of the earlier run
    that are not in ``tasks`` are kept as they were."""
    unknown = sorted(set(overrides) - set(PROTOCOL))
    if unknown:
        raise TypeError(f"unknown stability settings {unknown}; the settings are {sorted(PROTOCOL)}")
    torch.set_num_threads(threads)
    folder = results_folder(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    settings = _settings(quick, overrides)
    previous = {}
    if resume and (folder / "stability.json").is_file():
        previous = {t["task"]: t for t in json.loads((folder / "stability.json").read_text()).get("tasks", [])}
    command = command or "python -m benchmarks.stability" + (" --quick" if quick else "") + " --tasks " + " ".join(tasks) + "".join(
        f" --{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in overrides.items() if v is not None) + _methods_option(methods)
    payload = {"benchmark": "stability", "environment": environment("cpu"), "command": command, "quick": quick,
               "settings": settings, "protocol_settings": PROTOCOL, "methods": methods, "complete": False,
               "tasks": []}
    results = []
    kept = [t for name, t in previous.items() if name not in tasks]  # a resumed run keeps the tasks it skips

    def save(partial):
        payload["tasks"] = kept + [_public(r) for r in results] + ([] if partial is None else [_public(partial)])
        write_result("stability", payload, results_dir=folder)

    for t in tasks:
        r = evaluate_task(t, settings, quick=quick, previous=previous.get(t), on_method=save, log=log,
                          reference_dir=reference_dir, methods=methods)
        results.append(r)
        save(None)
    payload["complete"] = True
    save(None)
    _figure(kept + results, folder)
    for r in results:
        if any(r.get("_pictures", {}).values()):
            stability_task_figure(_public(r), r["_pictures"], folder / f"stability_{r['task']}.png")
    return payload
