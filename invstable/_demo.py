"""``invstable demo``: simulate CT-30 and Blur-G2 measurements of built-in images and reconstruct them."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from deepinv.physics import GaussianNoise
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.transform import resize

from ._files import atomic_write
from .baselines import Tikhonov, choose_alpha, fbp, tikhonov
from .models import list_models, load_model, model_info
from .models._pretrained import REGULARISERS
from .operators import Blur, ParallelBeamCT, gaussian_kernel

IMAGE_SIZE = 128
#: the demo's tasks, in the order of its table
DEMO_TASKS = ("ct-30", "blur-g2")
#: PNG text stored in the figure, so that a later demo knows which file it may replace.
FIGURE_TITLE = "invstable demo"


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


def _say(message: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(f"invstable demo: {message}", file=sys.stderr, flush=True)


class _Progress:
    """Numbered progress lines, ``[k/n] task: method ...``, given through ``log`` before each step starts."""

    def __init__(self, total: int, log: Callable[[str], None] | None):
        self.total, self.done, self.log = total, 0, log

    def __call__(self, task: str, what: str) -> None:
        self.done += 1
        if self.log is not None:
            self.log(f"[{self.done}/{self.total}] {task}: {what}")


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


def _model_rows(y: dict, operators: dict, step: Callable[[str, str], None]) -> list[Row]:
    """The pretrained models shipped in this installation, on the task they were trained for."""
    rows = []
    for name in list_models():
        if name in REGULARISERS:
            continue
        task = "ct-30" if name.startswith("ct30") else "blur-g2"
        step(task, f"{name} (pretrained model)")
        model = load_model(name)
        start = time.perf_counter()
        with torch.no_grad():
            x = model(y[task])
        seconds = time.perf_counter() - start
        rows.append(Row(task, name, x[0, 0].numpy(), seconds, f"{model.family}, K={model.iterations}",
                        model.lipschitz_bound()))
    for name in (n for n in REGULARISERS if n in list_models()):
        for task in _regulariser_tasks(name, operators):
            op = operators[task]
            step(task, f"{name} (convex ridge regulariser, solving the variational problem)")
            presets = model_info(name).get("presets", {})
            model = load_model(name, operator=op, preset=task if task in presets else None, tol=1e-2)
            start = time.perf_counter()
            with torch.no_grad():
                x = model(y[task])
            seconds = time.perf_counter() - start
            rows.append(Row(task, name, x[0, 0].numpy(), seconds,
                            f"convex ridge, {model.last_solve.iterations} its", model.lipschitz_bound()))
    return rows


def _regulariser_tasks(name: str, tasks) -> list[str]:
    """The demo's tasks a regulariser runs on: every one for the universal regulariser (weights from the task's
    preset), only its own task for one fine-tuned on a task (it has no rule for the others)."""
    own = model_info(name).get("task")
    return [t for t in tasks if own is None or t == own]


def _step_count() -> int:
    """Steps :func:`run_demo` takes: 2 FBP, 4 Tikhonov, each learned model once, each regulariser on its tasks."""
    shipped = list_models()
    return 6 + sum(n not in REGULARISERS for n in shipped) + sum(
        len(_regulariser_tasks(n, DEMO_TASKS)) for n in shipped if n in REGULARISERS)


def run_demo(seed: int = 0, *, log: Callable[[str], None] | None = None) -> tuple[dict, list[Row]]:
    """Simulate the measurements (PROTOCOLS.md operators and noise levels) and reconstruct with the baselines.

    ``log`` receives one line before each step starts (``"[3/15] ct-30: Tikhonov (identity) ..."``).
    """
    step = _Progress(_step_count(), log)
    if log is not None:
        log(f"simulating CT-30 (Shepp-Logan, 30 angles) and Blur-G2 (camera, Gaussian sigma 2) measurements at "
            f"{IMAGE_SIZE} x {IMAGE_SIZE}; {step.total} reconstructions follow")
    rng = torch.Generator().manual_seed(seed)
    images = _builtin_images()
    # CT-30: 30 angles, noise std 5 % of mean |A x|; Blur-G2: Gaussian sigma 2, circular, noise std 0.01
    ct = ParallelBeamCT(IMAGE_SIZE, 30)
    blur = Blur(gaussian_kernel(2.0), IMAGE_SIZE)
    clean = {"ct-30": ct.A(images["ct-30"]), "blur-g2": blur.A(images["blur-g2"])}
    sigma = {"ct-30": 0.05 * float(clean["ct-30"].abs().mean()), "blur-g2": 0.01}
    y = {task: GaussianNoise(sigma=sigma[task], rng=rng)(clean[task]) for task in clean}

    rows = []
    for method, filt in (("FBP (ramp)", "ramp"), ("FBP (Hann)", "hann")):
        step("ct-30", method)
        rows.append(_timed("ct-30", method, lambda: fbp(y["ct-30"], ct, filter=filt)))
    for task, op in (("ct-30", ct), ("blur-g2", blur)):
        for reg in ("identity", "gradient"):
            step(task, f"Tikhonov ({reg}), alpha by the discrepancy principle")
            rows.append(_tikhonov_row(task, y[task], op, sigma[task], reg))
    rows += _model_rows(y, dict(zip(DEMO_TASKS, (ct, blur))), step)
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
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={"Title": FIGURE_TITLE}))
    finally:
        plt.close(fig)


def _is_demo_figure(path: Path) -> bool:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return getattr(im, "text", {}).get("Title") == FIGURE_TITLE
    except Exception:  # not an image at all: certainly not an earlier figure
        return False


def check_figure_path(out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse, before the demo runs, a figure path that is not .png or that holds a file other than an earlier
    demo figure (unless ``overwrite``)."""
    path = Path(out).resolve()
    if path.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: the demo figure is a PNG; give a name ending in .png")
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name ending in .png")
    if path.exists() and not overwrite and not _is_demo_figure(path):
        raise FileExistsError(f"--out {out} already exists and is not an earlier demo figure; pass --overwrite to "
                              "replace it, or choose another name")
    return path


def demo(out: str | os.PathLike = "invstable_demo.png", *, seed: int = 0, overwrite: bool = False,
         progress: bool = True) -> Path:
    """Run the demo, print the table, write the figure; returns the figure's path.

    A progress line per step goes to stderr (unless ``progress`` is false). An existing ``out`` is replaced only
    if it is an earlier demo figure or ``overwrite`` is true; missing folders are created.
    """
    path = check_figure_path(out, overwrite=overwrite)
    data, rows = run_demo(seed, log=_say if progress else None)
    print(_table(data["truth"], rows))
    if progress:
        _say("drawing the figure")
    _figure(data, rows, path)
    print(f"figure written to {path}")
    return path
