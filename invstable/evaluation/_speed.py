"""Speed (PROTOCOLS.md, "Speed"): operators, reconstruction throughput, operator floor, cost of the constraints.

Every figure is a ratio of timings taken side by side, interleaved, in one run
(:func:`time_interleaved`); absolute times are written only next to the device they ran
on (the ``environment`` record of each run). CPU always (``--threads``, protocol: 2), and the GPU when there
is one and ``--device auto`` (or ``cuda``) asks for it, recorded with its name. Sections of ``speed.json``,
one set per device run:

- ``operator``: ``A`` and ``A^T`` per batch of 8 against deepinv's ``Tomography`` with the same geometry on
  CT-30 and CT-180 (128 x 128) and CT-30 at 256 x 256, and the circular blur of Blur-G2 against deepinv's
  ``Blur`` (:func:`ct_case` and :func:`blur_case`);
- ``throughput``: images/s of every method of the benchmarks (baselines with weights tuned on
  the validation split, the shipped models, the deepinv peer) on one batch of test measurements, batch 8
  on the CPU and 64 on the GPU; TV (hundreds of FISTA iterations) is timed in a loop of its own with fewer
  repeats;
- ``operator_floor``: each shipped model against the data-consistency work alone, ``K x (A + A^T)``, and
  against all the operator applications of one reconstruction (the Chebyshev first guess included),
  counted while the model runs, timed interleaved with the model on the same batch;
- ``training_overhead``: a training step (forward, backward, Adam) of an ``UnrolledInverse`` of each stable
  family over the same architecture built with ``constrained=False`` (the same layers and weights without
  the spectral-norm enforcement), batch 8; target (issue 6) <= 1.15.

Run it with ``invstable benchmark --only speed`` or, in the source checkout, ``python -m benchmarks.speed``.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from pathlib import Path

import torch

from ..data import task as get_task
from .._warnings import ConvergenceWarning
from ..models import UnrolledInverse
from ._methods import baselines, learned, pairs, peer
from ._operators import BATCH as OPERATOR_BATCH
from ._operators import blur_case, ct_case
from ._peer import RECIPE as PEER_TASKS
from ._record import environment, results_folder, time_interleaved, train_step_fn, write_result

TASKS = ("ct-30", "blur-g2", "ct-180")
#: the stable families of UnrolledInverse whose constraints are timed ("unconstrained" is another architecture)
STABLE_FAMILIES = ("gradient_flow", "hamiltonian", "antisymmetric", "dense")
#: throughput batch per device type (PROTOCOLS.md)
BATCH = {"cpu": 8, "cuda": 64}
TRAIN_BATCH = 8
OPERATOR_TARGET = 20.0
OVERHEAD_TARGET = 1.15
OPERATOR_TARGET_TEXT = "ParallelBeamCT A and A^T >= 20x faster than deepinv Tomography (CT-30 and CT-180, batch 8)"
OVERHEAD_TARGET_TEXT = "constraint training overhead <= 1.15x"
PEER_NAME = "deepinv unrolled PGD + DnCNN"


#: the sizes of a full run and of a quick one (a smoke run: one repeat, the baselines' weights not tuned but the
#: middle of their grids, one-step models, the 128 x 128 operator cases only); ``train_iterations`` None: the
#: shipped models' K
SIZES = {
    False: {"operator_repeats": 20, "repeats": 10, "warmup": 2, "separate_repeats": 3, "separate_warmup": 1,
            "n_validation": 32, "train_iterations": None, "large_operator": True},
    True: {"operator_repeats": 1, "repeats": 1, "warmup": 0, "separate_repeats": 1, "separate_warmup": 0,
           "n_validation": 0, "train_iterations": 1, "large_operator": False},
}


def _sizes(quick: bool) -> dict:
    return dict(SIZES[bool(quick)])


def _times(t: dict) -> dict:
    return {k: t[k] for k in ("median_s", "q1_s", "q3_s", "repeats")}


def _jsonable(extra: dict) -> dict:
    return {k: v for k, v in extra.items() if isinstance(v, (bool, int, float, str)) or v is None}


@contextlib.contextmanager
def _quiet_cg():
    """Tikhonov's CG (and any iterative solver) warns when it stops at ``max_iter``; the timings include those
    iterations either way."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# ---------------------------------------------------------------------------------------------- operator
