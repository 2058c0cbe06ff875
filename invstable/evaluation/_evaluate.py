"""``evaluate``: score any reconstructor ``y -> x`` on a protocol task (PROTOCOLS.md, "Metrics").

The protocol's test images and measurements come from :func:`invstable.data.task` (generated, no download);
the quality metrics from :func:`scores`; the perturbation study (random and adversarial, after Genzel, Macdonald &
März 2022 and Antun et al. 2020) from the searches of :mod:`invstable.stability`. The benchmarks
(:func:`run_quality`, :func:`run_stability`) run the same code on every method they compare.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Callable

import numpy as np
import torch

from ..data import task as get_task
from ..models._certificate import rounding_allowance
from ..stability import adversarial_perturbation, random_perturbation
from ._metrics import psnr, scores

#: the stability protocol (PROTOCOLS.md): the first 20 test images, eta in {0.5, 1, 2, 5} % of ||y||, projected
#: Adam with 200 steps from 3 random starts per search
STABILITY_PROTOCOL = {"images": 20, "etas": [0.005, 0.01, 0.02, 0.05], "steps": 200, "restarts": 3}
#: the objectives of the adversarial search: away from R(y), and away from the truth x
OBJECTIVES = ("adversarial", "adversarial_x")


def _norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _ratio(out: torch.Tensor, base: torch.Tensor, d: torch.Tensor) -> np.ndarray:
    """||R(y + d) - R(y)|| / ||d|| per image, from ``out = R(y + d)`` and ``base = R(y)``."""
    return (_norm(out - base) / _norm(d).clamp_min(1e-30)).double().cpu().numpy()


def stats(v: np.ndarray) -> dict:
    """Mean, standard deviation, minimum and maximum of ``v`` as plain floats."""
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)), "max": float(np.max(v))}


def perturbation_study(reconstruct: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
                       etas, steps: int, restarts: int, batch: int = 10, seed: int = 0,
                       transfer: dict | None = None, found: dict | None = None) -> dict:
    """The random and adversarial perturbation protocol of one reconstructor on images ``x`` (measurements ``y``).

    For each relative level ``eta`` (of ``||y_i||``): a Gaussian perturbation of norm ``eta ||y_i||``, and the
    worst perturbation found by :func:`invstable.stability.adversarial_perturbation` maximising
    ``||R(y + d) - R(y)||`` ("adversarial") and ``||R(y + d) - x||`` ("adversarial_x"); PSNR against the truth and
    the ratio ``||R(y + d) - R(y)|| / ||d||`` of each.

    With ``transfer`` (the perturbations ``found`` for another reconstructor, keyed by (batch start, eta,
    objective)), no search runs: the reconstructor is evaluated at those perturbations (a transfer attack, a
    weaker lower bound). ``found``, when given, collects this reconstructor's perturbations in that form.

    Returns ``{"clean": PSNR per image, "per_eta": [row per eta], "ratios": every ratio, "example": {...}}``;
    each row holds ``eta``, ``{random,adversarial,adversarial_x}_psnr`` (stats), ``..._loss_db`` (mean PSNR lost
    against the clean reconstruction) and ``ratio_{random,adversarial,adversarial_x}`` (stats).
    """
    per_eta = {eta: {"random": [], "adversarial": [], "adversarial_x": [], "ratio_random": [],
                     "ratio_adversarial": [], "ratio_adversarial_x": []} for eta in etas}
    clean, example = [], {}
    for b0 in range(0, len(y), batch):
        xb, yb = x[b0:b0 + batch], y[b0:b0 + batch]
        with torch.no_grad():
            base = reconstruct(yb)
        clean.append(psnr(base, xb))
        for eta in etas:
            acc = per_eta[eta]
            d = random_perturbation(yb, eta, seed=seed + b0)
            with torch.no_grad():
                out = reconstruct(yb + d)
            acc["random"].append(psnr(out, xb))
            acc["ratio_random"].append(_ratio(out, base, d))
            for key, target in zip(OBJECTIVES, (None, xb)):
                att = None
                if transfer is not None:
                    delta = transfer[(b0, eta, key)]
                else:
                    att = adversarial_perturbation(reconstruct, yb, eta, target=target, steps=steps,
                                                   restarts=restarts, seed=seed + b0)
                    delta = att.delta
                if found is not None:
                    found[(b0, eta, key)] = delta
                with torch.no_grad():
                    out = reconstruct(yb + delta)
                ratio = _ratio(out, base, delta) if att is None else att.ratio.double().cpu().numpy()
                acc[key].append(psnr(out, xb))
                acc[f"ratio_{key}"].append(ratio)
                if b0 == 0 and key == "adversarial_x" and eta == max(etas):
                    example = {"eta": eta, "image": out[0, 0].detach().clamp(0, 1).cpu().numpy()}
    clean = np.concatenate(clean)
    rows, all_ratios = [], []
    for eta, acc in per_eta.items():
        v = {k: np.concatenate(a) for k, a in acc.items()}
        all_ratios += [v["ratio_random"], v["ratio_adversarial"], v["ratio_adversarial_x"]]
        rows.append({"eta": eta, **{f"{k}_psnr": stats(v[k]) for k in ("random", "adversarial", "adversarial_x")},
                     **{f"{k}_loss_db": float(np.mean(clean - v[k])) for k in ("random", "adversarial", "adversarial_x")},
                     **{k: stats(v[k]) for k in ("ratio_random", "ratio_adversarial", "ratio_adversarial_x")}})
    return {"clean": clean, "per_eta": rows, "ratios": np.concatenate(all_ratios), "example": example}


def _positive(name: str, value, *, none: bool = False):
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if none else ''}, got {value!r}")
    return int(value)


def _etas(etas) -> list[float]:
    if etas is None:
        return list(STABILITY_PROTOCOL["etas"])
    try:
        out = [float(e) for e in etas]
    except (TypeError, ValueError):
        raise ValueError(f"etas must be a list of numbers > 0 (relative to ||y||), got {etas!r}") from None
    if not out or not all(math.isfinite(e) and e > 0 for e in out):
        raise ValueError(f"etas must be a non-empty list of finite numbers > 0 (relative to ||y||), got {etas!r}")
    return out


def _bound(reconstructor) -> float | None:
    """``reconstructor.lipschitz_bound()`` as a float when it has one, else None."""
    method = getattr(reconstructor, "lipschitz_bound", None)
    if not callable(method):
        return None
    value = method()
    if isinstance(value, torch.Tensor):
        value = value.item()
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isnan(value) or value < 0:
        raise ValueError(f"reconstructor.lipschitz_bound() returned {value!r}; it must return a number >= 0 (or "
                         "math.inf for no bound)")
    return float(value)


def evaluate(reconstructor: Callable[[torch.Tensor], torch.Tensor], task: str = "ct-30", *, count: int | None = None,
             stability: bool = False, batch_size: int = 8, stability_count: int | None = None, etas=None,
             steps: int | None = None, restarts: int | None = None, seed: int = 0,
             device: str | torch.device | None = None) -> dict:
    r"""Score a reconstructor ``y -> x`` on the test images of a protocol task (PROTOCOLS.md, "Metrics").

    Parameters
    ----------
    reconstructor : callable
        Maps a batch of measurements ``y`` of shape ``(B, *measurement_shape)`` (float32, on ``device``) to images
        ``(B, 1, H, W)``: an invstable model, a deepinv model with its operator bound, a closure around a baseline.
        With ``stability=True`` it must be differentiable in ``y`` (the adversarial search uses autograd).
    task : str
        A protocol task of :func:`invstable.data.task`, e.g. "ct-30", "ct-180" or "blur-g2".
    count : int, optional
        The first ``count`` test images (default: all of the test split).
    stability : bool
        Also run the perturbation protocol on the first ``stability_count`` of them (default: ``count``, at most
        the protocol's 20).
    batch_size : int
        Images per call of ``reconstructor``.
    stability_count, etas, steps, restarts : optional
        Size of the perturbation protocol (defaults: the protocol's 20 images, eta in {0.5, 1, 2, 5} % of ||y||,
        200 Adam steps, 3 random starts); ``"protocol"`` in the result says whether the size reached it.
    seed : int
        Seed of the random perturbations and of the searches' starts.
    device : str or torch.device, optional
        Where ``y`` is sent (default: the CPU); the images are scored on the CPU.

    Returns
    -------
    dict
        ``task``, ``count``, ``seconds`` (reconstruction time), ``psnr_mean``, ``psnr_std``, ``ssim_mean``,
        ``ssim_std``, ``relative_error_mean``, ``relative_error_std`` (reconstructions clipped to [0, 1], PSNR
        with data range 1). With ``stability=True`` also ``stability``: ``images``, ``settings``, ``clean_psnr``,
        ``per_eta`` (PSNR under the random and adversarial perturbations at each eta), ``empirical_lipschitz``
        (the largest :math:`\|R(y + d) - R(y)\| / \|d\|` found), ``pairs_checked``, ``lipschitz_bound`` (from
        ``reconstructor.lipschitz_bound()`` when it has one, else None), ``ratio_to_bound`` and ``violations``
        (ratios above the bound; 0 for a correct certificate; None without a finite bound), and ``rounding``: for
        a model with a floating-point certificate (``reconstructor.certificate()``), the levels eta below the
        dtype's resolution and, when a ratio exceeds the bound, the measured rounding rate the certificate adds
        (None for a reconstructor without ``certificate()``).

    Raises
    ------
    ValueError
        ``task`` is not a protocol task (the message lists them).
    TypeError, ValueError
        ``reconstructor`` is not callable, returns no tensor of the images' shape, or (``stability=True``) is not
        differentiable in ``y``; a size is not a positive int.

    See Also
    --------
    invstable.training.evaluate : the same word for the same act on any paired dataset (mean PSNR of a model on
        validation pairs, what training monitors); this function scores on a protocol task's test split.
    invstable.stability.adversarial_perturbation : the search behind ``stability=True``.

    Examples
    --------
    >>> import invstable
    >>> op = invstable.data.task("blur-g2").operator
    >>> result = invstable.evaluate(lambda y: op.A_adjoint(y), task="blur-g2", count=2)
    >>> sorted(k for k in result if k.startswith("psnr"))
    ['psnr_mean', 'psnr_std']
    """
    if not callable(reconstructor):
        raise TypeError(f"reconstructor must be a callable y -> x, got {type(reconstructor).__name__}")
    count = _positive("count", count, none=True)
    batch_size = _positive("batch_size", batch_size)
    if not isinstance(stability, bool):
        raise TypeError(f"stability must be True or False, got {stability!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    device = torch.device("cpu" if device is None else device)
    spec = get_task(task)
    dataset = spec.pairs("test")
    n = len(dataset) if count is None else min(count, len(dataset))
    xs, ys, _ = zip(*(dataset.sample(i) for i in range(n)))
    x, y = torch.stack(xs), torch.stack(ys)

    def run(yb: torch.Tensor) -> torch.Tensor:
        out = reconstructor(yb.to(device))
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"reconstructor returned {type(out).__name__}; it must return a torch.Tensor of images "
                            f"(B, 1, H, W), here {(len(yb), *x.shape[1:])}")
        if tuple(out.shape) != (len(yb), *x.shape[1:]):
            raise ValueError(f"reconstructor returned shape {tuple(out.shape)} for measurements {tuple(yb.shape)}; "
                             f"the images of {task} have shape {(len(yb), *x.shape[1:])}")
        return out

    start = time.perf_counter()
    with torch.no_grad():
        x_hat = torch.cat([run(y[i:i + batch_size]).detach().cpu() for i in range(0, n, batch_size)])
    seconds = time.perf_counter() - start
    result = {"task": spec.name, "count": int(n), "seconds": round(seconds, 3)}
    for key, values in scores(x_hat, x).items():
        result[f"{key}_mean"], result[f"{key}_std"] = float(values.mean()), float(values.std())
    if not stability:
        return result

    settings = {"images": _positive("stability_count", stability_count, none=True)
                or min(n, STABILITY_PROTOCOL["images"]),
                "etas": _etas(etas),
                "steps": _positive("steps", steps, none=True) or STABILITY_PROTOCOL["steps"],
                "restarts": _positive("restarts", restarts, none=True) or STABILITY_PROTOCOL["restarts"]}
    settings["images"] = min(settings["images"], n)
    settings["protocol"] = (settings["images"] >= STABILITY_PROTOCOL["images"]
                            and settings["steps"] >= STABILITY_PROTOCOL["steps"]
                            and settings["restarts"] >= STABILITY_PROTOCOL["restarts"]
                            and set(STABILITY_PROTOCOL["etas"]) <= set(settings["etas"]))
    xs_, ys_ = x[:settings["images"]].to(device), y[:settings["images"]].to(device)  # the search compares on device
    probe = ys_[:1].clone().requires_grad_(True)
    if not run(probe).requires_grad:
        raise TypeError("stability=True needs a reconstructor differentiable in y (the adversarial search follows "
                        "its gradient), but its output does not depend on y through autograd; write it with torch "
                        "operations, or pass stability=False")
    start = time.perf_counter()
    study = perturbation_study(run, xs_, ys_, etas=settings["etas"], steps=settings["steps"],
                               restarts=settings["restarts"], batch=batch_size, seed=seed)
    bound = _bound(reconstructor)
    ratios = study["ratios"]
    finite = bound is not None and math.isfinite(bound)
    # a ratio is a violation only above what the certificate in floating point allows (docs/models.md)
    allowed, rounding = rounding_allowance(reconstructor, bound, settings["etas"], ratios) if finite \
        else (bound, None)
    result["stability"] = {
        "images": settings["images"], "settings": settings, "clean_psnr": stats(study["clean"]),
        "per_eta": study["per_eta"], "empirical_lipschitz": float(ratios.max()), "pairs_checked": int(ratios.size),
        "lipschitz_bound": bound,
        "ratio_to_bound": float(ratios.max() / bound) if finite and bound > 0 else None,
        "violations": int((ratios > allowed).sum()) if finite else None, "rounding": rounding,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return result
