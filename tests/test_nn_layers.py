"""Properties of the layer families (hypothesis), stable_network's registry and errors, round trips,
and the training aids (time smoothness, multi-level prolongation)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import invstable.nn as inn
from tests._nn_helpers import CASES, one_thread, sample_shape, tol  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- hypothesis properties
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), log_scale=st.floats(-3, 3), channels=st.integers(1, 3),
       hidden=st.integers(1, 4), step=st.floats(0.01, 20.0), act=st.sampled_from(sorted(inn.ACTIVATIONS)),
       features=st.sampled_from(["image", "vector"]), control=st.sampled_from(["clamp", "split"]))
def test_gradient_flow_is_non_expansive_for_any_weights(seed, log_scale, channels, hidden, step, act, features,
                                                         control):
    g = torch.Generator().manual_seed(seed)
    layer = inn.GradientFlowLayer(channels, hidden=hidden, step=step, activation=act, features=features,
                                  step_control=control, dtype=torch.float64)
    with torch.no_grad():  # arbitrary weights, then the documented refresh (as after loading weights)
        layer.weight_map.weight.copy_(torch.randn(layer.weight_map.weight.shape, generator=g, dtype=torch.float64)
                                    * 10**log_scale)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g, dtype=torch.float64))
    shape = (channels, 4, 4) if features == "image" else (channels,)
    inn.refresh_spectral_norms(layer, input_size=(4, 4) if features == "image" else None)
    layer.eval()
    x = torch.randn((32,) + shape, generator=g, dtype=torch.float64)
    z = x + torch.randn(x.shape, generator=g, dtype=torch.float64) * torch.logspace(-4, 1, 32,
                                                                                     dtype=torch.float64).reshape(
        (32,) + (1,) * len(shape))
    with torch.no_grad():
        out = (layer(x) - layer(z)).flatten(1).norm(dim=1)
    assert (out <= (x - z).flatten(1).norm(dim=1) * (1 + 1e-9)).all()
    assert layer.lipschitz_bound() <= 1 + 1e-9


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scheme=st.sampled_from(sorted(inn.SCHEMES)),
       step=st.floats(0.05, 2.0), features=st.sampled_from(["image", "vector"]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_hamiltonian_steps_are_exactly_reversible(seed, scheme, step, features, dtype):
    g = torch.Generator().manual_seed(seed)
    net = inn.stable_network("hamiltonian", channels=2, depth=4, step=step, scheme=scheme, features=features,
                             rng=g, dtype=dtype)
    x = torch.randn((3,) + sample_shape(features), generator=g).to(dtype)
    net(x)  # set input sizes
    net.eval()
    with torch.no_grad():
        a0, b0 = net.initial_state(x)
        a, b = net.forward_states(x)
        ra, rb = net.inverse_states(a, b)
    torch.testing.assert_close(ra, a0, atol=50 * tol(dtype), rtol=0)
    torch.testing.assert_close(rb, b0, atol=50 * tol(dtype), rtol=0)


def _smooth_network(family, depth, seed, **kw):
    """A network whose weights are a smooth (linear) function of time on [0, T], T = depth * step."""
    g = torch.Generator().manual_seed(seed)
    net = inn.stable_network(family, channels=2, depth=depth, step=1.0 / depth, features="vector", rng=g,
                             dtype=torch.float64, **kw)
    start = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5
             for n, p in net.layers[0].named_parameters()}
    end = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5
           for n, p in net.layers[0].named_parameters()}
    with torch.no_grad():
        for j, layer in enumerate(net.layers):
            t = j / depth
            for n, p in layer.named_parameters():
                p.copy_((1 - t) * start[n] + t * end[n])
    inn.refresh_spectral_norms(net)
    return net.eval()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1),
       family=st.sampled_from(["gradient_flow", "antisymmetric", "resnet", "verlet", "leapfrog",
                               "symplectic_euler"]))
def test_prolongation_reproduces_the_function_to_discretisation_accuracy(seed, family):
    kw = {}
    if family in inn.SCHEMES:
        kw = {"scheme": family}
        family = "hamiltonian"
    coarse = _smooth_network(family, 8, seed, **kw)
    fine = inn.prolong(coarse)
    finer = inn.prolong(fine)
    assert len(fine.layers) == 16 and fine.layers[0].step == pytest.approx(coarse.layers[0].step / 2)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        y0, y1, y2 = coarse(x), fine(x), finer(x)
    d1 = (y1 - y0).norm() / y0.norm()
    d2 = (y2 - y1).norm() / y0.norm()
    # same ODE, Euler-type steps of h, h/2, h/4: differences shrink like h (first order)
    assert d1 < 0.2
    assert d2 <= 0.7 * d1 + 1e-12


def test_prolong_interpolates_linearly_and_keeps_input():
    net = inn.stable_network("resnet", channels=2, depth=2, features="vector", dtype=torch.float64)
    w0, w1 = (layer.weight_map.weight.detach().clone() for layer in net.layers)
    fine = inn.prolong(net)
    weights = [layer.weight_map.weight.detach() for layer in fine.layers]
    torch.testing.assert_close(weights[0], w0)
    torch.testing.assert_close(weights[1], (w0 + w1) / 2)
    torch.testing.assert_close(weights[2], w1)
    torch.testing.assert_close(weights[3], w1)
    assert len(net.layers) == 2 and net.layers[0].step == 1.0


def test_prolong_rejects_dense():
    with pytest.raises(TypeError, match="dense"):
        inn.prolong(inn.stable_network("dense", channels=2, depth=2))


def test_time_smoothness_matches_definition_and_is_differentiable():
    net = inn.stable_network("antisymmetric", channels=2, depth=3, features="vector", dtype=torch.float64)
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.normal_()
    reg = inn.time_smoothness(net)
    expected = sum(((b.weight_map.weight - a.weight_map.weight) ** 2).sum() + ((b.bias - a.bias) ** 2).sum()
                   for a, b in zip(net.layers[:-1], net.layers[1:]))
    torch.testing.assert_close(reg, expected)
    no_bias = inn.time_smoothness(net, include_bias=False)
    assert float(no_bias.detach()) < float(reg.detach())
    torch.testing.assert_close(inn.time_smoothness(net, scale_by_step=True), reg / net.layers[0].step)
    reg.backward()
    assert net.layers[1].weight_map.weight.grad is not None


# ---------------------------------------------------------------- stable_network contract
@pytest.mark.parametrize("family", sorted(inn.LAYER_FAMILIES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_family_maps_images_to_same_shape_and_dtype(family, dtype):
    net = inn.stable_network(family, channels=3, depth=2, step=0.5, dtype=dtype)
    x = torch.randn(2, 3, 6, 5, dtype=dtype)
    y = net(x)
    assert y.shape == x.shape and y.dtype == dtype
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad and "mixing" not in str(p.shape))
    assert isinstance(net.lipschitz_bound(), float)


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_round_trip(case):
    g = torch.Generator().manual_seed(3)
    a = CASES[case](torch.float64, "image", g)
    x = torch.randn((2,) + sample_shape("image"), dtype=torch.float64)
    a.train()(x)
    a.eval()
    b = CASES[case](torch.float64, "image", torch.Generator().manual_seed(99)).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x))
    assert b.lipschitz_bound() == pytest.approx(a.lipschitz_bound(), rel=1e-12)


def test_to_dtype_moves_buffers():
    net = inn.stable_network("gradient_flow", channels=2, depth=2)
    net(torch.randn(1, 2, 4, 4))
    net = net.to(torch.float64)
    assert all(buf.dtype == torch.float64 for buf in net.buffers())
    assert net(torch.randn(1, 2, 4, 4, dtype=torch.float64)).dtype == torch.float64


def test_unknown_family_lists_valid_names():
    with pytest.raises(ValueError, match="valid families: .*gradient_flow"):
        inn.stable_network("unet", channels=2, depth=2)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['gama'\].*valid options"):
        inn.stable_network("antisymmetric", channels=2, depth=2, gama=0.1)
    with pytest.raises(TypeError, match="aux_channels.*scheme 'leapfrog'"):
        inn.stable_network("hamiltonian", channels=2, depth=2, scheme="leapfrog", aux_channels=3)
    with pytest.raises(ValueError, match="valid schemes"):
        inn.stable_network("hamiltonian", channels=2, depth=2, scheme="rk4")


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        inn.stable_network("resnet", 2, 2)  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=0), "depth"), (dict(channels=0), "channels"), (dict(step=-1.0), "step"),
    (dict(step=math.nan), "step"), (dict(activation="sigmoid"), "valid names"),
    (dict(features="graph"), "features"),
])
def test_bad_arguments(kwargs, match):
    args = dict(channels=2, depth=2) | kwargs
    with pytest.raises(ValueError, match=match):
        inn.stable_network("gradient_flow", **args)


def test_bad_inputs_say_what_was_received():
    net = inn.stable_network("gradient_flow", channels=3, depth=1)
    with pytest.raises(ValueError, match="has 2 channels.*channels=3"):
        net(torch.randn(1, 2, 4, 4))
    with pytest.raises(TypeError, match="dtype torch.int64"):
        net(torch.ones(1, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="float64 but the layer's weights are torch.float32"):
        net(torch.ones(1, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(1, 3\)"):
        net(torch.ones(1, 3))
    with pytest.raises(ValueError, match="contraction"):
        inn.GradientFlowLayer(2, contraction=1.5)
    with pytest.raises(ValueError, match="max_step_norm"):
        inn.VerletLayer(2, max_step_norm=2.5)


def test_split_control_takes_enough_substeps():
    g = torch.Generator().manual_seed(0)
    layer = inn.GradientFlowLayer(2, step=10.0, step_control="split", features="vector", rng=g,
                                  dtype=torch.float64)
    sigma = layer.weight_map.eval().estimate().item()
    assert layer.substeps == math.ceil(10.0 * sigma**2 / 2)
    assert layer.substeps > 1
    assert layer.lipschitz_bound() <= 1 + 1e-12


def test_lifting_layer_rescales_only_when_needed():
    g = torch.Generator().manual_seed(0)
    lift = inn.ConstrainedConv2d(1, 4, bound=1e3, rng=g, dtype=torch.float64)
    x = torch.randn(2, 1, 6, 6, generator=g, dtype=torch.float64)
    y = lift.eval()(x)
    ref = torch.nn.functional.conv2d(x, lift.weight_map.weight, padding=1) + lift.bias
    torch.testing.assert_close(y, ref)
    assert lift.lipschitz_bound() == pytest.approx(lift.weight_map.norm_bound())