def operator_section(device: torch.device, *, repeats: int, large: bool = True) -> dict:
    """``A`` and ``A^T`` per batch of 8 against deepinv, as speed-ups (deepinv time / invstable time); ``large``
    adds CT-30 at 256 x 256."""
    cases = []
    for label, case in (
        ("CT-30 (128 x 128)", lambda: ct_case(30, device, repeats)),
        ("CT-180 (128 x 128)", lambda: ct_case(180, device, repeats)),
        ("CT-30 (256 x 256)", (lambda: ct_case(30, device, repeats, size=256)) if large else None),
        ("Blur-G2 (128 x 128)", lambda: blur_case(device, repeats)),
    ):
        if case is not None:
            cases.append({"case": label, **case()})
    return {"batch": OPERATOR_BATCH, "repeats": repeats,
            "speedup": "deepinv median time / invstable median time (> 1: invstable faster)", "cases": cases}


# ---------------------------------------------------------------------------------------------- methods
def _on_device(name: str, methods: list, device: torch.device) -> tuple[list, list[dict]]:
    """``(name, kind, reconstruct, method)`` for each method on ``device``, and rows for those not available."""
    if device.type == "cpu":
        return [(m.name, m.kind, m.reconstruct, m) for m in methods], []
    op = get_task(name).operator.to(device)
    out, missing = [], []
    for m in methods:
        if m.module is not None:
            fn = copy.deepcopy(m.module).to(device).eval()
        else:
            fn = None if m.rebuild is None else m.rebuild(op)
        if fn is None:
            missing.append({"method": m.name, "kind": m.kind, "missing": True,
                            "why": f"this baseline has no rebuild for another operator ({device.type})"})
        else:
            out.append((m.name, m.kind, fn, m))
    return out, missing


def _probe(entries: list, y: torch.Tensor, device: torch.device) -> tuple[list, list[dict]]:
    """One call of each method (the first call on a new device builds caches); failures become rows."""
    kept, failed = [], []
    for entry in entries:
        try:
            entry[2](y)
        except Exception as error:  # noqa: BLE001 (recorded in the JSON with its message)
            failed.append({"method": entry[0], "kind": entry[1], "missing": True,
                           "why": f"failed on {device}: {type(error).__name__}: {error}"})
        else:
            kept.append(entry)
    return kept, failed


def _separate(method_name: str) -> bool:
    """Methods timed in a loop of their own, with fewer repeats: TV (hundreds of FISTA iterations)."""
    return method_name.startswith("TV")


