"""Certificates under the attacks a review found: bounds reported before a convolution's first input, and the
train-mode call right after a weight change."""

import pytest
import torch

import invstable.nn as inn
from invstable.nn._spectral import _hash_vector

D = torch.float64
C = 8


def _basis_avoiding_the_start_vector():
    """Orthonormal columns e_1..e_7 orthogonal to the library's start vector (1x1 maps), then the start vector."""
    v0 = _hash_vector((1, C, 1, 1), dtype=D, device="cpu").reshape(C)
    noise = torch.randn(C, C - 1, dtype=D, generator=torch.Generator().manual_seed(0))
    q, _ = torch.linalg.qr(torch.cat([v0[:, None], noise], 1))
    return torch.cat([q[:, 1:], q[:, :1]], 1)


def _centre_kernel(m):
    w = torch.zeros(C, C, 3, 3, dtype=D)
    w[:, :, 1, 1] = m
    return w


def _local_ratio(f, x, iterations=40):
    """Jacobian norm at x by power iteration on J^T J (a lower bound on the Lipschitz constant)."""
    v = torch.randn(x.shape, dtype=D, generator=torch.Generator().manual_seed(1))
    v = v / v.norm()
    for _ in range(iterations):
        _, jv = torch.autograd.functional.jvp(f, x, v)
        _, jtjv = torch.autograd.functional.vjp(f, x, jv)
        v = jtjv / jtjv.norm()
    _, jv = torch.autograd.functional.jvp(f, x, v)
    return float(jv.norm())


@pytest.fixture
def hard_matrix():
    """||M|| = 2 along a direction the power iteration's start vector cannot see; 1.8 elsewhere."""
    q = _basis_avoiding_the_start_vector()
    return q @ torch.diag(torch.tensor([2.0] + [1.8] * (C - 1), dtype=D)) @ q.T


def test_lifting_bound_before_the_first_input(hard_matrix):
    lift = inn.ConstrainedConv2d(C, C, 3, bound=1.0, dtype=D, bias=False).eval()
    with torch.no_grad():
        lift.weight_map.weight.copy_(_centre_kernel(hard_matrix))
    before = lift.lipschitz_bound()
    assert _local_ratio(lift, torch.randn(1, C, 1, 1, dtype=D)) <= before
    assert _local_ratio(lift, torch.randn(1, C, 1, 1, dtype=D)) <= lift.lipschitz_bound()


def test_dense_network_bound_before_the_first_input(hard_matrix):
    net = inn.stable_network("dense", channels=C, depth=1, step=1.0, dtype=D).eval()
    with torch.no_grad():
        net.layers[0].weight_map.weight.copy_(_centre_kernel(hard_matrix))
    before = net.lipschitz_bound()
    assert _local_ratio(net, torch.zeros(1, C, 1, 1, dtype=D)) <= before


def test_antisymmetric_bound_before_the_first_input():
    q = _basis_avoiding_the_start_vector()
    k = torch.zeros(C, C, dtype=D)
    for i, j, s in [(0, 1, 2.0), (2, 3, 1.8), (4, 5, 1.8), (6, 7, 1.8)]:
        k += s * (torch.outer(q[:, i], q[:, j]) - torch.outer(q[:, j], q[:, i]))
    layer = inn.AntisymmetricLayer(C, step=20.0, max_norm=1.0, activation="tanh", dtype=D).eval()
    with torch.no_grad():
        layer.weight_map.weight.copy_(_centre_kernel(k))
    before = layer.lipschitz_bound()
    assert _local_ratio(layer, torch.zeros(1, C, 1, 1, dtype=D)) <= before


def test_training_call_after_a_weight_change_stays_within_the_bound_reported_before_it():
    layer = inn.GradientFlowLayer(2, features="vector", step=1.0, dtype=D)
    with torch.no_grad():
        layer.weight_map.weight.copy_(torch.diag(torch.tensor([1.0, 0.5], dtype=D)))
    layer.train()
    for _ in range(60):  # the warm start converges to e_1
        layer(torch.zeros(1, 2, dtype=D))
    with torch.no_grad():
        layer.weight_map.weight.copy_(torch.tensor([[0.0, 0.1], [3.0, 0.0]], dtype=D))
        layer.bias.fill_(10.0)
    before = layer.lipschitz_bound()
    x = torch.zeros(1, 2, dtype=D)
    d = torch.tensor([[1e-3, 0.0]], dtype=D)
    with torch.no_grad():
        out = layer(torch.cat([x, x + d]))  # one training-mode call maps both points
    assert float((out[1] - out[0]).norm() / d.norm()) <= before
    assert layer.lipschitz_bound() >= float((out[1] - out[0]).norm() / d.norm())


@pytest.mark.parametrize("gamma", [float("inf"), float("nan"), -0.1, True])
def test_antisymmetric_gamma_must_be_finite_and_nonnegative(gamma):
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        inn.AntisymmetricLayer(4, gamma=gamma)
