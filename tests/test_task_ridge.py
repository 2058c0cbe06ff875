"""Fine-tuning a convex ridge regulariser on a task through its minimiser (invstable.training.finetune_ridge)."""

from __future__ import annotations

import math

import pytest
import torch

import invstable
from invstable.models import VariationalInverse
from invstable.nn import ConvexRidgeRegularizer
from invstable.operators import Blur, gaussian_kernel
from invstable.training import TaskRidgeConfig, finetune_ridge, save_task_ridge
from invstable.training._ridge import minimiser_loss

from tests._nn_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(bounds, seed=0):
    reg = ConvexRidgeRegularizer((1, 3, 4), kernel_size=3, knots=11, rng=torch.Generator().manual_seed(seed),
                                 dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # slopes strictly inside (0, 1), some projected: the trained parametrisation
        reg.activation.raw_slopes.copy_(torch.rand(reg.activation.raw_slopes.shape, generator=gen) * 1.4 - 0.2)
    op = Blur(gaussian_kernel(1.2), image_size=12).to(torch.float64)
    model = VariationalInverse(reg, op, lam=0.3, scale=8.0, strong_convexity=0.05, bounds=bounds, tol=1e-12,
                               max_iter=20000)
    x = 0.2 + 0.6 * torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen)
    y = op.A(x) + 0.02 * torch.randn(x.shape, dtype=torch.float64, generator=gen)
    return model, x, y


@pytest.mark.parametrize("bounds", [None, (0.45, 0.55)])  # a box that holds some pixels at a bound
def test_implicit_weight_gradient_matches_finite_differences(bounds):
    model, x, y = _problem(bounds)
    reg = model.regularizer.requires_grad_(True)
    log_lam = torch.tensor(math.log(0.3), dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor(math.log(8.0), dtype=torch.float64, requires_grad=True)
    _, x_hat, _ = minimiser_loss(model, x, y, log_lam, log_scale, derivative_tol=1e-12)
    if bounds is not None:
        assert bool(((x_hat == bounds[0]) | (x_hat == bounds[1])).any())
    kernel = reg.kernels[0]
    slopes = reg.activation.raw_slopes
    # the unclipped slope (the projection onto [0, 1] leaves it alone) that the data use most
    free = (slopes > 0.05) & (slopes < 0.95)
    inside = torch.unravel_index(torch.where(free, slopes.grad.abs(), -1.0).argmax(), slopes.shape)
    probes = [(log_lam, (), log_lam.grad), (log_scale, (), log_scale.grad),
              (kernel, (1, 0, 0, 2), kernel.grad[1, 0, 0, 2]), (slopes, tuple(int(i) for i in inside),
                                                                       slopes.grad[inside])]
    eps = 1e-6
    for param, index, analytic in probes:
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                param[index] += sign * eps
                model.lam, model.scale = float(log_lam.exp()), float(log_scale.exp())
                values.append(float((model.solve(y)[0] - x).pow(2).mean()))
                param[index] -= sign * eps
        fd = (values[0] - values[1]) / (2 * eps)
        assert float(analytic) == pytest.approx(fd, rel=2e-4, abs=1e-10), (param.shape, index)
        assert abs(fd) > 1e-8  # the probe moves the loss: the comparison is not between two zeros


def _tiny(**kw):
    base = dict(patch=24, pool=6, batch_size=2, steps=4, validation_images=1, validate_every=2, tol=1e-2)
    return TaskRidgeConfig(**(base | kw))


def test_finetune_keeps_the_bound_resumes_exactly_and_writes_a_loadable_file(tmp_path):
    whole, rec = finetune_ridge(_tiny(), checkpoint=tmp_path / "a.pt", log=lambda *_: None)
    assert rec["steps"] == 4 and [c["step"] for c in rec["curve"]] == [0, 2, 4]
    assert whole.lipschitz_bound() == pytest.approx(10.0)  # m held at 1 / (4 * 10^2) whatever the training does
    assert float(whole.regularizer.activation.slopes().min()) >= 0.0  # convex: the certificate's premise
    assert float(whole.regularizer.activation.slopes().max()) <= 1.0
    finetune_ridge(_tiny(), checkpoint=tmp_path / "b.pt", until=2, log=lambda *_: None)
    with pytest.raises(FileExistsError, match="--resume"):
        finetune_ridge(_tiny(), checkpoint=tmp_path / "b.pt", log=lambda *_: None)
    with pytest.raises(ValueError, match="another configuration"):
        finetune_ridge(_tiny(steps=5), checkpoint=tmp_path / "b.pt", resume=True, log=lambda *_: None)
    split, rec2 = finetune_ridge(_tiny(), checkpoint=tmp_path / "b.pt", resume=True, log=lambda *_: None)
    for a, b in zip(whole.regularizer.state_dict().values(), split.regularizer.state_dict().values()):
        assert torch.equal(a, b)
    assert (whole.lam, whole.scale) == (split.lam, split.scale)
    assert [(c["step"], c["validation_psnr"]) for c in rec2["curve"]] == \
        [(c["step"], c["validation_psnr"]) for c in rec["curve"]]
    rec["recipe"] = "test"
    path = save_task_ridge(whole, rec, tmp_path / "tiny-ridge.safetensors")
    loaded = invstable.load_model(path, operator=invstable.data.task("blur-g2").operator)  # its own preset
    assert (loaded.lam, loaded.scale, loaded.strong_convexity) == pytest.approx(
        (whole.lam, whole.scale, whole.strong_convexity))
    info = invstable.models.model_info(path)
    assert info["task"] == "blur-g2" and info["validation"]["psnr"] == pytest.approx(rec["validation_psnr"])
    with pytest.raises(ValueError, match="no noise-level rule"):
        invstable.load_model(path, operator=loaded.operator, noise_level=0.01)


def test_finetune_refuses_a_task_that_is_not_shift_invariant():
    with pytest.raises(ValueError, match="shift-invariant"):
        finetune_ridge(_tiny(task="ct-30"), log=lambda *_: None)


def test_the_shipped_blur_ridge_is_certified_with_its_own_preset_and_served_to_the_benchmarks():
    from invstable.evaluation import _methods

    info = invstable.models.model_info("blur-ridge")
    assert info["task"] == "blur-g2" and info["certified"] and "train_task_ridge.py" in info["recipe"]
    assert info["lipschitz_bound"] == {"blur-g2": pytest.approx(10.0)}
    model = invstable.load_model("blur-ridge", operator=invstable.data.task("blur-g2").operator)
    assert model.lipschitz_bound() == pytest.approx(10.0) and model.info["preset"] == "blur-g2"
    (method,) = _methods.learned("blur-g2", ["blur-ridge"])
    assert method.name == "blur-ridge" and method.bound_kind == "certified" and method.warm is not None
    assert method.bound() == pytest.approx(10.0)
    assert _methods.learned("ct-30", ["blur-ridge"]) == []  # fine-tuned for Blur-G2 only
