"""Reconstruction quality on the protocol test sets (PROTOCOLS.md, "Quality").

Methods: FBP (CT), Tikhonov with the identity and the gradient regulariser (alpha tuned on the validation
split; also alpha by the discrepancy principle per sample), TV (lambda tuned on the validation split), and every
pretrained model shipped for the task. Metrics on the test split: PSNR (data range 1), SSIM, relative L2
error, mean and standard deviation; every reconstruction is clipped to [0, 1] before scoring (all methods
alike). Each method's certified Lipschitz bound is recorded next to it (Tikhonov: its exact constant).

Usage: python -m benchmarks.quality [--quick] [--tasks ct-30 blur-g2] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from skimage.metrics import structural_similarity

from benchmarks._common import RESULTS, environment, write_result
from invstable import Tikhonov, choose_alpha, fbp, list_models, load_model, tikhonov, tv
from invstable.data import task as get_task

MODEL_PREFIX = {"ct-30": "ct30-", "blur-g2": "blur-"}
ALPHAS = np.logspace(-4, -0.5, 8)
LAMBDAS = np.logspace(-4, -2, 5)


def _pairs(dataset, count):
    n = len(dataset) if count is None else min(count, len(dataset))
    xs, ys, sigmas = zip(*(dataset.sample(i) for i in range(n)))
    return torch.stack(xs), torch.stack(ys), torch.stack(sigmas)


def scores(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, np.ndarray]:
    """PSNR, SSIM and relative error of each image (reconstructions clipped to [0, 1])."""
    x_hat = x_hat.detach().clamp(0, 1).double().cpu()
    x = x.double().cpu()
    mse = (x_hat - x).pow(2).flatten(1).mean(1)
    psnr = (10 * torch.log10(1.0 / mse.clamp_min(1e-20))).numpy()
    rel = ((x_hat - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).numpy()
    ssim = np.array([structural_similarity(a[0].numpy(), b[0].numpy(), data_range=1.0) for a, b in zip(x_hat, x)])
    return {"psnr": psnr, "ssim": ssim, "relative_error": rel}


def _row(method, out, x, seconds, **extra):
    s = scores(out, x)
    row = {"method": method, "n": int(len(x)), "seconds": round(seconds, 2)}
    for k, v in s.items():
        row[f"{k}_mean"], row[f"{k}_std"] = float(v.mean()), float(v.std())
    row.update(extra)
    return row


def _tune(values, run, x_val):
    """The value of ``values`` with the best mean validation PSNR (never the test set)."""
    best, curve = None, []
    for v in values:
        p = float(scores(run(float(v)), x_val)["psnr"].mean())
        curve.append([float(v), p])
        if best is None or p > best[1]:
            best = (float(v), p)
    return best[0], curve


def evaluate_task(name: str, *, quick: bool, models: list[str] | None = None) -> dict:
    spec = get_task(name)
    op = spec.operator
    n_val, n_test = (8, 8) if quick else (32, None)
    xv, yv, _ = _pairs(spec.pairs("validation"), n_val)
    xt, yt, st = _pairs(spec.pairs("test"), n_test)
    rows, tuning, images = [], {}, {}

    def record(method, fn, **extra):
        start = time.perf_counter()
        with torch.no_grad():
            out = fn()
        rows.append(_row(method, out, xt, time.perf_counter() - start, **extra))
        images[method] = out[-1, 0].clamp(0, 1).numpy()  # the last test image (Shepp-Logan for CT)

    if name.startswith("ct"):
        record("FBP (ramp)", lambda: fbp(yt, op), lipschitz_bound=None)
        record("FBP (Hann)", lambda: fbp(yt, op, filter="hann"), lipschitz_bound=None)
    max_iter = 150 if quick else 500
    for reg in ("identity", "gradient"):
        alpha, curve = _tune(ALPHAS, lambda a: tikhonov(yv, op, a, regularizer=reg, max_iter=max_iter), xv)
        tuning[f"tikhonov_{reg}"] = {"alpha": alpha, "validation_psnr": curve}
        if quick or (reg == "gradient" and name.startswith("ct")):
            # Lanczos on the CG path takes minutes; the identity case has the closed-form bound 1/(2 sqrt(alpha))
            bound = 1 / (2 * math.sqrt(alpha)) if reg == "identity" else None
            kind = "upper bound 1/(2 sqrt(alpha))" if reg == "identity" else "not computed"
        else:
            bound = Tikhonov(op, alpha, regularizer=reg).lipschitz_bound()
            kind = "exact constant"
        record(f"Tikhonov ({reg}, validation alpha)",
               lambda: tikhonov(yt, op, alpha, regularizer=reg, max_iter=max_iter),
               alpha=alpha, lipschitz_bound=bound, bound_kind=kind)
        record(f"Tikhonov ({reg}, discrepancy)",
               lambda: tikhonov(yt, op, choose_alpha(yt, op, noise_level=st, regularizer=reg, max_iter=max_iter),
                                regularizer=reg, max_iter=max_iter),
               lipschitz_bound=None, bound_kind="alpha differs per sample")
    tv_iter = 100 if quick else 300
    lam, curve = _tune(LAMBDAS, lambda v: tv(yv, op, v, max_iter=tv_iter), xv)
    tuning["tv"] = {"lambda": lam, "validation_psnr": curve}
    record("TV (validation lambda)", lambda: tv(yt, op, lam, max_iter=tv_iter), lam=lam, lipschitz_bound=math.inf,
           bound_kind="no certificate")
    for model_name in models if models is not None else list_models():
        if not model_name.startswith(MODEL_PREFIX[name]):
            continue
        model = load_model(model_name)
        record(model_name, lambda: model(yt), family=model.family, lipschitz_bound=model.lipschitz_bound(),
               bound_kind="certified" if model.family != "unconstrained" else "no certificate")
    return {"task": name, "n_test": int(len(xt)), "n_validation": int(len(xv)), "rows": rows, "tuning": tuning,
            "targets": targets(name, rows), "_images": images, "_truth": xt[-1, 0].numpy()}


def _psnr(rows, method):
    row = next((r for r in rows if r["method"] == method), None)
    return None if row is None else row["psnr_mean"]


def targets(name: str, rows: list[dict]) -> list[dict]:
    """The targets of the learned-inverses issue and PROTOCOLS.md, checked against the measured rows."""
    prefix = MODEL_PREFIX.get(name)
    out = []
    tik = max(v for v in (_psnr(rows, "Tikhonov (identity, validation alpha)"),
                          _psnr(rows, "Tikhonov (gradient, validation alpha)")) if v is not None)
    tik_bound = next(r["lipschitz_bound"] for r in rows if r["method"] == "Tikhonov (identity, validation alpha)")
    tvp = _psnr(rows, "TV (validation lambda)")
    unconstrained = _psnr(rows, f"{prefix}unconstrained")
    for r in rows:
        if not r["method"].startswith(prefix):
            continue
        p = r["psnr_mean"]
        stable = not r["method"].endswith("unconstrained")
        checks = []
        if name == "ct-30":
            checks += [("above best Tikhonov by >= 6 dB", p - tik, 6.0), ("above TV by >= 2 dB", p - tvp, 2.0)]
        else:
            checks += [("above best Tikhonov by >= 1.5 dB", p - tik, 1.5)]
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 validation and 8 test images, fewer iterations")
    parser.add_argument("--tasks", nargs="+", default=["ct-30", "blur-g2"], help="protocol tasks")
    parser.add_argument("--results-dir", default=None, help="where to write quality.json (default benchmarks/results)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [evaluate_task(t, quick=args.quick) for t in args.tasks]
    folder = RESULTS if args.results_dir is None else __import__("pathlib").Path(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    _figure(results, folder / "quality.png")
    payload = {"environment": environment("cpu"), "quick": args.quick,
               "command": "python -m benchmarks.quality" + (" --quick" if args.quick else ""),
               "tasks": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]}
    path = write_result("quality", payload, results_dir=folder)
    for r in payload["tasks"]:
        print(f"\n{r['task']} (test n={r['n_test']})")
        for row in r["rows"]:
            b = row.get("lipschitz_bound")
            print(f"  {row['method']:<40} PSNR {row['psnr_mean']:6.2f} ± {row['psnr_std']:4.2f}  "
                  f"SSIM {row['ssim_mean']:.3f}  bound {'-' if b is None else f'{b:.2f}'}")
        for t in r["targets"]:
            print(f"  target {'MET   ' if t['met'] else 'MISSED'} {t['model']}: {t['target']} ({t['value']})")
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
