"""The batched adversarial search (invstable.stability.adversarial_search) and its use in the stability benchmark:
never above a known Lipschitz constant, at least as strong as the one-level search it replaces, early stopping
recorded, warm starts across the eta levels, TV attacked directly on a tiny problem, the per-task picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invstable.stability import adversarial_perturbation, adversarial_search


def _linear(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, n, generator=g, dtype=torch.float64)
    constant = torch.linalg.matrix_norm(w, 2).item()  # the exact Lipschitz constant of y -> W y
    y = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    return (lambda v: (v.flatten(1) @ w.T).view(v.shape)), constant, y


def test_batched_search_at_least_the_old_one_and_never_above_the_constant():
    reconstruct, constant, y = _linear()
    old = adversarial_perturbation(reconstruct, y, 0.05, steps=40, restarts=2, seed=3)
    new = adversarial_search(reconstruct, y, [0.05], steps=40, restarts=2, min_steps=40, seed=3)[0]
    assert torch.all(new.ratio >= old.ratio * (1 - 1e-9))
    assert torch.all(new.ratio <= constant * (1 + 1e-9))
    assert torch.all(new.delta.flatten(1).norm(dim=1) <= 0.05 * y.flatten(1).norm(dim=1) * (1 + 1e-9))


def test_early_stopping_records_the_steps_used():
    reconstruct, constant, y = _linear(1)
    levels = adversarial_search(reconstruct, y, [0.01], steps=400, restarts=2, min_steps=10, patience=5,
                                rel_tol=1e-2)
    used = levels[0].steps
    assert used.shape == (2, 3) and used.dtype == torch.long
    assert int(used.min()) >= 10 and int(used.max()) <= 400
    assert int(used.min()) < 400  # a linear map's ratio stops rising long before the cap
    full = adversarial_search(reconstruct, y, [0.01], steps=30, restarts=2, min_steps=30)[0].steps
    assert bool((full == 30).all())  # min_steps = steps: no early stopping


def test_levels_are_warm_started_from_the_previous_worst():
    reconstruct, constant, y = _linear(2)
    calls = []

    def counted(v):
        calls.append(len(v))
        return reconstruct(v)

    levels = adversarial_search(counted, y, [0.05, 0.01], steps=20, restarts=2, min_steps=20)
    assert [lvl.eta for lvl in levels] == [0.05, 0.01]  # given order kept; searched in increasing order
    assert not levels[1].warm and levels[0].warm
    # R(y) once, then every step on the whole batch of restarts x images
    assert calls[0] == 3 and calls[1] == 6
    # the warm start is the previous level's worst perturbation: with no step at all it is found again
    small, large = adversarial_search(reconstruct, y, [0.01, 0.05], steps=1, restarts=1, min_steps=1, lr=1e-12)
    direction = lambda d: d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # noqa: E731
    torch.testing.assert_close(direction(large.delta), direction(small.delta))
    cold = adversarial_search(reconstruct, y, [0.01, 0.05], steps=1, restarts=1, min_steps=1, lr=1e-12,
                              warm_start=False)[1]
    assert not torch.allclose(direction(cold.delta), direction(small.delta))


def test_search_with_a_per_sample_argument_and_bad_input():
    reconstruct, _, y = _linear(3)
    seen = []

    def with_aux(v, aux):
        seen.append(aux[:, 0, 0, 0].tolist())
        return reconstruct(v) + 0 * aux

    aux = torch.arange(3, dtype=y.dtype).view(3, 1, 1, 1).expand_as(y).contiguous()
    adversarial_search(with_aux, y, [0.02], steps=2, restarts=2, min_steps=2, aux=aux)
    assert seen[0] == [0, 1, 2] and seen[1] == [0, 1, 2, 0, 1, 2]  # rows of aux follow the rows of y
    with pytest.raises(ValueError, match="etas must be a non-empty"):
        adversarial_search(reconstruct, y, [])
    with pytest.raises(ValueError, match="min_steps must be a positive int"):
        adversarial_search(reconstruct, y, [0.01], min_steps=0)


def test_tv_direct_attack_on_a_tiny_problem():
    from invstable.evaluation import _stability
    from invstable.evaluation._methods import Method
    from invstable.operators import Blur, gaussian_kernel
    from invstable.baselines import tv

    op = Blur(gaussian_kernel(sigma=1.0), image_size=16)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=g)
    y = op.A(x) + 0.01 * torch.randn(op.A(x).shape, generator=g)
    lam = 1e-2
    full = Method("TV (validation lambda)", "baseline", lambda v: tv(v, op, lam, max_iter=100), lambda: float("inf"),
                  "no certificate", {"lambda": lam, "max_iter": 100})
    settings = {"etas": [0.02, 0.05], "steps": 3, "restarts": 1}
    found = {}
    tik = Method("Tikhonov", "baseline", lambda v: op.A_adjoint(v), lambda: None, "not computed")
    _stability.evaluate_method(tik, x, y, settings, found=found)
    with pytest.warns(Warning):  # the full TV stops at its cap of 100 iterations here
        row = _stability.evaluate_method(full, x, y, settings, transfer=found, operator=op)
    assert row["attack"].startswith("direct (unrolled TV")
    for e in row["per_eta"]:
        assert set(e["sources"]) == {"search", "transfer"} and e["steps_used"]["adversarial"]["max"] <= 3
        # the larger loss per image: never better than either source
        assert e["adversarial_x_psnr"]["mean"] <= min(s["adversarial_x_psnr"] for s in e["sources"].values()) + 1e-6
    assert row["per_eta"][1]["warm_started"] and np.isfinite(row["empirical_lipschitz"])


def test_stability_picture_per_task(tmp_path):
    from invstable.evaluation._report import stability_section, stability_task_figure

    per_eta = [{"eta": e, "random_psnr": {"mean": 30 - e}, "adversarial_psnr": {"mean": 28 - e},
                "adversarial_x_psnr": {"mean": 27 - e}, "steps_used": {"adversarial": {"mean": 40, "max": 60,
                                                                                         "min": 20}},
                "warm_started": e > 0.01} for e in (0.01, 0.05)]
    rows = [{"method": name, "per_eta": per_eta, "clean_psnr": {"mean": 31.0}, "empirical_lipschitz": 1.0,
             "lipschitz_bound": 2.0, "bound_kind": "certified", "violations": 0} for name in ("a", "b")]
    task = {"task": "toy", "images": 1, "methods": rows}
    pics = {"a": {"eta": 0.05, "delta": np.random.default_rng(0).normal(size=(1, 12, 5)),
                  "clean": np.zeros((8, 8)), "perturbed": np.full((8, 8), 0.1)}}
    path = stability_task_figure(task, pics, tmp_path / "stability_toy.png")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="no method of toy has a picture"):
        stability_task_figure(task, {}, tmp_path / "none.png")
    payload = {"settings": {"images": 1, "etas": [0.01, 0.05], "steps": 60, "restarts": 1}, "tasks": [task]}
    text = "\n".join(stability_section(payload, ".", tmp_path))
    assert "(./stability_toy.png)" in text and "Adam steps actually used" in text
