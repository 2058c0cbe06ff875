"""Reconstruction quality on the protocol test sets (PROTOCOLS.md, "Quality").

Methods (:mod:`._methods`): FBP (CT), Tikhonov with the identity and the gradient regulariser (alpha tuned
on the validation split; also alpha by the discrepancy principle per sample), TV (lambda tuned on the validation
split; FISTA to a relative change of ``TV_TOL``, its row records the iterations and the final relative change),
every pretrained model shipped for the task, and the deepinv peer (:mod:`._peer`, when its weights are in the
reference folder). Each weight's grid is widened until the validation optimum is inside it
(:func:`._methods.tune_weight`; the final grids are in the task's ``tuning``). CT-180: the baselines only (no
model is trained for it). Metrics on the test split: PSNR (data range 1), SSIM, relative L2 error, mean and
standard deviation; every reconstruction is clipped to [0, 1] before scoring (all methods alike). Each method's
certified Lipschitz bound is recorded next to it (Tikhonov: its exact constant).

``--resume`` keeps the tasks already in ``quality.json`` that were measured with the same size (validation and
test counts, quick or not) and solver budgets; each task records the commit it was measured at. The figure's
panels (the last test image of every method) are kept beside it in ``quality_panels.npz`` (plain arrays, read
without pickle; not committed); a kept task without panels has them recomputed on that one image.

``--resume --models NAME ...`` keeps a task's other rows and measures only the named shipped models on the same
test images (new models, retrained ones), each row recording the commit it was measured at. The universal
regulariser's row comes from ``universal.json`` (``python -m benchmarks.universal``, same test split), marked so.

Run it with ``invstable benchmark --only quality`` or, in the source checkout, ``python -m benchmarks.quality``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..baselines import TVSolveInfo, choose_alpha, tikhonov
from ..data import task as get_task
from ..models._io import atomic_write
from ._methods import ITERATIONS, MODEL_PREFIX, baselines, learned, pairs, peer, same_tuning
from ._metrics import scores
from ._peer import RECIPE as PEER_TASKS
from ._record import environment, results_folder, write_result

def _row(method, out, x, seconds, **extra):
    s = scores(out, x)
    row = {"method": method, "n": int(len(x)), "seconds": round(seconds, 2)}
    for k, v in s.items():
        row[f"{k}_mean"], row[f"{k}_std"] = float(v.mean()), float(v.std())
    row.update(extra)
    return row


def evaluate_task(name: str, *, quick: bool, models: list[str] | None = None, with_peer: bool = True,
                  n_val: int | None = None, n_test: int | None = None,
                  reference_dir: str | Path | None = None) -> dict:
    """Every method on the test split of ``name`` (all of it, or 8 images when ``quick``; ``n_test`` overrides)."""
    spec = get_task(name)
    op = spec.operator
    n_val = n_val or (8 if quick else 32)
    n_test = n_test or (8 if quick else None)
    xt, yt, st = pairs(spec.pairs("test"), n_test)
    methods, tuning = baselines(name, n_val=n_val, quick=quick, exact_bounds=not quick, reference_dir=reference_dir)
    methods += learned(name, models)
    if with_peer:
        methods += peer(name, reference_dir)
    rows, images = [], {}
    for m in methods:
        start = time.perf_counter()
        with torch.no_grad():
            out = m.reconstruct(yt)
        seconds = time.perf_counter() - start
        bound = m.bound()
        solve = getattr(m.reconstruct, "last_solve", None)  # TV: did FISTA converge on the test images
        converged = {} if not isinstance(solve, TVSolveInfo) else {
            "iterations": solve.iterations, "relative_change_max": solve.max_relative_change,
            "converged": solve.converged}
        rows.append(_row(m.name, out, xt, seconds, kind=m.kind, lipschitz_bound=bound, bound_kind=m.bound_kind,
                         **m.extra, **converged))
        images[m.name] = out[-1, 0].clamp(0, 1).numpy()  # the last test image (Shepp-Logan for CT)
        if m.name.startswith("Tikhonov"):
            reg = "identity" if "identity" in m.name else "gradient"
            max_iter = ITERATIONS[quick][0]
            start = time.perf_counter()
            with torch.no_grad():
                alphas = choose_alpha(yt, op, noise_level=st, regularizer=reg, max_iter=max_iter)
                out = tikhonov(yt, op, alphas, regularizer=reg, max_iter=max_iter)
            rows.append(_row(f"Tikhonov ({reg}, discrepancy)", out, xt, time.perf_counter() - start, kind="baseline",
                             lipschitz_bound=None, bound_kind="alpha differs per sample"))
    if with_peer and name in PEER_TASKS and not any(m.kind == "peer" for m in methods):
        rows.append({"method": "deepinv unrolled PGD + DnCNN", "kind": "peer", "missing": True,
                     "why": f"no trained weights; run `python -m benchmarks.peer --task {name}`"})
    return {"task": name, "n_test": int(len(xt)), "n_validation": int(n_val), "rows": rows, "tuning": tuning,
            "targets": targets(name, rows), "_images": images, "_truth": xt[-1, 0].numpy()}


#: the name under which ``--models`` re-measures the deepinv peer (after it was retrained)
PEER_NAME = "peer"


def measure_models(name: str, names: list[str], *, quick: bool, n_test: int | None,
                   reference_dir: str | Path | None = None) -> tuple[list[dict], dict]:
    """Rows (and last-image panels) of the shipped models ``names`` on the test split of ``name``; the name
    ``"peer"`` measures the deepinv peer whose weights are in ``reference_dir``."""
    spec = get_task(name)
    xt, yt, _ = pairs(spec.pairs("test"), n_test or (8 if quick else None))
    rows, images = [], {}
    methods = learned(name, [n for n in names if n != PEER_NAME])
    if PEER_NAME in names:
        methods += peer(name, reference_dir)
    for m in methods:
        start = time.perf_counter()
        with torch.no_grad():
            out = m.reconstruct(yt)
        rows.append(_row(m.name, out, xt, time.perf_counter() - start, kind=m.kind, lipschitz_bound=m.bound(),
                         bound_kind=m.bound_kind, **m.extra))
        images[m.name] = out[-1, 0].clamp(0, 1).numpy()
    return rows, images


def universal_row(name: str, folder: Path) -> dict | None:
    """The universal regulariser's row of task ``name`` from ``universal.json`` (None when it has none)."""
    path = folder / "universal.json"
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    r = payload.get("protocol", {}).get(name)
    if r is None:
        return None
    return {"method": "universal (task preset)", "kind": "learned", "n": r["n_test"], "seconds": round(r["seconds"], 2),
            "psnr_mean": r["psnr_mean"], "psnr_std": r["psnr_std"], "ssim_mean": r["ssim_mean"],
            "relative_error_mean": r["relative_error_mean"], "lipschitz_bound": r["lipschitz_bound"],
            "bound_kind": f"certified (+ solver term {r['additive']:.2f})",
            "from": "universal.json (" + payload.get("command", "python -m benchmarks.universal") + ")",
            "measured_at": payload.get("environment", {}).get("git_commit", "unknown")}


