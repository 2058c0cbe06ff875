"""The universal convex ridge regulariser on every task and on operators it was never tuned for.

Protocol tasks (PROTOCOLS.md: CT-30, CT-180, Blur-G2): ``load_model("universal", operator=task.operator)`` tuned
on the first validation images (lam, scale, m; no weight training) with the certified bound held to at most twice
Tikhonov's exact constant at its validation alpha, then scored on the whole test split; the baselines' rows are
those of ``benchmarks/results/quality.json`` (same test split, weights tuned on validation; the commit they were
measured at is recorded). Timing: the universal and TV, batch 8, interleaved in this run.

Unseen operators (never used in training nor in the shipped presets): inpainting with a random 50 % mask and a
Gaussian blur of width 3 on the Blur-G2 images, CT with 60 angles on the CT phantoms. The universal, TV and
Tikhonov (identity, gradient) are all tuned on the same validation images and scored on the same test images.

Results: ``benchmarks/results/universal.json``. Parts are kept between runs (``--resume``) so that the costly TV
tuning on the unseen operators runs once.

Usage: python -m benchmarks.universal [--parts unseen-baselines unseen protocol speed] [--resume] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import numpy as np
import torch

from benchmarks._common import RESULTS, environment, write_result
from invstable.evaluation import ALPHAS, LAMBDAS, pairs, psnr, scores, tune
from invstable import load_model, tikhonov, tv
from invstable.data import task as get_task
from invstable.operators import Blur, ParallelBeamCT, gaussian_kernel

PARTS = ("unseen-baselines", "unseen", "protocol", "speed", "stability", "figure")
#: the stability search run here (below the protocol's 20 images, 200 steps x 3 starts: recorded as such)
STABILITY = {"images": 2, "etas": [0.01, 0.05], "steps": 10, "restarts": 1, "pair_radius": 1e-3}
PROTOCOL_TASKS = ("ct-30", "blur-g2", "ct-180")
#: validation images used to tune the universal (TV is tuned on the same number in benchmarks/_methods.py)
N_VALIDATION = 8
UNSEEN_TEST = 16
TV_ITER = 300
#: the solver tolerance of every universal solve here (a certified RMS distance of 1e-2 per pixel to the exact
#: minimiser; the additive term of the certificate is twice it) and the tuning budget, sized to this CPU
TOL = 1e-2
MAX_EVALUATIONS = 16
#: the grey level the strong convexity pulls towards: 0 for CT (the phantoms' background), the mean of the
#: validation images for natural images
REFERENCE = {"ct": 0.0, "blur": "mean"}


def _reference(task_name: str):
    return REFERENCE["ct" if task_name.startswith("ct") else "blur"]


def _inpainting():
    from deepinv.physics import Inpainting

    return Inpainting(img_size=(1, 128, 128), mask=0.5, rng=torch.Generator().manual_seed(0))


UNSEEN = {
    "inpainting-50": {"images": "blur-g2", "build": _inpainting, "noise": 0.01,
                      "what": "inpainting, random 50 % of the pixels kept (deepinv Inpainting), noise std 0.01"},
    "blur-g3": {"images": "blur-g2", "build": lambda: Blur(gaussian_kernel(3.0), 128), "noise": 0.01,
                "what": "Gaussian blur sigma 3 px (circular), noise std 0.01"},
    "ct-60": {"images": "ct-30", "build": lambda: ParallelBeamCT(128, 60), "noise": "relative 0.05",
              "what": "parallel-beam CT, 60 angles, noise std 5 % of mean |A x|"},
}


def _measure(op, x, noise, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clean = op.A(x)
        if isinstance(noise, str):
            level = float(noise.split()[1]) * clean.flatten(1).abs().mean(dim=1).view(-1, *([1] * (clean.ndim - 1)))
        else:
            level = noise
        return clean + level * torch.randn(clean.shape, generator=gen)


def _case_data(name):
    case = UNSEEN[name]
    spec = get_task(case["images"])
    op = case["build"]()
    xv, _, _ = pairs(spec.pairs("validation"), N_VALIDATION)
    xt, _, _ = pairs(spec.pairs("test"), UNSEEN_TEST)
    return op, xv, _measure(op, xv, case["noise"], 1), xt, _measure(op, xt, case["noise"], 2018)


def _score(x_hat, x):
    s = scores(x_hat, x)
    return {f"{k}_mean": float(v.mean()) for k, v in s.items()} | {"psnr_std": float(s["psnr"].std())}


def _widened(values, run, x_val, *, widen=3):
    """:func:`tune` on a log grid, widened (by the grid's own ratio) while the best value sits at an end."""
    values = [float(v) for v in values]
    ratio = values[1] / values[0]
    best, curve = tune(values, run, x_val)
    for _ in range(widen):
        if best == values[0]:
            values = [values[0] / ratio] + values
            extra, more = tune(values[:1], run, x_val)
        elif best == values[-1]:
            values = values + [values[-1] * ratio]
            extra, more = tune(values[-1:], run, x_val)
        else:
            break
        curve = sorted(curve + more)
        best = max(curve, key=lambda c: c[1])[0]
    return best, curve


def unseen_baselines(name, log=print):
    op, xv, yv, xt, yt = _case_data(name)
    out = {}
    for reg in ("identity", "gradient"):
        start = time.perf_counter()
        alpha, curve = _widened(ALPHAS, lambda a: tikhonov(yv, op, a, regularizer=reg, max_iter=500), xv)
        with torch.no_grad():
            xh = tikhonov(yt, op, alpha, regularizer=reg, max_iter=500)
        row = {"alpha": alpha, "validation_psnr": curve, **_score(xh, xt), "seconds": time.perf_counter() - start}
        if reg == "identity":
            row["lipschitz_bound"] = 1 / (2 * math.sqrt(alpha))  # sup_s s / (s^2 + alpha) for ||A|| >= sqrt(alpha)
        out[f"Tikhonov ({reg})"] = row
        log(f"unseen {name}: Tikhonov ({reg}) alpha {alpha:.3g}: {row['psnr_mean']:.2f} dB")
    start = time.perf_counter()
    lam, curve = _widened(LAMBDAS, lambda v: tv(yv, op, v, max_iter=TV_ITER), xv)
    with torch.no_grad():
        xh = tv(yt, op, lam, max_iter=TV_ITER)
    out["TV"] = {"lambda": lam, "validation_psnr": curve, **_score(xh, xt), "seconds": time.perf_counter() - start,
                 "max_iter": TV_ITER}
    log(f"unseen {name}: TV lambda {lam:.3g}: {out['TV']['psnr_mean']:.2f} dB")
    return out


def _solve_batches(model, y, batch=8):
    outs, iters, worst = [], [], 0.0
    for b in range(0, len(y), batch):
        with torch.no_grad():
            x, info = model.solve(y[b:b + batch])
        outs.append(x)
        iters.append(info.iterations)
        worst = max(worst, float(info.error_bound.max()))
    return torch.cat(outs), {"iterations_max": int(max(iters)), "iterations_mean": float(np.mean(iters)),
                             "certified_distance_max": worst}


def _universal_row(model, xv, yv, xt, yt, *, max_lipschitz, reference=None):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tuning = model.tune(xv, yv, max_lipschitz=max_lipschitz, max_evaluations=MAX_EVALUATIONS, reference=reference)
    tune_seconds = time.perf_counter() - start
    start = time.perf_counter()
    xh, solve = _solve_batches(model, yt)
    cert = model.certificate()
    return {**_score(xh, xt), **model.parameters_dict(), "reference": model.reference,
            "bounds": list(model.bounds or []), "tol": model.tol,
            "lipschitz_bound": cert.lipschitz, "additive": cert.additive, "max_lipschitz": max_lipschitz,
            "tuning": tuning, "tune_seconds": tune_seconds, "seconds": time.perf_counter() - start, **solve}


def unseen(name, log=print):
    op, xv, yv, xt, yt = _case_data(name)
    model = load_model("universal", operator=op, tol=TOL)
    row = _universal_row(model, xv, yv, xt, yt, max_lipschitz=None, reference=_reference(UNSEEN[name]["images"]))
    log(f"unseen {name}: universal {row['psnr_mean']:.2f} dB, bound {row['lipschitz_bound']:.2f}")
    return row


def _quality_rows():
    path = RESULTS / "quality.json"
    payload = json.loads(path.read_text())
    commit = str(payload.get("environment", {}).get("git_commit", "?"))[:10]
    return {t["task"]: {"rows": t["rows"], "commit": t.get("measured_at", commit)} for t in payload["tasks"]}


def protocol(name, log=print, *, quick=False):
    spec = get_task(name)
    op = spec.operator
    quality = _quality_rows().get(name)
    tik = next(r for r in quality["rows"] if r["method"] == "Tikhonov (identity, validation alpha)")
    max_lip = 2.0 * float(tik["lipschitz_bound"])
    xv, yv, _ = pairs(spec.pairs("validation"), 4 if quick else N_VALIDATION)
    xt, yt, _ = pairs(spec.pairs("test"), 8 if quick else None)
    model = load_model("universal", operator=op, tol=TOL)
    row = _universal_row(model, xv, yv, xt, yt, max_lipschitz=max_lip, reference=_reference(name))
    row["tikhonov_exact_constant"] = float(tik["lipschitz_bound"])
    row["n_test"], row["n_validation"] = int(len(xt)), int(len(xv))
    keep = ("method", "psnr_mean", "psnr_std", "ssim_mean", "lipschitz_bound", "bound_kind", "seconds")
    row["baselines"] = [{k: r.get(k) for k in keep} for r in quality["rows"] if not r.get("missing")]
    row["baselines_measured_at"] = quality["commit"]
    log(f"protocol {name}: universal {row['psnr_mean']:.2f} dB (test, {len(xt)} images), bound "
        f"{row['lipschitz_bound']:.2f} (<= {max_lip:.2f})")
    return row


def speed(name, chosen: dict, log=print):
    """Seconds per batch of 8 test images, the universal and TV (its validation lambda), interleaved."""
    spec = get_task(name)
    op = spec.operator
    quality = json.loads((RESULTS / "quality.json").read_text())
    lam = next(t for t in quality["tasks"] if t["task"] == name)["tuning"]["tv"]["lambda"]
    _, yt, _ = pairs(spec.pairs("test"), 8)
    model = load_model("universal", operator=op, tol=TOL, **chosen)
    times = {"universal": [], "TV": []}
    for _ in range(2):
        for key, fn in (("universal", lambda: model.solve(yt)), ("TV", lambda: tv(yt, op, lam, max_iter=TV_ITER))):
            start = time.perf_counter()
            with torch.no_grad():
                fn()
            times[key].append(time.perf_counter() - start)
    out = {k: float(np.median(v)) for k, v in times.items()}
    out["tv_over_universal"] = out["TV"] / out["universal"]
    out["universal_iterations"] = model.last_solve.iterations
    log(f"speed {name}: universal {out['universal']:.1f} s, TV {out['TV']:.1f} s per batch of 8 "
        f"(TV / universal = {out['tv_over_universal']:.2f})")
    return out


def stability(name, chosen: dict, log=print, settings=STABILITY):
    """Random and adversarial perturbations (both objectives of PROTOCOLS.md) and a two-point search for the
    largest ratio, each checked against the certificate: strictly (ratio <= L) and with the solver's additive
    term (||R(y1) - R(y2)|| <= L ||y1 - y2|| + additive)."""
    from invstable.stability import adversarial_perturbation, lipschitz_search, random_perturbation

    spec = get_task(name)
    x, y, _ = pairs(spec.pairs("test"), settings["images"])
    model = load_model("universal", operator=spec.operator, tol=TOL, **chosen)
    model.warm_start = True  # nearby measurements: start from the previous solution (within the tolerance)
    start = time.perf_counter()
    with torch.no_grad():
        base = model(y)
    cert = model.certificate()
    norm = lambda t: t.flatten(1).norm(dim=1)  # noqa: E731
    rows, ratios, strict, with_additive = [], [], 0, 0

    def check(out, ref, d):
        nonlocal strict, with_additive
        change, dn = norm(out - ref), norm(d)
        r = change / dn
        ratios.extend(r.tolist())
        strict += int((r > cert.lipschitz).sum())
        with_additive += int((change > cert.lipschitz * dn + cert.additive).sum())
        return r

    for eta in settings["etas"]:
        row = {"eta": eta}
        d = random_perturbation(y, eta, seed=0)
        with torch.no_grad():
            out = model(y + d)
        row["random_psnr"] = float(psnr(out, x).mean())
        row["ratio_random"] = float(check(out, base, d).max())
        for key, target in (("adversarial", None), ("adversarial_x", x)):
            att = adversarial_perturbation(model, y, eta, target=target, steps=settings["steps"],
                                           restarts=settings["restarts"])
            with torch.no_grad():
                out = model(y + att.delta)
            row[f"{key}_psnr"] = float(psnr(out, x).mean())
            row[f"ratio_{key}"] = float(check(out, base, att.delta).max())
        rows.append(row)
        log(f"stability {name} eta {eta}: {row}")
    pair = lipschitz_search(model, y, radius=settings["pair_radius"], steps=settings["steps"], restarts=1)
    return {"settings": settings, "protocol": False, "clean_psnr": float(psnr(base, x).mean()), "per_eta": rows,
            "pair_search_ratio": float(pair.max()), "empirical_lipschitz": max(ratios + pair.tolist()),
            "lipschitz_bound": cert.lipschitz, "additive": cert.additive, "violations_strict": strict,
            "violations_with_additive": with_additive, "pairs_checked": len(ratios),
            "seconds": round(time.perf_counter() - start, 1)}


def run(parts, *, resume=False, quick=False, threads=2, only=None, log=print):
    """Run ``parts`` (on the tasks and operators named in ``only``, default all). Each entry is merged into
    ``universal.json`` as soon as it is measured (re-read before every write, so that two processes working on
    different entries can share the file)."""
    torch.set_num_threads(threads)
    path = RESULTS / "universal.json"
    result = json.loads(path.read_text()) if resume and path.is_file() else {}
    for section in ("unseen", "protocol", "speed", "stability"):
        result.setdefault(section, {})
    wanted = (lambda name: only is None or name in only)

    def save(section, name, key=None):
        if quick:
            return
        current = json.loads(path.read_text()) if path.is_file() else {}
        entry = result[section][name]
        if key is None:
            current.setdefault(section, {})[name] = entry
        else:
            current.setdefault(section, {}).setdefault(name, {k: v for k, v in entry.items() if k != key})[key] = entry[key]
        current["environment"] = environment("cpu")
        current["command"] = "python -m benchmarks.universal --resume"
        write_result("universal", current)

    for name in filter(wanted, UNSEEN):
        entry = result["unseen"].setdefault(name, {"what": UNSEEN[name]["what"]})
        if "unseen-baselines" in parts and "baselines" not in entry:
            entry["baselines"] = unseen_baselines(name, log)
            save("unseen", name, "baselines")
        if "unseen" in parts and not (resume and "universal" in entry):
            entry["universal"] = unseen(name, log)
            save("unseen", name, "universal")
    for name in filter(wanted, PROTOCOL_TASKS):
        if "protocol" in parts and not (resume and name in result["protocol"]):
            result["protocol"][name] = protocol(name, log, quick=quick)
            save("protocol", name)
    for section, measure in (("speed", speed), ("stability", stability)):
        for name in filter(wanted, ("ct-30", "blur-g2")):
            if section in parts and name in result["protocol"] and not (resume and name in result[section]):
                p = result["protocol"][name]
                result[section][name] = measure(name, {k: p[k] for k in ("lam", "scale", "strong_convexity")}
                                                | {"reference": p.get("reference", 0.0)}, log)
                save(section, name)
    if "figure" in parts:
        figure(RESULTS / "universal_filters.png")
    return result


def figure(path):
    """The learned filters (the composed kernels of W) and activations of the shipped regulariser."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from invstable.models._io import atomic_write

    model = load_model("universal", operator=Blur(gaussian_kernel(2.0), 128))
    reg = model.regularizer
    k = reg.kernel().detach()[:, 0]
    order = torch.argsort(k.flatten(1).norm(dim=1), descending=True)
    n = len(order)
    cols = 8
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(cols * 1.4, 2 * rows * 1.4))
    t = torch.linspace(-reg.activation.span * 1.2, reg.activation.span * 1.2, 400)
    sig = reg.activation(t.view(1, 1, -1).expand(1, n, -1)).detach()[0]
    for i, c in enumerate(order.tolist()):
        ax = axes[2 * (i // cols), i % cols]
        ax.imshow(k[c].numpy(), cmap="RdBu_r", vmin=-float(k[c].abs().max()), vmax=float(k[c].abs().max()))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"#{c} |w|={float(k[c].norm()):.2f}", fontsize=6)
        ax = axes[2 * (i // cols) + 1, i % cols]
        ax.plot(t.numpy(), sig[c].numpy(), lw=1)
        ax.plot(t.numpy(), t.numpy(), lw=0.5, color="0.7")
        ax.tick_params(labelsize=5)
    fig.suptitle("universal regulariser: filters of W (9 x 9, by norm) and their activations sigma_i (slopes in [0, 1])",
                 fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--resume", action="store_true", help="keep the parts already in universal.json")
    parser.add_argument("--quick", action="store_true", help="few images, nothing written")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", help="tasks / operators to run (default all): "
                                                  f"{', '.join(PROTOCOL_TASKS + tuple(UNSEEN))}")
    args = parser.parse_args(argv)
    run(args.parts, resume=args.resume, quick=args.quick, threads=args.threads, only=args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
