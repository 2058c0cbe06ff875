"""``invstable demo``: simulate CT-30 and Blur-G2 measurements of built-in images and reconstruct them."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from deepinv.physics import GaussianNoise
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.transform import resize

from .baselines import Tikhonov, choose_alpha, fbp, tikhonov
from .models import list_models, load_model, model_info
from .models._pretrained import UNIVERSAL
from .operators import Blur, ParallelBeamCT, gaussian_kernel

IMAGE_SIZE = 128


@dataclasses.dataclass
class Row:
    task: str
    method: str
    image: np.ndarray
    seconds: float
    note: str = ""
    bound: float | None = None  # certified Lipschitz bound of y -> x (inf: none; None: not computed)


def _builtin_images() -> dict[str, torch.Tensor]:
    """Shepp–Logan (CT) and the camera man (deblurring), 128 x 128 in [0, 1]; both ship with scikit-image."""
    phantom = resize(skdata.shepp_logan_phantom(), (IMAGE_SIZE, IMAGE_SIZE), anti_aliasing=True)
    camera = resize(skdata.camera().astype(np.float64) / 255.0, (IMAGE_SIZE, IMAGE_SIZE), anti_aliasing=True)
    as_batch = lambda a: torch.from_numpy(np.clip(a, 0, 1)).float()[None, None]  # noqa: E731
    return {"ct-30": as_batch(phantom), "blur-g2": as_batch(camera)}


def _timed(task, method, fn, note=""):
    start = time.perf_counter()
    out = fn()
    return Row(task, method, out[0, 0].numpy(), time.perf_counter() - start, note)


def _tikhonov_row(task, y, op, noise_level, regularizer) -> Row:
    """Tikhonov with alpha from the discrepancy principle, timed together.

    Bound: for the identity regulariser ``max_s s / (s^2 + alpha) <= 1 / (2 sqrt(alpha))`` whatever ``A``; for the
    gradient regulariser the exact constant where it is cheap (circular blur, in Fourier), else not computed.
    """
    start = time.perf_counter()
    alpha = choose_alpha(y, op, noise_level=noise_level, regularizer=regularizer)
    x = tikhonov(y, op, alpha, regularizer=regularizer)
    seconds = time.perf_counter() - start
    a = float(alpha[0])
    if regularizer == "identity":
        bound = 1.0 / (2.0 * a ** 0.5)
    elif isinstance(op, Blur) and op.boundary == "circular":
        bound = Tikhonov(op, a, regularizer=regularizer).lipschitz_bound()
    else:
        bound = None
    return Row(task, f"Tikhonov ({regularizer})", x[0, 0].numpy(), seconds, f"alpha={a:.2e} (discrepancy)", bound)


def _model_rows(y: dict, operators: dict) -> list[Row]:
    """The pretrained models shipped in this installation, on the task they were trained for."""
    rows = []
    for name in list_models():
        if name in UNIVERSAL:
            continue
        model = load_model(name)
        task = "ct-30" if name.startswith("ct30") else "blur-g2"
        start = time.perf_counter()
        with torch.no_grad():
            x = model(y[task])
        seconds = time.perf_counter() - start
        rows.append(Row(task, name, x[0, 0].numpy(), seconds, f"{model.family}, K={model.iterations}",
                        model.lipschitz_bound()))
    for name in (n for n in UNIVERSAL if n in list_models()):
        for task, op in operators.items():  # one regulariser for both operators, weights tuned on validation
            presets = model_info(name).get("presets", {})
            model = load_model(name, operator=op, preset=task if task in presets else None, tol=1e-2)
            start = time.perf_counter()
            with torch.no_grad():
                x = model(y[task])
            seconds = time.perf_counter() - start
            rows.append(Row(task, name, x[0, 0].numpy(), seconds,
                            f"convex ridge, {model.last_solve.iterations} its", model.lipschitz_bound()))
    return rows


def run_demo(seed: int = 0) -> tuple[dict, list[Row]]:
    """Simulate the measurements (PROTOCOLS.md operators and noise levels) and reconstruct with the baselines."""
    rng = torch.Generator().manual_seed(seed)
    images = _builtin_images()
    # CT-30: 30 angles, noise std 5 % of mean |A x|; Blur-G2: Gaussian sigma 2, circular, noise std 0.01
    ct = ParallelBeamCT(IMAGE_SIZE, 30)
    blur = Blur(gaussian_kernel(2.0), IMAGE_SIZE)
    clean = {"ct-30": ct.A(images["ct-30"]), "blur-g2": blur.A(images["blur-g2"])}
    sigma = {"ct-30": 0.05 * float(clean["ct-30"].abs().mean()), "blur-g2": 0.01}
    y = {task: GaussianNoise(sigma=sigma[task], rng=rng)(clean[task]) for task in clean}

    rows = [
        _timed("ct-30", "FBP (ramp)", lambda: fbp(y["ct-30"], ct)),
        _timed("ct-30", "FBP (Hann)", lambda: fbp(y["ct-30"], ct, filter="hann")),
    ]
    for task, op in (("ct-30", ct), ("blur-g2", blur)):
        rows += [_tikhonov_row(task, y[task], op, sigma[task], reg) for reg in ("identity", "gradient")]
    rows += _model_rows(y, {"ct-30": ct, "blur-g2": blur})
    rows.sort(key=lambda r: r.task != "ct-30")
    truths = {k: v[0, 0].numpy() for k, v in images.items()}
    return {"truth": truths, "measurement": {k: v[0, 0].numpy() for k, v in y.items()}}, rows


def _table(truths: dict, rows: list[Row]) -> str:
    lines = [f"{'task':<8} {'method':<22} {'PSNR dB':>8} {'SSIM':>6} {'time s':>7} {'Lip. bound':>10}  note",
             "-" * 92]
    for r in rows:
        x = truths[r.task]
        psnr = peak_signal_noise_ratio(x, np.clip(r.image, 0, 1), data_range=1.0)
        ssim = structural_similarity(x, np.clip(r.image, 0, 1), data_range=1.0)
        bound = "-" if r.bound is None else f"{r.bound:10.2f}"
        lines.append(f"{r.task:<8} {r.method:<22} {psnr:8.2f} {ssim:6.3f} {r.seconds:7.2f} {bound:>10}  {r.note}")
    lines.append("Lip. bound: certified upper bound on ||R(y1) - R(y2)|| / ||y1 - y2|| (inf: no certificate; "
                 "-: not computed)")
    return "\n".join(lines)


def _figure(data: dict, rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(data["truth"])
    cols = 2 + max(sum(r.task == t for r in rows) for t in tasks)
    fig, axes = plt.subplots(len(tasks), cols, figsize=(2.4 * cols, 2.6 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        panels = [("ground truth", data["truth"][task]), ("measurement", data["measurement"][task])]
        truth = data["truth"][task]
        for r in rows:
            if r.task == task:
                psnr = peak_signal_noise_ratio(truth, np.clip(r.image, 0, 1), data_range=1.0)
                panels.append((f"{r.method}\n{psnr:.2f} dB", np.clip(r.image, 0, 1)))
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j < len(panels):
                title, img = panels[j]
                ax.imshow(img, cmap="gray", aspect="auto" if title == "measurement" else "equal")
                ax.set_title(f"{task}: {title}" if j == 0 else title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def demo(out: str | os.PathLike = "invstable_demo.png", *, seed: int = 0) -> Path:
    """Run the demo, print the table, write the figure; returns the figure's path."""
    data, rows = run_demo(seed)
    print(_table(data["truth"], rows))
    path = Path(out).resolve()
    _figure(data, rows, path)
    print(f"figure written to {path}")
    return path
