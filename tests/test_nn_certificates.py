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


@pytest.mark.parametrize("features", ["image", "vector"])
@pytest.mark.parametrize("options, target", [({}, 1.0), ({"contraction": 0.8}, 0.8 ** 3),
                                             ({"strong_convexity": 0.2, "step_control": "split"}, 1.0)])
def test_fresh_gradient_flow_network_certifies_its_condition_from_construction(features, options, target):
    """Before any input (a convolution's estimate starts there) the certificate is already that of the family;
    after the first input it still holds and the map obeys it."""
    g = torch.Generator().manual_seed(6)
    net = inn.stable_network("gradient_flow", channels=4, depth=3, step=3.0, rng=g, dtype=torch.float64,
                             features=features, **options).eval()
    before = net.lipschitz_bound()
    assert before <= target * SLACK
    shape = (4, 6, 6) if features == "image" else (4,)
    assert random_ratio(net, shape, generator=g) <= before * SLACK
    assert net.lipschitz_bound() <= target * SLACK


def test_first_warm_start_is_calibrated_where_power_iteration_falls_short():
    """A weight whose top singular direction the start vector cannot see: power iteration alone under-estimates
    the norm, calibration lengthens the vector so that the estimate covers the certified norm."""
    from invstable.nn._spectral import _hash_vector

    c = 6
    v0 = _hash_vector((1, c, 1, 1), dtype=torch.float64, device="cpu").reshape(c)
    q, _ = torch.linalg.qr(torch.cat([v0[:, None], torch.randn(c, c - 1, dtype=torch.float64,
                                                               generator=torch.Generator().manual_seed(0))], 1))
    q = torch.cat([q[:, 1:], q[:, :1]], 1)  # e_1 .. e_5 orthogonal to the start vector
    hard = q @ torch.diag(torch.tensor([2.0] + [1.8] * (c - 1), dtype=torch.float64)) @ q.T
    layer = inn.GradientFlowLayer(c, step=10.0, dtype=torch.float64).eval()
    with torch.no_grad():
        layer.weight_map.weight.zero_()
        layer.weight_map.weight[:, :, 1, 1] = hard
    assert layer.lipschitz_bound() <= SLACK
    x = torch.randn(4, c, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    layer(x)  # the first input: the warm start is created and calibrated at 1 x 1
    assert float(layer.weight_map._v.norm()) > 1.01  # 100 iterations reach 1.8, not 2: the vector was lengthened
    estimate = float(layer.weight_map.estimate(iterate=False).detach())
    assert estimate >= layer.weight_map.norm_bound() * (1 - 1e-12)
    assert layer.lipschitz_bound() <= SLACK
    assert random_ratio(layer, (c, 1, 1), generator=torch.Generator().manual_seed(2)) <= SLACK


@pytest.mark.parametrize("family, options", [("gradient_flow", {}), ("hamiltonian", {"scheme": "symplectic_euler"}),
                                             ("antisymmetric", {}), ("resnet", {"hidden": 3})])
def test_state_dicts_with_the_old_operator_names_load_with_identical_outputs(family, options):
    g = torch.Generator().manual_seed(7)
    net = inn.stable_network(family, channels=2, depth=2, rng=g, dtype=torch.float64, **options).eval()
    x = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64)
    y = net(x)
    old = {k.replace(".weight_map.", ".operator.").replace(".weight_map_z.", ".operator_z.")
           .replace(".weight_map_y.", ".operator_y."): v for k, v in net.state_dict().items()}
    assert any(".operator" in k for k in old)
    fresh = inn.stable_network(family, channels=2, depth=2, dtype=torch.float64, **options).eval()
    assert inn.rename_legacy_keys(fresh, old).keys() == net.state_dict().keys()
    fresh.load_state_dict(old, strict=True)
    torch.testing.assert_close(fresh(x), y, rtol=0, atol=0)


def test_unknown_layer_options_are_named():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['colour'\].*valid options"):
        inn.GradientFlowLayer(2, colour="red")
    with pytest.raises(TypeError, match="margin"):
        inn.ResNetLayer(2, margin=0.1)  # nothing is estimated: the option would be ignored
    with pytest.raises(ValueError, match="features='matrix'"):
        inn.AntisymmetricLayer(2, features="matrix")