def throughput_section(name: str, methods: list, tuning: dict, device: torch.device, *,
                       sizes: dict) -> tuple[dict, list, torch.Tensor]:
    """Images/s of every method on one batch of test measurements; returns the section, the device methods and
    the batch."""
    batch = BATCH.get(device.type, BATCH["cpu"])
    _, y, _ = pairs(get_task(name).pairs("test"), batch)
    y = y.to(device)
    entries, rows = _on_device(name, methods, device)
    with torch.no_grad(), _quiet_cg():
        if device.type != "cpu":
            entries, failed = _probe(entries, y, device)
            rows += failed
        together = {e[0]: (lambda fn=e[2]: fn(y)) for e in entries if not _separate(e[0])}
        apart = {e[0]: (lambda fn=e[2]: fn(y)) for e in entries if _separate(e[0])}
        timings = time_interleaved(together, repeats=sizes["repeats"], warmup=sizes["warmup"], device=device)
        if apart:
            timings.update(time_interleaved(apart, repeats=sizes["separate_repeats"],
                                            warmup=sizes["separate_warmup"], device=device))
    for method_name, kind, _, m in entries:
        t = timings[method_name]
        rows.append({"method": method_name, "kind": kind, "images_per_s": len(y) / t["median_s"], **_times(t),
                     "timed": "separately, fewer repeats" if method_name in apart else "interleaved with the others",
                     **_jsonable(m.extra)})
    if name in PEER_TASKS and not any(m.kind == "peer" for m in methods):
        rows.append({"method": PEER_NAME, "kind": "peer", "missing": True,
                     "why": f"no trained weights; run `python -m benchmarks.peer --task {name}`"})
    section = {
        "task": name, "batch": int(len(y)), "measurement_shape": list(y.shape),
        "repeats": sizes["repeats"], "warmup": sizes["warmup"],
        "separately_timed": {"methods": sorted(apart), "repeats": sizes["separate_repeats"],
                             "warmup": sizes["separate_warmup"],
                             "why": "hundreds of iterations per call; timed in a loop of their own after the others, "
                                    "so their images/s is not interleaved with the rest"},
        "tuning": {k: ({kk: vv for kk, vv in v.items() if kk != "validation_psnr"} if isinstance(v, dict) else v)
                   for k, v in tuning.items()},
        "methods": rows,
    }
    return section, entries, y


# ---------------------------------------------------------------------------------------------- floor
@contextlib.contextmanager
def _count_calls(op):
    """Count the calls of ``op.A`` and ``op.A_adjoint`` made inside the block (instance attributes shadow the
    methods for its duration)."""
    counts = {"A": 0, "A_adjoint": 0}
    saved = {name: vars(op).get(name) for name in counts}

    def counted(name, method):
        def call(*args, **kwargs):
            counts[name] += 1
            return method(*args, **kwargs)
        return call

    for name in counts:
        setattr(op, name, counted(name, getattr(op, name)))
    try:
        yield counts
    finally:
        for name, previous in saved.items():
            if previous is None:
                delattr(op, name)
            else:
                setattr(op, name, previous)


def _operator_work(op, y: torch.Tensor, n_a: int, n_at: int):
    """A callable applying ``A`` ``n_a`` times and ``A^T`` ``n_at`` times on the batch (as ``A^T A`` pairs)."""
    x = op.A_adjoint(y)
    both = min(n_a, n_at)

    def run():
        u = x
        for _ in range(both):
            u = op.A_adjoint(op.A(u))
        for _ in range(n_a - both):
            op.A(x)
        for _ in range(n_at - both):
            op.A_adjoint(y)
    return run


def floor_section(name: str, entries: list, y: torch.Tensor, device: torch.device, *, sizes: dict) -> dict:
    """Each shipped model against ``K x (A + A^T)`` and against all the operator calls of one reconstruction."""
    rows = []
    for method_name, kind, model, _ in entries:
        if kind != "learned" or not isinstance(model, UnrolledInverse):
            continue
        op, k = model.operator, model.iterations
        with torch.no_grad():
            with _count_calls(op) as counts:
                model(y)
            calls = dict(counts)
            fns = {"model": lambda: model(y),
                   "floor_data_consistency": _operator_work(op, y, k, k),
                   "floor_all_calls": _operator_work(op, y, calls["A"], calls["A_adjoint"])}
            t = time_interleaved(fns, repeats=sizes["repeats"], warmup=sizes["warmup"], device=device)
        model_s = t["model"]["median_s"]
        rows.append({
            "model": method_name, "family": model.family, "iterations": k, "init": model.init,
            "init_degree": model.init_degree, "operator_calls_per_reconstruction": calls,
            "model_s": model_s,
            "floor_data_consistency_s": t["floor_data_consistency"]["median_s"],
            "floor_all_calls_s": t["floor_all_calls"]["median_s"],
            "ratio_to_data_consistency_floor": model_s / t["floor_data_consistency"]["median_s"],
            "ratio_to_all_calls_floor": model_s / t["floor_all_calls"]["median_s"],
            "timings": {n: _times(v) for n, v in t.items()},
        })
    return {
        "task": name, "batch": int(len(y)), "repeats": sizes["repeats"],
        "floors": {
            "data_consistency": "K x (A + A^T): the data-consistency steps alone",
            "all_calls": "every A and A^T call of one reconstruction, counted while the model runs: the K steps, "
                         "the Chebyshev first guess p(A^T A) A^T y (init_degree + 1 applications of A^T A by "
                         "Clenshaw's recurrence) and the A^T y terms",
        },
        "models": rows,
    }