def _merge_rows(rows: list[dict], new: list[dict], commit: str) -> list[dict]:
    """``rows`` with each row of ``new`` replacing the one of the same method (or appended), stamped ``commit``."""
    out = [dict(r) for r in rows]
    for row in new:
        row = {**row, "measured_at": row.get("measured_at", commit)}
        at = next((i for i, r in enumerate(out) if r["method"] == row["method"]), None)
        if at is None:
            out.append(row)
        else:
            out[at] = row
    return out


def _psnr(rows, method):
    row = next((r for r in rows if r["method"] == method and not r.get("missing")), None)
    return None if row is None else row["psnr_mean"]


def targets(name: str, rows: list[dict]) -> list[dict]:
    """The targets of the learned-inverses issue and PROTOCOLS.md, checked against the measured rows."""
    prefix = MODEL_PREFIX.get(name)
    out = []
    if prefix is None:  # CT-180: baselines only
        return out
    tik = max(v for v in (_psnr(rows, "Tikhonov (identity, validation alpha)"),
                          _psnr(rows, "Tikhonov (gradient, validation alpha)")) if v is not None)
    tik_bound = next(r["lipschitz_bound"] for r in rows if r["method"] == "Tikhonov (identity, validation alpha)")
    tvp = _psnr(rows, "TV (validation lambda)")
    peer_psnr = _psnr(rows, "deepinv unrolled PGD + DnCNN")
    for r in rows:
        if r.get("missing") or not (r["method"].startswith(prefix) or r["method"].startswith("universal")):
            continue
        # each model is held against the unconstrained twin of its own design (ct30-wide: ct30-wide-unconstrained)
        twin = next((f"{stem}-unconstrained" for stem in (r["method"].rsplit("-", 1)[0], prefix[:-1])
                     if _psnr(rows, f"{stem}-unconstrained") is not None), None)
        unconstrained = None if twin is None else _psnr(rows, twin)
        p = r["psnr_mean"]
        stable = not r["method"].endswith("unconstrained")
        if r["method"].startswith("universal") or r.get("family") == "convex ridge regulariser":
            unconstrained = None  # a variational model: the unrolled ResNet is not its twin, and it has none yet
        checks = []
        if name == "ct-30":
            checks += [("above best Tikhonov by >= 6 dB", p - tik, 6.0), ("above TV by >= 2 dB", p - tvp, 2.0)]
        else:
            checks += [("above best Tikhonov by >= 1.5 dB", p - tik, 1.5), ("above TV by >= 0.5 dB", p - tvp, 0.5)]
        if peer_psnr is not None:
            checks.append(("above the deepinv peer", p - peer_psnr, 0.0))
        if stable and unconstrained is not None:
            checks.append(("within 1 dB of the unconstrained model (or better)", p - unconstrained, -1.0))
        if stable and tik_bound is not None:
            checks.append(("bound at most twice Tikhonov's constant (ratio <= 2)", -r["lipschitz_bound"] / tik_bound,
                           -2.0))
        for what, value, need in checks:
            out.append({"model": r["method"], "target": what, "value": round(abs(value) if "ratio" in what else value, 3),
                        "met": bool(value >= need)})
    return out


