"""``Module.apply(fn)`` works on every layer family, every stable network and the models built on them (the weight
maps once had an ``apply(x, weight)`` method that shadowed it)."""

from __future__ import annotations

import pytest
import torch

import invstable.nn as inn
from invstable.models import VariationalInverse
from invstable.operators import Blur, gaussian_kernel
from tests._nn_helpers import one_thread  # noqa: F401 (fixture)
from tests._tiny import model as tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

D = torch.float64


def _layers():
    v = dict(features="vector", dtype=D)
    return {
        "gradient_flow": lambda: inn.GradientFlowLayer(3, **v),
        "antisymmetric": lambda: inn.AntisymmetricLayer(3, **v),
        "dense": lambda: inn.DenseNetwork(3, 2, **v),
        "resnet": lambda: inn.ResNetLayer(3, hidden=4, **v),
        "verlet": lambda: inn.VerletLayer(3, **v),
        "leapfrog": lambda: inn.LeapfrogLayer(3, **v),
        "symplectic_euler": lambda: inn.SymplecticEulerLayer(3, **v),
        "lifting_conv": lambda: inn.ConstrainedConv2d(1, 3, dtype=D),
        "lifting_linear": lambda: inn.ConstrainedLinear(2, 3, dtype=D),
        "dense_weight": lambda: inn.DenseWeight(2, 3, dtype=D),
        "conv_weight": lambda: inn.ConvWeight(2, 3, dtype=D),
    }


def _reinitialise(visited):
    gen = torch.Generator().manual_seed(0)

    def fn(module):
        visited.append(module)
        if isinstance(module, inn.WeightMap):
            with torch.no_grad():
                module.weight.copy_(0.1 * torch.randn(module.weight.shape, generator=gen, dtype=module.weight.dtype))
    return fn


@pytest.mark.parametrize("name", sorted(_layers()))
def test_apply_visits_every_layer_and_its_weight_maps(name):
    layer = _layers()[name]()
    visited = []
    assert layer.apply(_reinitialise(visited)) is layer
    assert {id(m) for m in visited} == {id(m) for m in layer.modules()}
    assert any(isinstance(m, inn.WeightMap) for m in visited)


@pytest.mark.parametrize("family, options", [(f, {}) for f in sorted(inn.LAYER_FAMILIES)]
                         + [("hamiltonian", {"scheme": s}) for s in sorted(inn.SCHEMES)])
@pytest.mark.parametrize("features", ["image", "vector"])
def test_apply_on_stable_networks_then_they_still_run(family, options, features):
    net = inn.stable_network(family, channels=4, depth=2, features=features, dtype=D, **options).eval()
    visited = []
    net.apply(_reinitialise(visited))
    maps = [m for m in visited if isinstance(m, inn.WeightMap)]
    assert maps and all(float(m.weight.detach().abs().max()) < 1 for m in maps)  # the init function reached them all
    x = torch.randn((2, 4, 6, 6) if features == "image" else (2, 4), dtype=D)
    assert net(x).shape == x.shape


def test_apply_on_unrolled_inverse():
    model = tiny_model()
    visited = []
    assert model.apply(_reinitialise(visited)) is model
    assert sum(isinstance(m, inn.WeightMap) for m in visited) == sum(
        isinstance(m, inn.WeightMap) for m in model.modules()) > 0
    model.apply(lambda m: m.to(torch.float32))  # the usual kind of function: it must not raise


def test_apply_on_variational_inverse():
    op = Blur(gaussian_kernel(1.0), image_size=16).to(D)
    reg = inn.ConvexRidgeRegularizer((1, 4), kernel_size=3, knots=11, rng=torch.Generator().manual_seed(0),
                                     dtype=D)
    model = VariationalInverse(reg, op, lam=0.3, strong_convexity=0.05)
    visited = []
    assert model.apply(visited.append) is model
    assert reg in visited and reg.activation in visited