# ---------------------------------------------------------------------------------------------- training
def _same_architecture(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Same parameter names, shapes and values (checked before any training step)."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(pa[k].shape == pb[k].shape and torch.equal(pa[k], pb[k]) for k in pa)


def training_section(name: str, device: torch.device, *, iterations: int, sizes: dict) -> dict:
    """Training-step time of each stable family over the same model with ``constrained=False``."""
    spec = get_task(name)
    x, y, _ = pairs(spec.pairs("train"), TRAIN_BATCH)
    x, y = x.to(device), y.to(device)
    op = spec.operator
    arch = {"iterations": iterations, "channels": 8, "depth": 2}
    rows = []
    for family in STABLE_FAMILIES:
        try:
            on = UnrolledInverse(op, family=family, **arch).to(device)
            off = UnrolledInverse(op, family=family, constrained=False, **arch).to(device)
        except (TypeError, ValueError) as error:
            rows.append({"family": family, "unavailable": True,
                         "why": f"UnrolledInverse cannot build this family with constrained=False: {error}"})
            continue
        layers_off = [m.constrained for m in off.modules() if hasattr(m, "constrained")]
        if not layers_off or any(layers_off):
            rows.append({"family": family, "unavailable": True,
                         "why": "constrained=False did not switch the constraint off in every layer"})
            continue
        same = _same_architecture(on, off)
        t = time_interleaved({"constrained": train_step_fn(on, y, x), "unconstrained": train_step_fn(off, y, x)},
                             repeats=sizes["repeats"], warmup=sizes["warmup"], device=device)
        ratio = t["constrained"]["median_s"] / t["unconstrained"]["median_s"]
        rows.append({"family": family, "ratio": ratio, "target": OVERHEAD_TARGET, "met": bool(ratio <= OVERHEAD_TARGET),
                     "same_parameters_and_initial_weights": same,
                     "constrained": _times(t["constrained"]), "unconstrained": _times(t["unconstrained"])})
    return {
        "task": name, "batch": TRAIN_BATCH, **arch, "repeats": sizes["repeats"], "warmup": sizes["warmup"],
        "step": "forward, MSE loss, backward, Adam update (training mode: one power iteration per constrained "
                "layer per step)",
        "baseline": "the same UnrolledInverse (same layers, same seed and initial weights) with constrained=False; "
                    "not the 'unconstrained' family, which is a different (ResNet) architecture",
        "families": rows,
    }


# ---------------------------------------------------------------------------------------------- run
def _devices(device: str) -> list[torch.device]:
    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but torch.cuda.is_available() is False; use device='cpu' or 'auto'")
    gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return [torch.device("cpu")] + ([torch.device("cuda")] if gpu else [])


def _targets(runs: list[dict]) -> list[dict]:
    cpu = next(r for r in runs if r["device"] == "cpu")
    ct = [c for c in cpu["operator"]["cases"] if c["case"] in ("CT-30 (128 x 128)", "CT-180 (128 x 128)")]
    speedup = min(min(c["speedup_A"], c["speedup_AT"]) for c in ct)
    ratios = [f["ratio"] for s in cpu["training_overhead"] for f in s["families"] if "ratio" in f]
    worst = max(ratios) if ratios else None
    return [
        {"target": OPERATOR_TARGET_TEXT, "device": "cpu", "value": speedup,
         "value_is": "smallest speed-up over A and A^T on CT-30 and CT-180", "met": bool(speedup >= OPERATOR_TARGET)},
        {"target": OVERHEAD_TARGET_TEXT, "device": "cpu", "value": worst,
         "value_is": "largest constrained / unconstrained training-step ratio over families and tasks",
         "met": None if worst is None else bool(worst <= OVERHEAD_TARGET)},
    ]


def run(*, quick: bool, results_dir: str | Path, tasks=None, device: str = "cpu", threads: int = 2, log=print,
        sizes: dict | None = None, reference_dir: str | Path | None = None, command: str | None = None) -> dict:
    """Run the speed benchmark; write ``results_dir/speed.json`` (after each device run) and ``speed.png``; return
    the payload.

    ``device``: "cpu", "cuda" (the CPU run too) or "auto" (the GPU as well when there is one). ``sizes``
    overrides entries of :data:`SIZES`. ``reference_dir``: earlier results to reuse (the quality run's tuning,
    the deepinv peer's weights). ``command``: the command line recorded in the JSON.
    """
    tasks = tuple(tasks) if tasks is not None else ("ct-30", "blur-g2")
    for name in tasks:
        get_task(name)  # raises with the valid names
    devices = _devices(device)
    unknown = sorted(set(sizes or {}) - set(SIZES[False]))
    if unknown:
        raise TypeError(f"unknown speed sizes {unknown}; the sizes are {sorted(SIZES[False])}")
    sizes = {**_sizes(quick), **(sizes or {})}
    folder = results_folder(results_dir)
    command = command or ("python -m benchmarks.speed" + (" --quick" if quick else "") + f" --device {device}"
               + f" --threads {threads} --tasks " + " ".join(tasks))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        payload = {"benchmark": "speed", "protocol": "PROTOCOLS.md, Speed", "command": command, "quick": quick,
                   "complete": False, "sizes": sizes, "environment": environment("cpu"), "runs": [], "targets": []}
        prepared = {}
        for name in tasks:  # weights tuned once on the CPU, reused on every device
            start = time.perf_counter()
            with _quiet_cg():
                methods, tuning = baselines(name, n_val=sizes["n_validation"], quick=quick, exact_bounds=False,
                                            reference_dir=reference_dir)
            methods += learned(name) + peer(name, reference_dir)
            prepared[name] = (methods, tuning)
            log(f"speed: {name}: {len(methods)} methods, weights tuned in {time.perf_counter() - start:.0f} s")
        for dev in devices:
            record = {"device": dev.type, "environment": environment(dev), "operator": None, "throughput": [],
                      "operator_floor": [], "training_overhead": []}
            payload["runs"].append(record)
            record["operator"] = operator_section(dev, repeats=sizes["operator_repeats"],
                                                  large=sizes.get("large_operator", True))
            for c in record["operator"]["cases"]:
                log(f"speed: {dev.type} operator {c['case']:<20} A {c['speedup_A']:6.1f}x  "
                    f"A^T {c['speedup_AT']:6.1f}x faster than deepinv")
            for name in tasks:
                methods, tuning = prepared[name]
                section, entries, y = throughput_section(name, methods, tuning, dev, sizes=sizes)
                record["throughput"].append(section)
                for r in section["methods"]:
                    shown = "MISSING: " + r["why"] if r.get("missing") else f"{r['images_per_s']:9.2f} images/s"
                    log(f"speed: {dev.type} {name} {r['method']:<40} {shown}")
                floor = floor_section(name, entries, y, dev, sizes=sizes)
                record["operator_floor"].append(floor)
                for r in floor["models"]:
                    log(f"speed: {dev.type} {name} {r['model']:<20} model / K(A + A^T) "
                        f"{r['ratio_to_data_consistency_floor']:5.2f}, model / all operator calls "
                        f"{r['ratio_to_all_calls_floor']:5.2f}")
                k = sizes["train_iterations"] or next(
                    (m.module.iterations for m in methods if m.kind == "learned"), 6)
                overhead = training_section(name, dev, iterations=k, sizes=sizes)
                record["training_overhead"].append(overhead)
                for r in overhead["families"]:
                    shown = ("UNAVAILABLE: " + r["why"]) if r.get("unavailable") else f"ratio {r['ratio']:.3f}"
                    log(f"speed: {dev.type} {name} training step {r['family']:<14} {shown}")
            if dev.type == "cpu":
                payload["targets"] = _targets(payload["runs"])
            payload["complete"] = dev == devices[-1]
            path = write_result("speed", payload, results_dir=folder)
        _figure(payload["runs"], folder / "speed.png")
    finally:
        torch.set_num_threads(previous_threads)
    for t in payload["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        log(f"speed: target {'MET   ' if t['met'] else 'MISSED'} {t['target']} ({value})")
    log(f"speed: results written to {path} and {folder / 'speed.png'}")
    return payload


# ---------------------------------------------------------------------------------------------- figure
def _figure(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 3, figsize=(17, 5.5 * len(runs)), squeeze=False)
    for row, r in zip(axes, runs):
        where = f"{r['device']} ({r['environment']['device_name']}, {r['environment']['threads']} threads)"
        ax = row[0]
        cases = r["operator"]["cases"]
        pos = range(len(cases))
        ax.barh([p - 0.2 for p in pos], [c["speedup_A"] for c in cases], 0.4, label="A")
        ax.barh([p + 0.2 for p in pos], [c["speedup_AT"] for c in cases], 0.4, label="A^T")
        ax.set_yticks(list(pos), [c["case"] for c in cases], fontsize=8)
        ax.set_xscale("log")
        ax.axvline(OPERATOR_TARGET, color="tab:red", ls="--", label=f"target {OPERATOR_TARGET:g}x (CT)")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.invert_yaxis()
        ax.set_xlabel("speed-up over deepinv (batch 8)")
        ax.set_title(f"operators, {where}", fontsize=9)
        ax.legend(fontsize=7)

        ax = row[1]
        colors = {"baseline": "tab:gray", "learned": "tab:blue", "peer": "tab:orange"}
        bars = [(f"{s['task']}: {m['method']}", m["images_per_s"], colors.get(m["kind"], "k"))
                for s in r["throughput"] for m in s["methods"] if not m.get("missing")]
        if bars:
            ax.barh(range(len(bars)), [b[1] for b in bars], color=[b[2] for b in bars])
            ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
            ax.set_xscale("log")
            ax.invert_yaxis()
        batch = r["throughput"][0]["batch"] if r["throughput"] else "-"
        missing = sorted({f"{s['task']}: {m['method']}" for s in r["throughput"] for m in s["methods"]
                          if m.get("missing")})
        ax.set_xlabel(f"reconstructions per second (batch {batch}, log scale)")
        ax.set_title("throughput (gray: baselines, blue: shipped models, orange: peer)"
                     + ("\nmissing: " + "; ".join(missing) if missing else ""), fontsize=8)

        ax = row[2]
        bars = [(f"{s['task']}: {f['family']}", f["ratio"]) for s in r["training_overhead"]
                for f in s["families"] if "ratio" in f]
        if bars:
            ax.barh(range(len(bars)), [b[1] for b in bars], color="tab:blue")
            ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
            ax.set_xlim(min(0.9, min(b[1] for b in bars) - 0.05), max(1.3, max(b[1] for b in bars) + 0.05))
            ax.invert_yaxis()
        ax.axvline(OVERHEAD_TARGET, color="tab:red", ls="--", label=f"target {OVERHEAD_TARGET:g}")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel("training-step time, constrained / constrained=False")
        ax.set_title("cost of the constraints (UnrolledInverse, batch 8)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
