"""Certified Lipschitz bounds of every family: never below an observed ratio, also adversarially and after
scaling the weights by 100; the constraints still hold after scaling."""

from __future__ import annotations

import math

import pytest
import torch

import invstable.nn as inn
from tests._nn_helpers import CASES, adversarial_ratio, one_thread, random_ratio, sample_shape, scale_weights  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

SLACK = 1 + 1e-9  # float64 forward passes


def build(case, features, seed):
    g = torch.Generator().manual_seed(seed)
    model = CASES[case](torch.float64, features, g)
    model(torch.zeros((1,) + sample_shape(features), dtype=torch.float64))  # set the input size
    return model.eval()


@pytest.mark.parametrize("features", ["image", "vector"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bound_holds_on_random_and_adversarial_pairs(case, features):
    g = torch.Generator().manual_seed(11)
    model = build(case, features, 0)
    bound = model.lipschitz_bound()
    assert isinstance(bound, float) and bound > 0
    shape = sample_shape(features)
    observed = max(random_ratio(model, shape, generator=g),
                   adversarial_ratio(model, shape, generator=g, starts=2, steps=40))
    assert observed <= bound * SLACK, f"{case}: observed {observed} > certified {bound}"


@pytest.mark.parametrize("features", ["image", "vector"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bound_holds_after_scaling_weights_by_100(case, features):
    g = torch.Generator().manual_seed(12)
    model = build(case, features, 1)
    scale_weights(model, 100.0)
    bound = model.lipschitz_bound()
    shape = sample_shape(features)
    observed = max(random_ratio(model, shape, generator=g),
                   adversarial_ratio(model, shape, generator=g, starts=2, steps=30, lr=0.2))
    assert observed <= bound * SLACK, f"{case}: observed {observed} > certified {bound}"
    # the constraints still hold after scaling: the certified value does not follow the weights up
    expected = {"gradient_flow": 1.0, "gradient_flow_split": 1.0, "gradient_flow_leaky_contractive": 0.81,
                "lift": 0.7}
    if case in expected:
        assert bound <= expected[case] * (1 + 1e-6)
    if case == "gradient_flow_strongly_convex":
        assert bound < 1.0
    if case in ("antisymmetric", "dense"):
        assert bound <= (1 + 0.5 * (2 + 0.1)) ** 3  # ||K|| <= 1 enforced
    if case == "resnet":
        assert bound > 10  # no constraint: the bound follows the weights


@pytest.mark.parametrize("case", ["gradient_flow", "gradient_flow_split", "gradient_flow_leaky_contractive",
                                  "gradient_flow_strongly_convex", "lift"])
def test_constrained_values(case):
    model = build(case, "image", 2)
    bound = model.lipschitz_bound()
    if case.startswith("gradient_flow") and case != "gradient_flow_strongly_convex":
        target = {"gradient_flow_leaky_contractive": 0.81}.get(case, 1.0)
        assert bound == pytest.approx(target, rel=1e-6) and bound <= target * (1 + 1e-6)
    elif case == "gradient_flow_strongly_convex":
        assert bound < 1.0
    else:
        assert bound <= 0.7 * (1 + 1e-9)


def test_resnet_bound_is_finite_but_unconstrained():
    net = inn.stable_network("resnet", channels=2, depth=2, features="vector", dtype=torch.float64)
    b = net.lipschitz_bound()
    scale_weights(net, 10.0)
    assert math.isfinite(b) and net.lipschitz_bound() > b


def test_nan_weights_raise_in_bound():
    net = inn.stable_network("gradient_flow", channels=2, depth=2, features="vector")
    with torch.no_grad():
        net.layers[1].weight_map.weight[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        net.lipschitz_bound()


def test_bound_before_first_input_is_still_valid():
    """A convolution has no warm-start vector before its first input; the bound must not assume one."""
    g = torch.Generator().manual_seed(4)
    layer = inn.GradientFlowLayer(2, step=5.0, rng=g, dtype=torch.float64)
    before = layer.lipschitz_bound()
    x = torch.randn(8, 2, 5, 5, generator=g, dtype=torch.float64)
    z = torch.randn(8, 2, 5, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        r = ((layer.eval()(x) - layer(z)).flatten(1).norm(dim=1) / (x - z).flatten(1).norm(dim=1)).max()
    assert float(r) <= before * SLACK
    assert layer.lipschitz_bound() == pytest.approx(1.0)


def test_training_mode_forward_is_certified_as_eval_map():
    """After a training-mode forward (which moves the warm-start vector), eval mode computes the same map
    and the bound certifies it."""
    g = torch.Generator().manual_seed(5)
    net = inn.stable_network("gradient_flow", channels=2, depth=2, rng=g, dtype=torch.float64).train()
    x = torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64)
    y_train = net(x)
    torch.testing.assert_close(net.eval()(x), y_train)