def _figure(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = len(results)
    n_cols = 1 + max(len(r["_images"]) for r in results)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols, 2.2 * n_rows), squeeze=False)
    for i, r in enumerate(results):
        panels = [("truth", r["_truth"])] + list(r["_images"].items())
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j < len(panels):
                ax.imshow(panels[j][1], cmap="gray", vmin=0, vmax=1)
                ax.set_title(panels[j][0].replace(" (", "\n("), fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panels(name: str, *, quick: bool, n_val: int, reference_dir=None, tuning: dict | None = None
            ) -> tuple[dict, np.ndarray]:
    """Every method's reconstruction of the last test image of ``name`` (the figure of a resumed task), the
    baselines with ``tuning`` (the kept run's record) when given."""
    x, y, _ = pairs(get_task(name).pairs("test"), None)
    x, y = x[-1:], y[-1:]
    methods = baselines(name, n_val=n_val, quick=quick, exact_bounds=False, reference_dir=reference_dir,
                        tuning=tuning)[0]
    methods += learned(name) + peer(name, reference_dir)
    with torch.no_grad():
        return {m.name: m.reconstruct(y)[0, 0].clamp(0, 1).numpy() for m in methods}, x[0, 0].numpy()


def _save_panels(results, path: Path) -> None:
    """Write the panels of ``results`` to ``path``, keeping those of the other tasks already there."""
    arrays = {}
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            done = {r["task"] for r in results}
            arrays.update({k: z[k] for k in z.files if k.split("/", 1)[0] not in done})
    for r in results:
        arrays[f"{r['task']}/truth"] = r["_truth"]
        arrays.update({f"{r['task']}/method/{k}": v for k, v in r["_images"].items()})

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    atomic_write(path, write)


def _load_panels(path: Path, name: str) -> tuple[dict, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        if f"{name}/truth" not in z.files:
            return None
        prefix = f"{name}/method/"
        return {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)}, z[f"{name}/truth"]


def _kept(folder: Path, *, quick: bool, n_val: int, n_test: int | None, any_tuning: bool = False) -> dict:
    """The tasks of an earlier ``quality.json`` in ``folder`` measured at the same size, with the same tuning grids
    and solver budgets; with ``any_tuning`` (named models measured into a kept run: their rows do not depend on
    the baselines' tuning) also those tuned otherwise, marked ``"earlier_tuning": True``."""
    path = folder / "quality.json"
    if not path.is_file():
        return {}
    payload = json.loads(path.read_text())
    if payload.get("quick") != quick:
        return {}
    commit = payload.get("environment", {}).get("git_commit", "unknown")
    kept = {}
    for t in payload.get("tasks", []):
        n_expected = len(get_task(t["task"]).pairs("test"))
        n_expected = n_expected if n_test is None else min(n_test, n_expected)
        same = same_tuning(t.get("tuning", {}), n_val, quick, t["task"])
        if t.get("n_test") == n_expected and (same or any_tuning):
            kept[t["task"]] = {"measured_at": commit, **t, **({} if same else {"earlier_tuning": True})}
    return kept


def run(*, quick: bool, results_dir: str | Path, tasks=("ct-30", "blur-g2", "ct-180"), threads: int = 2,
        log=print, n_val: int | None = None, n_test: int | None = None, resume: bool = False,
        models: list[str] | None = None, reference_dir: str | Path | None = None, command: str | None = None) -> dict:
    """Evaluate ``tasks``; write ``results_dir/quality.json`` after each task (a partial run keeps what it
    finished) and ``quality.png``; return the payload. ``resume`` keeps the tasks an earlier run measured at the
    same size; ``models`` (with ``resume``) measures only these shipped models into the kept tasks.
    ``reference_dir``: earlier results to reuse (the quality run's tuning, the deepinv peer's weights).
    ``command``: the command line recorded in the JSON (default: the source checkout's ``python -m
    benchmarks.quality ...`` equivalent)."""
    if models and not resume:
        raise ValueError(f"models={models} measures named models into a kept run: pass resume=True (--resume)")
    torch.set_num_threads(threads)
    folder = results_folder(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    n_val = n_val or (8 if quick else 32)
    recorded = command
    command = "python -m benchmarks.quality" + (" --quick" if quick else "") + " --tasks " + " ".join(tasks)
    if resume:
        command += " --resume" + (" --models " + " ".join(models) if models else "")
    command = recorded or command
    payload = {"benchmark": "quality", "environment": environment("cpu"), "quick": quick, "command": command,
               "complete": False, "tasks": []}
    kept = _kept(folder, quick=quick, n_val=n_val, n_test=n_test, any_tuning=bool(models)) if resume else {}
    commit = payload["environment"]["git_commit"]
    results = []
    for t in tasks:
        start = time.perf_counter()
        if t in kept:
            r = kept[t]
            r["_images"], r["_truth"] = _load_panels(folder / "quality_panels.npz", t) or _panels(
                t, quick=quick, n_val=n_val, reference_dir=reference_dir, tuning=r.get("tuning"))
            log(f"quality: {t} kept from the earlier run (commit {str(r['measured_at'])[:10]})")
            if models:
                new, images = measure_models(t, models, quick=quick, n_test=n_test, reference_dir=reference_dir)
                r["rows"] = _merge_rows(r["rows"], new, commit)
                r["_images"].update(images)
                log(f"quality: {t}: measured {[row['method'] for row in new]} at commit {commit[:10]}")
        else:
            r = {"measured_at": commit, **evaluate_task(t, quick=quick, n_val=n_val, n_test=n_test,
                                                        reference_dir=reference_dir)}
            log(f"quality: {t} done in {time.perf_counter() - start:.0f} s")
        uni = None if quick else universal_row(t, folder)
        if uni is not None:
            r["rows"] = _merge_rows(r["rows"], [uni], commit)
        r["targets"] = targets(t, r["rows"])
        results.append(r)
        payload["tasks"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
        payload["complete"] = len(results) == len(tasks)
        write_result("quality", payload, results_dir=folder)
        _save_panels(results, folder / "quality_panels.npz")
    _figure(results, folder / "quality.png")
    return payload
