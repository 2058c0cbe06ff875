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
from ..stability import adversarial_search, random_perturbation
from ._metrics import psnr, scores

#: the stability protocol (PROTOCOLS.md): the first 20 test images, eta in {0.5, 1, 2, 5} % of ||y||, projected
#: Adam with 200 steps from 3 random starts per search
STABILITY_PROTOCOL = {"images": 20, "etas": [0.005, 0.01, 0.02, 0.05], "steps": 200, "restarts": 3}
#: the objectives of the adversarial search: away from R(y), and away from the truth x
OBJECTIVES = ("adversarial", "adversarial_x")
#: early stopping of the searches: every start runs at least MIN_STEPS steps, then stops when its best objective
#: has not risen by REL_TOL (relative) in PATIENCE steps
MIN_STEPS, PATIENCE, REL_TOL = 50, 20, 1e-3


def _norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _ratio(out: torch.Tensor, base: torch.Tensor, d: torch.Tensor) -> np.ndarray:
    """||R(y + d) - R(y)|| / ||d|| per image, from ``out = R(y + d)`` and ``base = R(y)``."""
    return (_norm(out - base) / _norm(d).clamp_min(1e-30)).double().cpu().numpy()


def stats(v: np.ndarray) -> dict:
    """Mean, standard deviation, minimum and maximum of ``v`` as plain floats."""
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)), "max": float(np.max(v))}


