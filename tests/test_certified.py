"""Issue 12's pieces: the learned first guess, contractive blocks whose bound does not grow with the iterations,
training in stages (``until`` then resume), and ``load_model(task=...)``."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import invstable
from invstable.models._initial import apply_filter, chebyshev_coefficients
from invstable.stability import lipschitz_search
from invstable.training import load_checkpoint, train

from ._tiny import TinyPairs, config, model, operator

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------------- first guess
def test_learned_first_guess_starts_as_the_tikhonov_filter_and_is_trained():
    y = TinyPairs(3).y
    learned, fixed = model(init="learned"), model(init="tikhonov")
    fixed.load_state_dict(learned.state_dict(), strict=False)
    assert torch.allclose(learned(y), fixed(y), atol=1e-4)  # the basis sum and Clenshaw round differently (float32)
    assert learned.lipschitz_bound() == pytest.approx(fixed.lipschitz_bound())
    learned(y).pow(2).sum().backward()
    assert learned.filter_correction.grad is not None and learned.filter_correction.grad.abs().sum() > 0


def test_tensor_coefficients_give_the_same_filter_as_an_array():
    op = operator()
    coef = chebyshev_coefficients(0.01, 8, 1.0)
    y = TinyPairs(2).y
    assert torch.allclose(apply_filter(op, y, coef, 1.0), apply_filter(op, y, torch.as_tensor(coef).float(), 1.0),
                          atol=1e-6)


def test_learned_first_guess_norm_is_certified_after_training_moves_it():
    m = model(init="learned", iterations=1).eval()
    with torch.no_grad():
        m.filter_correction.copy_(torch.randn(m.filter_correction.shape, generator=torch.Generator().manual_seed(1)))
    m(TinyPairs(1).y)
    # the first guess alone: the linear map p(A^T A) A^T; its exact norm from the operator's singular values
    coef, top, certified = m._filter()
    op = operator()
    y = TinyPairs(4, seed=2).y.double()
    ratio = lipschitz_search(lambda v: apply_filter(op, v, coef, top), y, radius=0.5, steps=40, restarts=2)
    assert 0 < float(ratio.max()) <= certified
    # the certified value is above the filter's gain on a fine grid of singular values
    grid = np.linspace(0, m.operator_norm(), 20001)
    exact_on_grid = np.abs(grid * np.polynomial.chebyshev.chebval(2 * grid ** 2 / top - 1, coef)).max()
    assert certified >= exact_on_grid


# ---------------------------------------------------------------------------------------------- contraction
def test_contractive_bound_tends_to_a_limit_instead_of_growing_with_the_iterations():
    y = TinyPairs(1).y
    c, bounds = 0.8, {}
    for k in (4, 12, 40):
        m = model(iterations=k, contraction=c, max_step=0.5, channels=2).eval()
        m(y)
        bounds[k] = m.lipschitz_bound()
        g = m.steps().max().item() * m.operator_norm()
        first = m._filter()[2]
        assert bounds[k] <= c ** k * first + c * g * (1 - c ** k) / (1 - c) + 1e-9
    assert bounds[40] <= 0.8 * 1.0 / (1 - 0.8) + 1e-3  # the limit c g / (1 - c) with g <= 1
    free = model(iterations=40, max_step=0.5, channels=2).eval()
    free(y)
    assert free.lipschitz_bound() > 5 * bounds[40]  # without contraction: B_0 + K g


def test_contractive_model_certificate_holds_against_adversarial_search():
    torch.manual_seed(0)
    m = model(iterations=12, contraction=0.9, init="learned", channels=4, hidden=12)
    m = train(m, TinyPairs(16), config=config(steps=12, lr=3e-2, checkpoint_every=100)).model.eval()
    with torch.no_grad():  # push the weights and the first guess up: the bound must follow
        for name, p in m.named_parameters():
            if "weight" in name:
                p.mul_(5.0)
        m.filter_correction.add_(0.5)
    m.refresh()
    for p in m.parameters():
        p.requires_grad_(False)
    bound = m.lipschitz_bound()
    assert math.isfinite(bound)
    y = TinyPairs(4, seed=3).y
    ratio = lipschitz_search(m, y, radius=0.5, steps=60, restarts=2)
    assert 0 < float(ratio.max()) <= bound


def test_budgeted_contraction_keeps_the_worst_case_within_the_budget():
    mod = _script("train_certified")
    for k, first, budget in ((10, 7.07, 15.3), (20, 5.0, 8.5), (3, 1.0, 100.0)):
        c = mod.contraction_for(budget, k, 1.0, first)
        assert 0 < c <= 1
        assert mod.worst_bound(c, k, 1.0, first) <= budget + 1e-9
        if c < 1:  # the largest such c: a little more breaks the budget
            assert mod.worst_bound(min(1.0, c + 1e-6), k, 1.0, first) > budget - 1e-6


# ---------------------------------------------------------------------------------------------- staged training
def test_training_until_a_step_then_resume_equals_one_run(tmp_path):
    data = TinyPairs(16)
    cfg = config(steps=6, validate_every=3, checkpoint_every=2)
    torch.manual_seed(0)
    whole = train(model(init="learned"), data, validation=data, config=cfg, checkpoint=tmp_path / "a.pt").model
    torch.manual_seed(0)
    first = train(model(init="learned"), data, validation=data, config=cfg, checkpoint=tmp_path / "b.pt", until=3)
    assert first.steps == 3 and load_checkpoint(tmp_path / "b.pt")["step"] == 3
    rest = train(model(init="learned"), data, validation=data, config=cfg, checkpoint=tmp_path / "b.pt",
                 resume=True).model
    for (k, a), (_, b) in zip(sorted(whole.state_dict().items()), sorted(rest.state_dict().items())):
        assert torch.equal(a, b), k
    seconds = [h["seconds"] for h in load_checkpoint(tmp_path / "b.pt")["history"]]
    assert seconds == sorted(seconds) and seconds[-1] > 0


# ---------------------------------------------------------------------------------------------- load_model(task=)
def test_load_model_by_task_returns_the_recommended_certified_model():
    table = invstable.models.recommended()
    if not table:
        pytest.skip("no recommendation file in this installation")
    for task, choice in table.items():
        assert choice["name"] in choice["candidates"]
        best = max(choice["candidates"], key=lambda n: choice["candidates"][n]["validation_psnr"])
        assert choice["name"] == best
        for row in choice["candidates"].values():
            assert row["lipschitz_bound"] is not None and math.isfinite(row["lipschitz_bound"])
    task = sorted(table)[0]
    m = invstable.load_model(task="blur-g2" if "blur-g2" in table else task)
    assert math.isfinite(m.lipschitz_bound())
    assert m.info["recommended_for"] in table and "selection" in m.info


def test_load_model_by_task_refuses_unknown_tasks_and_mixed_arguments():
    with pytest.raises(ValueError, match="no recommended model"):
        invstable.load_model(task="mri-4x")
    with pytest.raises(ValueError, match="either a name or a task"):
        invstable.load_model("ct30-gradflow", task="ct-30")
    with pytest.raises(TypeError, match="needs a model name"):
        invstable.load_model()


def test_anchored_contraction_pulls_towards_the_first_guess_and_its_bound_holds():
    y = TinyPairs(4, seed=5).y
    c, a = 0.8, 0.2
    m = model(iterations=8, contraction=c, anchor=a, channels=2, max_step=0.5).eval()
    free = model(iterations=8, contraction=c, channels=2, max_step=0.5).eval()
    free.load_state_dict(m.state_dict())
    with torch.no_grad():
        x0 = m.first_guess(y)
        # with the anchor the output stays near the first guess; without it the contraction shrinks it to zero
        assert (m(y) - x0).norm() < (free(y) - x0).norm()
    first, g = m._filter()[2], m.steps().max().item() * m.operator_norm()
    bound = m.lipschitz_bound()
    assert bound <= (c * g + a * first) / (1 - c) + first + 1e-9  # the limit, plus the decaying first term
    for p in m.parameters():
        p.requires_grad_(False)
    ratio = lipschitz_search(m, y, radius=0.5, steps=40, restarts=2)
    assert 0 < float(ratio.max()) <= bound


def test_anchor_is_checked():
    with pytest.raises(ValueError, match="anchor must be"):
        model(anchor=1.5)
    with pytest.raises(ValueError, match="needs init"):
        model(anchor=0.1, init="zero")


# ---------------------------------------------------------------------------------------------- capacity
def test_pixel_unshuffle_is_an_isometry_and_a_resampled_block_keeps_its_bound():
    from invstable.nn import Resampled, stable_network

    x, z = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    u = torch.nn.functional.pixel_unshuffle
    assert torch.allclose(u(x, 2).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))
    block = Resampled(stable_network("gradient_flow", channels=16, depth=2, hidden=24), 2).eval()
    block(x)
    assert block.lipschitz_bound() == pytest.approx(block.network.lipschitz_bound())
    with torch.no_grad():
        ratio = (block(x) - block(z)).flatten(1).norm(dim=1) / (x - z).flatten(1).norm(dim=1)
    assert float(ratio.max()) <= block.lipschitz_bound()
    with pytest.raises(ValueError, match="divisible by 2"):
        block(torch.randn(1, 4, 7, 8))


@pytest.mark.parametrize("options", [{"scales": (1, 2)}, {"activation": "spline"}],
                         ids=["multiscale", "spline"])
def test_wider_models_certificate_holds_against_adversarial_search(options):
    torch.manual_seed(0)
    m = model(iterations=4, channels=2, hidden=16, **options)
    m = train(m, TinyPairs(16), config=config(steps=10, lr=3e-2, checkpoint_every=100)).model.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    bound = m.lipschitz_bound()
    y = TinyPairs(4, seed=6).y
    ratio = lipschitz_search(m, y, radius=0.5, steps=40, restarts=2)
    assert 0 < float(ratio.max()) <= bound


def test_spline_activations_stay_monotone_and_1_lipschitz_whatever_their_weights():
    from invstable.nn import GradientFlowLayer

    layer = GradientFlowLayer(2, hidden=6, activation="spline", dtype=torch.float64)
    with torch.no_grad():
        layer.spline.raw_slopes.normal_(0, 3)  # slopes far outside [0, 1] before the projection
    t = torch.linspace(-4, 4, 801, dtype=torch.float64).view(1, 1, -1).repeat(1, 6, 1)
    with torch.no_grad():
        s = layer.spline(t)
    d = s.diff(dim=-1) / t.diff(dim=-1)
    assert float(d.min()) >= -1e-9 and float(d.max()) <= 1 + 1e-9
