"""The benchmarks page, generated from the JSON results (never by hand): a table per task with every method in a
row, the targets met and missed, the figures, and the command, commit and machine of each run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..models import recommended
from ..models._io import atomic_write
from ._record import results_folder

def _f(v, digits=2, none="-"):
    if v is None:
        return none
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def _load(folder: Path, name: str):
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _provenance(payload: dict) -> list[str]:
    env = payload.get("environment") or payload.get("runs", [{}])[0].get("environment", {})
    state = "complete" if payload.get("complete", True) else "PARTIAL (the run stopped before its end)"
    return [f"Command: `{payload.get('command', '?')}` ({'quick size' if payload.get('quick') else 'full size'}, {state}).",
            f"Run on `{env.get('device_name', '?')}` ({env.get('device', '?')}, {env.get('threads', '?')} torch "
            f"threads, {env.get('cpu_count', '?')} CPUs), torch {env.get('torch', '?')}, commit "
            f"`{str(env.get('git_commit', '?'))[:10]}`, {env.get('date', '?')}.", ""]


def _figure(lines, rel: str, folder: Path, name: str, caption: str):
    if (folder / name).is_file():
        lines += [f"![{caption}]({rel}/{name})", ""]


def _targets(lines, targets):
    if not targets:
        return
    lines += ["| model | target | value | met |", "|---|---|---|---|"]
    for t in targets:
        ref = f" (Tikhonov: {t['reference']})" if "reference" in t else ""
        lines.append(f"| {t.get('model', '')} | {t['target']} | {t['value']}{ref} | {'yes' if t['met'] else '**MISSED**'} |")
    lines.append("")


def _grid_edges(tuning: dict) -> list[str]:
    """A warning for every weight whose validation optimum lies at an end of its grid (the best value may lie
    outside it, and the method may be under-tuned)."""
    out = []
    for key, weight in (("tikhonov_identity", "alpha"), ("tikhonov_gradient", "alpha"), ("tv", "lambda")):
        record = tuning.get(key, {})
        grid = [v for v, _ in record.get("validation_psnr", [])]
        if len(grid) > 1 and record.get(weight) in (grid[0], grid[-1]):
            widened = record.get("grid", {})  # records since the grids are widened (tune_weight)
            out.append(f"Note: {key.replace('_', ' ')} {weight} = {record[weight]:g} is at the "
                       f"{'lower' if record[weight] == grid[0] else 'upper'} end of its validation grid "
                       f"[{grid[0]:g}, {grid[-1]:g}]"
                       + (f", even after {widened['widenings']} widenings (the limit)"
                          if widened.get("limit_reached") else "")
                       + ": the method may be under-tuned here.")
    return out + [""] if out else out


def quality_section(payload, rel, folder) -> list[str]:
    lines = ["## Reconstruction quality", ""] + _provenance(payload)
    lines += ["PSNR (dB, data range 1) and SSIM against the truth, relative L2 error, mean ± standard deviation over "
              "the test set; reconstructions clipped to [0, 1]; weights tuned on the validation split. "
              "Bound: the Lipschitz bound of `y -> x` (certified for the stable models, the exact constant for "
              "Tikhonov, `inf` where there is none).", ""]
    for t in payload["tasks"]:
        lines += [f"### {t['task']} ({t['n_test']} test images, {t['n_validation']} validation images)", "",
                  "| method | PSNR | SSIM | rel. error | bound | bound kind | seconds |", "|---|---|---|---|---|---|---|"]
        if t.get("measured_at") and t["measured_at"] != (payload.get("environment") or {}).get("git_commit"):
            lines[-2:-2] = [f"Measured at commit `{str(t['measured_at'])[:10]}` by an earlier run of the same size "
                            "(kept by `--resume`).", ""]
        if t.get("earlier_tuning"):
            lines[-2:-2] = ["**The baselines of this task were tuned with the grids and solver budgets of the run "
                            "that measured them, not this code's** (recorded under `tuning`; a run without "
                            "`--models` measures them again).", ""]
        notes = []
        for r in t["rows"]:
            if r.get("missing"):
                lines.append(f"| {r['method']} | missing: {r['why']} | | | | | |")
                continue
            mark = ""
            if r.get("from") or (r.get("measured_at") and r["measured_at"] != t.get("measured_at")):
                mark = f" [{len(notes) + 1}]"
                notes.append(f"[{len(notes) + 1}] {r['method']}: measured at commit `{str(r.get('measured_at'))[:10]}`"
                             + (f", from {r['from']}" if r.get("from") else " by `--resume --models`")
                             + " on the same test images.")
            lines.append(f"| {r['method']}{mark} | {_f(r['psnr_mean'])} ± {_f(r['psnr_std'])} | {_f(r['ssim_mean'], 3)} | "
                         f"{_f(r['relative_error_mean'], 3)} | {_f(r.get('lipschitz_bound'))} | "
                         f"{r.get('bound_kind', '')} | {_f(r['seconds'], 1)} |")
        lines.append("")
        if notes:
            lines += [" ".join(notes), ""]
        for r in t["rows"]:
            if r.get("kind") == "peer" and r.get("steps") and r.get("train_seconds"):
                lines += [f"The deepinv peer was trained for {r['steps']} steps in {r['train_seconds']:.0f} s on "
                          f"{r.get('train_threads')} CPU thread(s) (`python -m benchmarks.peer --task {t['task']}`; "
                          f"best validation PSNR {r['validation_psnr']:.2f} dB).", ""]
        lines += _grid_edges(t.get("tuning", {}))
        for r in t["rows"]:  # iterative baselines: how far the solver got (PROTOCOLS.md, "Tuning and training")
            if r.get("relative_change_max") is not None:
                lines += [f"{r['method']}: {r['iterations']} iterations (cap {r.get('max_iter')}), final relative "
                          f"change {r['relative_change_max']:.2g} (tolerance {r.get('tol')}): "
                          + ("converged." if r.get("converged") else "**not converged**."), ""]
        _targets(lines, t.get("targets"))
    _figure(lines, rel, folder, "quality.png", "reconstructions side by side")
    return lines


def stability_section(payload, rel, folder) -> list[str]:
    s = payload["settings"]
    lines = ["## Stability to perturbations", ""] + _provenance(payload)
    size = (f"{s['images']} test images, eta in {{{', '.join(f'{100 * e:g}' for e in s['etas'])}}} % of ||y||, "
            f"{s['steps']} Adam steps x {s['restarts']} random starts per search")
    lines += [f"Settings: {size}. " + ("This is the protocol size." if s.get("protocol") else
              "**Below the protocol size** (20 images, 200 steps x 3 starts, eta in {0.5, 1, 2, 5} %): the "
              "adversarial figures are weaker lower bounds than the protocol's."), "",
              "PSNR under a random perturbation and under the adversarial search against the truth, at each eta; "
              "max ratio: the largest ||R(y + d) - R(y)|| / ||d|| over every perturbation tried (random and both "
              "searches); violations: ratios above a certified bound (must be 0).", ""]
    for t in payload["tasks"]:
        etas = [e["eta"] for e in t["methods"][0]["per_eta"]] if t["methods"] else []
        head = " | ".join(f"{100 * e:g} %: random / adv." for e in etas)
        lines += [f"### {t['task']} ({t['images']} images)", "",
                  f"| method | clean | {head} | max ratio | bound | violations | attack |",
                  "|---|---|" + "---|" * len(etas) + "---|---|---|---|"]
        for m in t["methods"]:
            cells = " | ".join(f"{_f(e['random_psnr']['mean'])} / {_f(e['adversarial_x_psnr']['mean'])}"
                               for e in m["per_eta"])
            lines.append(f"| {m['method']} | {_f(m['clean_psnr']['mean'])} | {cells} | {_f(m['empirical_lipschitz'], 3)} | "
                         f"{_f(m['lipschitz_bound'], 3)} ({m['bound_kind']}) | {_f(m['violations'], 0, 'n/a')} | "
                         f"{m.get('attack', '')} |")
        lines.append("")
        _stability_notes(lines, t)
        _targets(lines, t.get("targets"))
        _figure(lines, rel, folder, f"stability_{t['task']}.png",
                f"{t['task']}: worst perturbation, hallucination map and PSNR against eta per method")
    _figure(lines, rel, folder, "stability.png", "PSNR against eta; empirical ratios against bounds")
    _figure(lines, rel, folder, "stability_examples.png", "worst cases found")
    cost = _load(folder, "stability_cost")
    if cost is not None:
        lines += stability_cost_lines(cost)
    return lines


def stability_cost_lines(payload) -> list[str]:
    """What the stability protocol costs on the machine of ``stability_cost.json``, per method."""
    s = payload["settings"]
    commands = payload.get("earlier_commands", []) + [payload["command"]]
    lines = ["### What the protocol costs on this machine", "",
             "Commands: " + ", then ".join(f"`{c}`" for c in commands) + ".", _provenance(payload)[1], "",
             f"Seconds per step of each method's search at the protocol's batch ({s['images']} images x "
             f"{s['restarts']} starts; measured on fewer images, the batch given, and scaled linearly: a smaller "
             f"batch uses the CPU less well, so this errs high), and the hours of a protocol "
             f"run they imply ({len(s['etas'])} levels x 2 objectives x the steps of each start, from the "
             f"early-stopping minimum to the cap of {s['steps']}; the evaluations come on top).", ""]
    for t in payload["tasks"]:
        lines += [f"| {t['task']}: method | measured at batch | s per step | hours (min steps) | hours (cap) |",
                  "|---|---|---|---|---|"]
        for r in t["methods"]:
            lines.append(f"| {r['method']} | {r['measured_batch']} | {_f(r['seconds_per_step'], 2)} | "
                         f"{_f(r['protocol_hours_at_min_steps'], 2)} | {_f(r['protocol_hours_at_cap'], 2)} |")
        lines += [f"| **all** | | | **{_f(t['hours_at_min_steps'], 1)}** | **{_f(t['hours_at_cap'], 1)}** |", ""]
    return lines


def stability_task_figure(task: dict, pictures: dict, path: str | Path) -> Path:
    """The stability picture of one task: a row per method with the worst perturbation found against R(y) at the
    largest eta (first test image), the reconstructions of y and of y + d, the hallucination map |R(y + d) - R(y)|
    and PSNR against eta for the random perturbation and both adversarial searches.

    ``task`` is a task of ``stability.json`` (its ``methods`` rows); ``pictures`` maps a method to
    ``{"eta", "delta", "clean", "perturbed"}`` (arrays); methods without a picture are left out.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    rows = [m for m in task["methods"] if pictures.get(m["method"])]
    if not rows:
        raise ValueError(f"no method of {task.get('task')} has a picture to draw")
    fig, axes = plt.subplots(len(rows), 5, figsize=(13, 2.4 * len(rows)), squeeze=False)
    for ax, m in zip(axes, rows):
        pic = pictures[m["method"]]
        delta = np.asarray(pic["delta"])
        delta = delta.reshape(-1, delta.shape[-1]) if delta.ndim != 2 else delta
        change = np.abs(np.asarray(pic["perturbed"]) - np.asarray(pic["clean"]))
        lim = float(np.abs(delta).max()) or 1.0
        ax[0].imshow(delta, cmap="seismic", vmin=-lim, vmax=lim, aspect="auto")
        ax[0].set_ylabel(m["method"].replace(" (", "\n("), fontsize=7)
        ax[1].imshow(pic["clean"], cmap="gray", vmin=0, vmax=1)
        ax[2].imshow(pic["perturbed"], cmap="gray", vmin=0, vmax=1)
        im = ax[3].imshow(change, cmap="magma")
        fig.colorbar(im, ax=ax[3], fraction=0.046)
        titles = (f"perturbation d, ||d|| = {100 * pic['eta']:g} % ||y||", "R(y)", "R(y + d)", "|R(y + d) - R(y)|")
        for a, title in zip(ax[:4], titles):
            a.set_xticks([])
            a.set_yticks([])
            a.set_title(title, fontsize=7)
        etas = [100 * e["eta"] for e in m["per_eta"]]
        for key, style, label in (("random_psnr", "--o", "random"), ("adversarial_psnr", "-s", "adv. vs R(y)"),
                                  ("adversarial_x_psnr", "-^", "adv. vs x")):
            ax[4].plot(etas, [e[key]["mean"] for e in m["per_eta"]], style, label=label, markersize=3)
        ax[4].axhline(m["clean_psnr"]["mean"], color="gray", lw=0.8, label="clean")
        ax[4].set_xscale("log")
        ax[4].set_xlabel("eta (% of ||y||)", fontsize=7)
        ax[4].set_ylabel("PSNR (dB)", fontsize=7)
        ax[4].tick_params(labelsize=6)
        ax[4].legend(fontsize=5)
    fig.suptitle(f"{task['task']}: worst perturbation found against R(y) at the largest eta (first test image), "
                 "the change it causes, and PSNR against eta", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _stability_notes(lines, task):
    """The steps the early-stopped searches used, and TV's two estimates (direct and transfer)."""
    used = [(m["method"], e) for m in task["methods"] for e in m["per_eta"] if "steps_used" in e]
    if used:
        means = [s["mean"] for _, e in used for s in e["steps_used"].values()]
        cap = max(s["max"] for _, e in used for s in e["steps_used"].values())
        warm = sum(e.get("warm_started", False) for _, e in used)
        lines += [f"Adam steps actually used per start (early stopping once the best objective stops rising): mean "
                  f"{sum(means) / len(means):.0f} over the searches, at most {cap}; {warm} of {len(used)} "
                  "method-level searches warm-started from the previous eta.", ""]
    for m in task["methods"]:
        sources = [e.get("sources") for e in m["per_eta"] if e.get("sources")]
        if sources:
            cells = "; ".join(f"{100 * e['eta']:g} %: " + ", ".join(
                f"{src} {v['adversarial_x_psnr']:.2f}" for src, v in e["sources"].items())
                for e in m["per_eta"] if e.get("sources"))
            lines += [f"{m['method']}, adversarial PSNR against x by source (the table keeps the larger loss per "
                      f"image): {cells}.", ""]


def speed_section(payload, rel, folder) -> list[str]:
    lines = ["## Speed", ""] + _provenance(payload)
    lines += ["Ratios of medians timed interleaved in one run; absolute times only with the device they ran on.", ""]
    for run in payload["runs"]:
        dev = f"{run['device']} ({run['environment'].get('device_name', '?')}, {run['environment'].get('threads')} threads)"
        lines += [f"### Operators on {dev}", "", "| case | A: deepinv / invstable | A^T: deepinv / invstable |",
                  "|---|---|---|"]
        for c in run["operator"]["cases"]:
            lines.append(f"| {c.get('case', c.get('task'))} | {_f(c.get('speedup_A'), 1)} x | {_f(c.get('speedup_AT'), 1)} x |")
        lines.append("")
        for t in run["throughput"]:
            lines += [f"### Throughput, {t['task']}, batch {t['batch']}, {dev}", "", "| method | images / s |", "|---|---|"]
            for m in t["methods"]:
                lines.append(f"| {m['method']} | {'missing: ' + m['why'] if m.get('missing') else _f(m.get('images_per_s'), 1)} |")
            lines.append("")
        lines += [f"### Operator floor, {dev}", "", "| task | model | model / K x (A + A^T) | model / all its A, A^T calls |",
                  "|---|---|---|---|"]
        for t in run["operator_floor"]:
            for m in t["models"]:
                lines.append(f"| {t['task']} | {m['model']} | {_f(m['ratio_to_data_consistency_floor'], 1)} | "
                             f"{_f(m['ratio_to_all_calls_floor'], 2)} |")
        lines += ["", f"### Training-step cost of the constraints, {dev}", "",
                  "| task | family | constrained / unconstrained |", "|---|---|---|"]
        for t in run["training_overhead"]:
            for fam in t["families"]:
                value = fam.get("unavailable") or _f(fam.get("ratio"), 3)
                lines.append(f"| {t['task']} | {fam['family']} | {value} |")
        lines.append("")
    lines += ["### Targets", "", "| target | device | value | met |", "|---|---|---|---|"]
    for t in payload.get("targets", []):
        lines.append(f"| {t['target']} | {t.get('device', '')} | {_f(t['value'], 3)} | {'yes' if t['met'] else '**MISSED**'} |")
    lines.append("")
    _figure(lines, rel, folder, "speed.png", "speed")
    return lines


def universal_targets(payload: dict) -> list[dict]:
    """The targets of the universal-regulariser issue, checked against the measured values."""
    out = []
    for task, row in payload.get("protocol", {}).items():
        base = {b["method"]: b for b in row["baselines"]}
        tv = base.get("TV (validation lambda)", {}).get("psnr_mean")
        tik = max(b["psnr_mean"] for name, b in base.items() if name.startswith("Tikhonov") and "validation" in name)
        p = row["psnr_mean"]
        if tv is not None:
            out.append({"model": f"universal, {task}", "target": ">= TV (validation lambda)",
                        "value": round(p - tv, 3), "met": bool(p >= tv)})
        out.append({"model": f"universal, {task}", "target": ">= best Tikhonov + 1 dB", "value": round(p - tik, 3),
                    "met": bool(p >= tik + 1)})
        ratio = row["lipschitz_bound"] / row["tikhonov_exact_constant"]
        out.append({"model": f"universal, {task}", "target": "bound <= 2x Tikhonov's exact constant",
                    "value": round(ratio, 3), "met": bool(ratio <= 2 + 1e-9)})
    for task, st in payload.get("stability", {}).items():
        out.append({"model": f"universal, {task}", "target": "0 certificate violations (ratio <= L, strict)",
                    "value": st["violations_strict"], "met": st["violations_strict"] == 0})
    for task, sp in payload.get("speed", {}).items():
        out.append({"model": f"universal, {task}", "target": ">= 10x faster than TV at batch 8",
                    "value": round(sp["tv_over_universal"], 2), "met": bool(sp["tv_over_universal"] >= 10)})
    return out


def universal_section(payload, rel, folder) -> list[str]:
    lines = ["## The universal regulariser", ""] + _provenance(payload)
    lines += ["One convex ridge regulariser trained once as a denoiser on patches (docs/universal.md), used on every "
              "operator through `load_model(\"universal\", operator=op)`; lam, scale and m tuned on the first "
              "validation images with the certified bound held to at most twice Tikhonov's exact constant. The other "
              "rows are those of the quality run (same test split; the commit they were measured at is given).", ""]
    quality = {t["task"]: t for t in (_load(folder, "quality") or {}).get("tasks", [])}
    for task, row in payload.get("protocol", {}).items():
        others = row["baselines"]
        when = f"baselines measured at `{str(row.get('baselines_measured_at', '?'))[:10]}`"
        if task in quality:  # the quality run's rows as they stand now (a retrained peer included)
            others = [r for r in quality[task]["rows"] if r["method"] != "universal (task preset)"
                      and not r.get("missing")]
            when = "the other rows from the quality run above, where the commit of each is given"
        lines += [f"### {task} (test split, {row.get('n_test', '?')} images; {when})", "",
                  "| method | PSNR | SSIM | bound |", "|---|---|---|---|",
                  f"| **universal** (lam {row['lam']:.3g}, scale {row['scale']:.3g}, m {row['strong_convexity']:.3g}) | "
                  f"{_f(row['psnr_mean'])} ± {_f(row['psnr_std'])} | {_f(row['ssim_mean'], 3)} | "
                  f"{_f(row['lipschitz_bound'])} + {_f(row['additive'], 3)} (certified) |"]
        for b in others:
            lines.append(f"| {b['method']} | {_f(b['psnr_mean'])} ± {_f(b['psnr_std'])} | {_f(b['ssim_mean'], 3)} | "
                         f"{_f(b['lipschitz_bound'])} |")
        lines += ["", f"Solver: at most {row['iterations_max']} iterations per batch of 8 (mean "
                  f"{row['iterations_mean']:.0f}), largest certified distance to the exact minimiser "
                  f"{row['certified_distance_max']:.3g} (the additive term is twice the tolerance).", ""]
    if payload.get("speed"):
        lines += ["### Reconstruction time (batch 8, interleaved in one run)", "",
                  "| task | universal (s) | TV (s) | TV / universal | universal iterations |", "|---|---|---|---|---|"]
        for task, sp in payload["speed"].items():
            lines.append(f"| {task} | {_f(sp['universal'], 1)} | {_f(sp['TV'], 1)} | {_f(sp['tv_over_universal'])} | "
                         f"{sp['universal_iterations']} |")
        lines.append("")
    if payload.get("stability"):
        st0 = next(iter(payload["stability"].values()))["settings"]
        lines += ["### Stability (below the protocol size)", "",
                  f"{st0['images']} test images, eta in {st0['etas']}, {st0['steps']} Adam steps x {st0['restarts']} "
                  f"start(s) per search (the protocol asks for 20 images, 200 x 3); a two-point search for the largest "
                  f"ratio at radius {st0['pair_radius']} ||y||. Violations: strict (ratio above L) and with the "
                  "solver's additive term.", "",
                  "| task | clean | adv. PSNR at each eta (vs R(y) / vs x) | max ratio | L | additive | violations |",
                  "|---|---|---|---|---|---|---|"]
        for task, st in payload["stability"].items():
            adv = ", ".join(f"{r['eta']:g}: {r['adversarial_psnr']:.2f} / {r['adversarial_x_psnr']:.2f}"
                            for r in st["per_eta"])
            lines.append(f"| {task} | {_f(st['clean_psnr'])} | {adv} | {_f(st['empirical_lipschitz'], 3)} | "
                         f"{_f(st['lipschitz_bound'], 3)} | {_f(st['additive'], 3)} | "
                         f"{st['violations_strict']} strict, {st['violations_with_additive']} with the term |")
        lines.append("")
    if payload.get("unseen"):
        lines += ["### Operators it was never tuned for", "",
                  "Every method tuned on the same 8 validation images, scored on the same 16 test images "
                  "(PSNR dB / SSIM).", "",
                  "| operator | universal | TV | Tikhonov (identity) | Tikhonov (gradient) | universal bound |",
                  "|---|---|---|---|---|---|"]
        for name, entry in payload["unseen"].items():
            u, b = entry.get("universal"), entry.get("baselines", {})
            cell = lambda r: "-" if r is None else f"{_f(r['psnr_mean'])} / {_f(r['ssim_mean'], 3)}"  # noqa: E731
            lines.append(f"| {entry['what'].replace('|', '&#124;')} | {cell(u)} | {cell(b.get('TV'))} | {cell(b.get('Tikhonov (identity)'))} "
                         f"| {cell(b.get('Tikhonov (gradient)'))} | {_f(u['lipschitz_bound']) if u else '-'} |")
        lines.append("")
    _targets(lines, universal_targets(payload))
    _figure(lines, rel, folder, "universal_training.png", "learning curve of the universal regulariser")
    _figure(lines, rel, folder, "universal_filters.png", "learned filters and activations")
    return lines


def certified_section(folder: Path, rel: str) -> list[str]:
    """Issue 12's certified models: the model recommended per task, the short-trial ablation, the learning curves."""
    lines = ["## Certified models: recommendation, ablation, learning curves", ""]
    rec = recommended()
    if rec:
        lines += ["`invstable.load_model(task=...)` returns the certified model with the highest mean PSNR on the "
                  "first validation images of the task (`python scripts/select_models.py`; never test images):", "",
                  "| task | recommended | candidate | validation PSNR | certified bound |", "|---|---|---|---|---|"]
        for task, choice in rec.items():
            for name, row in sorted(choice["candidates"].items(), key=lambda kv: -kv[1]["validation_psnr"]):
                lines.append(f"| {task} ({choice['validation_count']} images) | {'**yes**' if name == choice['name'] else ''} "
                             f"| {name} | {_f(row['validation_psnr'])} | {_f(row['lipschitz_bound'])} |")
        lines.append("")
    for path in sorted(folder.glob("ablation-*.json")):
        payload = json.loads(path.read_text())
        lines += [f"### Ablation on {payload['task']} (short trials)", ""] + _provenance(payload)
        lines += ["Each variant changes one thing against the reference and is trained with the same seed, batches, "
                  "schedule and step count; validation PSNR (best of the curve) on the first "
                  f"{payload.get('validation', '?')} validation images. A short trial ranks designs; it does not "
                  "say where a long run ends.", "",
                  "| variant | what it changes | steps | validation PSNR | bound | weights | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for r in payload["rows"]:
            lines.append(f"| {r['variant']} | {r['what']} | {r['steps']} | {_f(r['validation_psnr'])} | "
                         f"{_f(r['lipschitz_bound'])} | {r['parameters']} | {_f(r['seconds'], 0)} |")
        lines.append("")
    curves = [(path, json.loads(path.read_text())) for path in sorted(folder.glob("training-*.json"))]
    wide = [(path, r) for path, r in curves if "schedule_steps" in r]  # scripts/train_certified.py
    if wide:
        lines += ["### Learning curves of the wide models", "",
                  "Validation PSNR against steps and seconds (`scripts/train_certified.py`; the checkpoint in "
                  "`checkpoints/NAME/` continues the schedule with `--resume`).", "",
                  "| model | task | steps run / schedule | best validation PSNR (step) | bound | budget (2x Tikhonov) | "
                  "weights | seconds (device, threads) |", "|---|---|---|---|---|---|---|---|"]
        for path, r in wide:
            name = path.stem[len("training-"):]
            best = max(r["curve"], key=lambda c: c["validation_psnr"]) if r["curve"] else {}
            lines.append(f"| {name} | {r['task']} | {r['steps']} / {r['schedule_steps']} | "
                         f"{_f(best.get('validation_psnr'))} ({best.get('step', '-')}) | {_f(r['lipschitz_bound'])} | "
                         f"{_f(2 * r['tikhonov_constant'])} | {r['parameters']} | "
                         f"{_f(r['curve'][-1]['seconds'] if r['curve'] else None, 0)} ({r['device']}, {r['threads']}) |")
        lines.append("")
        for path, _ in wide:
            _figure(lines, rel, folder, path.with_suffix(".png").name, f"learning curve of {path.stem[9:]}")
    other = [(path, r) for path, r in curves if "schedule_steps" not in r and r.get("curve")]
    if other:
        lines += ["### Other learning curves: the deepinv peers and the fine-tuned regulariser", "",
                  "`peer-TASK` is the shipped peer; `peer-TASK-dDfF` is a sizing trial (a DnCNN of depth D with F "
                  "features, trained for about the shipped peer's compute). The peer shipped, and used by every benchmark, "
                  "is the better of them on validation.", "",
                  "| curve | what | steps | best validation PSNR (step) | seconds (device, threads) |",
                  "|---|---|---|---|---|"]
        for path, r in other:
            best = max(r["curve"], key=lambda c: c["validation_psnr"])
            lines.append(f"| {path.stem[len('training-'):]} | {r['what']} | {r['curve'][-1]['step']} | "
                         f"{_f(best['validation_psnr'])} ({best['step']}) | "
                         f"{_f(r['curve'][-1]['seconds'], 0)} ({r.get('device')}, {r.get('threads')}) |")
        lines.append("")
        for path, _ in other:
            _figure(lines, rel, folder, path.with_suffix(".png").name, f"learning curve of {path.stem[9:]}")
    return lines


def render(folder: str | Path, out: str | Path | None = None, *, source: str | None = None) -> Path:
    """Write the page of the JSON results in ``folder`` to ``out`` (default ``folder/benchmarks.md``) atomically.

    ``source`` is how the page names ``folder`` (default: its path relative to the page's folder); the figures
    are linked relative to the page.
    """
    folder = results_folder(folder)
    out = Path(out) if out is not None else folder / "benchmarks.md"
    rel = os.path.relpath(folder, out.parent)
    lines = ["# Benchmarks", "",
             "Generated by `python -m benchmarks.report` (or `invstable benchmark`) from the JSON in "
             f"`{source or rel}` (do not edit by hand). "
             "`invstable benchmark --results-dir DIR` runs everything and writes this page; with `--quick` it does "
             "it at a small size in a few minutes. Protocols: `../shared/PROTOCOLS.md`.", "",
             "Your own reconstructor (any callable `y -> x`) is scored on the same test images with "
             "`invstable.evaluate`; `stability=True` adds the perturbation study and checks its "
             "`lipschitz_bound()` when it has one:", "",
             "```python", "import invstable", "",
             "op = invstable.data.task(\"blur-g2\").operator",
             "result = invstable.evaluate(lambda y: invstable.tikhonov(y, op, 0.01), task=\"blur-g2\", count=4)",
             "print(f\"PSNR {result['psnr_mean']:.2f} dB, SSIM {result['ssim_mean']:.3f}\")", "```", ""]
    sections = (("quality", quality_section), ("stability", stability_section), ("speed", speed_section),
                ("universal", universal_section))
    for name, section in sections:
        payload = _load(folder, name)
        if payload is None:
            how = "python -m benchmarks.universal` in the source checkout" if name == "universal" else \
                f"invstable benchmark --only {name}`"
            lines += [f"## {name.capitalize()}", "", f"No `{name}.json` yet: run `{how}.", ""]
        else:
            lines += section(payload, rel, folder)
    lines += certified_section(folder, rel)
    atomic_write(out, lambda tmp: Path(tmp).write_text("\n".join(lines)))
    return out