def study(reconstruct, x, y, settings: dict, *, attack=None, transfer: dict | None = None, found: dict | None = None,
          batch: int = 20, seed: int = 0) -> dict:
    """The random and adversarial protocol of one reconstructor on images ``x`` (measurements ``y``).

    For each relative level eta: a Gaussian perturbation of norm eta ||y_i||, and the worst perturbations of
    :func:`invstable.stability.adversarial_search` maximising ||R(y + d) - R(y)|| ("adversarial") and
    ||R(y + d) - x|| ("adversarial_x"), all the levels and starts of ``batch`` images in one search.

    The perturbations are searched on ``attack`` (a pair ``(R', aux)``: ``R'(y, aux)`` differentiable, e.g. an
    unrolled solver warm-started at ``aux``; default: ``reconstruct`` itself) and on nothing when ``attack`` is
    False; ``transfer`` (perturbations ``found`` for another method, by (batch start, eta, objective)) adds a
    second candidate. Every candidate is evaluated on ``reconstruct``; per image the one with the larger objective
    is kept, and each source's mean PSNR is recorded in ``sources``.

    Returns ``{"clean", "per_eta", "ratios", "example", "picture", "steps_used", "sources"}``.
    """
    etas = settings["etas"]
    keys = ("random",) + OBJECTIVES
    acc = {eta: {k: [] for k in keys + tuple(f"ratio_{k}" for k in keys)} for eta in etas}
    by_source: dict = {}
    steps_used = {eta: {k: [] for k in OBJECTIVES} for eta in etas}
    warm = {eta: False for eta in etas}
    clean, example, picture = [], {}, {}
    for b0 in range(0, len(y), batch):
        xb, yb = x[b0:b0 + batch], y[b0:b0 + batch]
        with torch.no_grad():
            base = reconstruct(yb)
        clean.append(psnr(base, xb))
        candidates = {}  # source -> {(eta, key): delta}
        if attack is not False:
            fn, aux = (reconstruct, None) if attack is None else (attack[0], attack[1][b0:b0 + batch])
            searched = {}
            for key, target in zip(OBJECTIVES, (None, xb)):
                levels = adversarial_search(fn, yb, etas, target=target, steps=settings["steps"],
                                            restarts=settings["restarts"], min_steps=min(MIN_STEPS, settings["steps"]),
                                            patience=PATIENCE, rel_tol=REL_TOL, seed=seed + b0,
                                            base=base if attack is None else None, aux=aux)
                for lvl in levels:
                    searched[(lvl.eta, key)] = lvl.delta
                    steps_used[lvl.eta][key].append(lvl.steps.flatten().numpy())
                    warm[lvl.eta] = warm[lvl.eta] or lvl.warm
            candidates["search"] = searched
        if transfer is not None:
            candidates["transfer"] = {(eta, key): transfer[(b0, eta, key)] for eta in etas for key in OBJECTIVES}
        for eta in etas:
            d = random_perturbation(yb, eta, seed=seed + b0)
            with torch.no_grad():
                out = reconstruct(yb + d)
            acc[eta]["random"].append(psnr(out, xb))
            acc[eta]["ratio_random"].append(_ratio(out, base, d))
            for key, ref in zip(OBJECTIVES, (base, xb)):
                best_obj, best = None, None
                for source, deltas in candidates.items():
                    delta = deltas[(eta, key)]
                    with torch.no_grad():
                        out = reconstruct(yb + delta)
                    obj = (out - ref).flatten(1).norm(dim=1)
                    p = psnr(out, xb)
                    by_source.setdefault(source, {}).setdefault((eta, key), []).append(p)
                    if best is None:
                        best_obj, best = obj, [delta, out, p]
                    else:  # the larger loss of the sources, per image
                        take = obj > best_obj
                        best_obj = torch.where(take, obj, best_obj)
                        best[0] = torch.where(take.view((-1,) + (1,) * (delta.ndim - 1)), delta, best[0])
                        best[1] = torch.where(take.view((-1,) + (1,) * (out.ndim - 1)), out, best[1])
                        best[2] = np.where(take.numpy(), p, best[2])
                delta, out, p = best
                if found is not None:
                    found[(b0, eta, key)] = delta
                acc[eta][key].append(p)
                acc[eta][f"ratio_{key}"].append(_ratio(out, base, delta))
                if b0 == 0 and eta == max(etas):
                    if key == "adversarial_x":
                        example = {"eta": eta, "image": out[0, 0].detach().clamp(0, 1).cpu().numpy()}
                    else:  # the worst perturbation against R(y) and the change it causes (the hallucination)
                        picture = {"eta": eta, "delta": delta[0].detach().cpu().numpy(),
                                   "clean": base[0, 0].detach().cpu().numpy(),
                                   "perturbed": out[0, 0].detach().cpu().numpy()}
    clean = np.concatenate(clean)
    rows, all_ratios = [], []
    for eta in etas:
        v = {k: np.concatenate(a) for k, a in acc[eta].items()}
        all_ratios += [v[f"ratio_{k}"] for k in keys]
        row = {"eta": eta, **{f"{k}_psnr": stats(v[k]) for k in keys},
               **{f"{k}_loss_db": float(np.mean(clean - v[k])) for k in keys},
               **{f"ratio_{k}": stats(v[f"ratio_{k}"]) for k in keys}}
        if attack is not False:
            used = {k: np.concatenate(steps_used[eta][k]) for k in OBJECTIVES}
            row["steps_used"] = {k: {"mean": float(u.mean()), "max": int(u.max()), "min": int(u.min())}
                                 for k, u in used.items()}
            row["warm_started"] = bool(warm[eta])
        if len(by_source) > 1:
            row["sources"] = {src: {f"{k}_psnr": float(np.mean(np.concatenate(per[(eta, k)]))) for k in OBJECTIVES}
                              for src, per in by_source.items()}
        rows.append(row)
    return {"clean": clean, "per_eta": rows, "ratios": np.concatenate(all_ratios), "example": example,
            "picture": picture}


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
    invstable.stability.adversarial_search : the search behind ``stability=True``.

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
    study_ = study(run, xs_, ys_, settings, batch=batch_size, seed=seed)
    bound = _bound(reconstructor)
    ratios = study_["ratios"]
    finite = bound is not None and math.isfinite(bound)
    # a ratio is a violation only above what the certificate in floating point allows (docs/models.md)
    largest = float(ys_.flatten(1).norm(dim=1).max())
    allowed, rounding = rounding_allowance(reconstructor, bound, settings["etas"], ratios,
                                           largest_measurement=largest) if finite else (bound, None)
    result["stability"] = {
        "images": settings["images"], "settings": settings, "clean_psnr": stats(study_["clean"]),
        "per_eta": study_["per_eta"], "empirical_lipschitz": float(ratios.max()), "pairs_checked": int(ratios.size),
        "lipschitz_bound": bound,
        "ratio_to_bound": float(ratios.max() / bound) if finite and bound > 0 else None,
        "violations": int((ratios > allowed).sum()) if finite else None, "rounding": rounding,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return result
