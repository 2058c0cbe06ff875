"""Contract tests run over every registered operator: adjointness, norm bound, devices, state_dict, config."""

import math

import pytest
import torch

from invstable.operators import (
    available_operators,
    check_operator,
    make_operator,
    operator_example,
    operator_from_config,
)

from .conftest import tolerance

NAMES = [name for name in available_operators() if operator_example(name) is not None]


def test_every_builtin_operator_has_an_example():
    assert {"ct", "blur", "gradient"} <= set(NAMES)


def _dense(op, in_shape, dtype=torch.float64):
    n = math.prod(in_shape)
    basis = torch.eye(n, dtype=dtype).reshape(n, *in_shape)
    return op.A(basis).reshape(n, -1).T  # columns are A e_i


@pytest.fixture(params=NAMES)
def example(request):
    params, in_shape = operator_example(request.param)
    return request.param, make_operator(request.param, **params), in_shape


def test_adjointness(example, dtype, rng):
    _, op, in_shape = example
    x = torch.randn((3, *in_shape), generator=rng, dtype=dtype)
    ax = op.A(x)
    y = torch.randn(ax.shape, generator=rng, dtype=dtype)
    lhs, rhs = (ax * y).sum(), (x * op.A_adjoint(y)).sum()
    assert float((lhs - rhs).abs() / (ax.norm() * y.norm())) <= tolerance(dtype)
    assert ax.dtype == dtype and op.A_adjoint(y).shape == x.shape


def test_adjoint_is_the_transpose_of_the_dense_matrix(example):
    _, op, in_shape = example
    dense = _dense(op, in_shape)
    m = dense.shape[0]
    y_shape = op.A(torch.zeros((1, *in_shape), dtype=torch.float64)).shape[1:]
    basis = torch.eye(m, dtype=torch.float64).reshape(m, *y_shape)
    dense_adjoint = op.A_adjoint(basis).reshape(m, -1)  # rows are A^T e_j
    torch.testing.assert_close(dense_adjoint, dense, rtol=1e-12, atol=1e-12)


def test_norm_bound_is_an_upper_bound_and_tight(example):
    _, op, in_shape = example
    true_norm = float(torch.linalg.matrix_norm(_dense(op, in_shape), ord=2))
    report = check_operator(op, in_shape)
    assert report.norm_bound >= true_norm
    assert report.adjoint_mismatch <= 1e-12
    if report.norm_method == "exact" and op.name != "gradient":  # the gradient's sqrt(8) is a size-free bound
        assert report.norm_bound <= true_norm * (1 + 1e-5)


def test_state_dict_round_trip(example, rng):
    name, op, in_shape = example
    rebuilt = operator_from_config(op.config())
    rebuilt.load_state_dict(op.state_dict())
    x = torch.randn((2, *in_shape), generator=rng)
    torch.testing.assert_close(rebuilt.A(x), op.A(x))
    assert rebuilt.config() == op.config()


def test_device_round_trip(example, device, rng):
    _, op, in_shape = example
    x = torch.randn((2, *in_shape), generator=rng)
    expected = op.A(x)
    moved = op.to(device)
    y = moved.A(x.to(device))
    assert y.device.type == device.type
    torch.testing.assert_close(y.cpu(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(moved.A_adjoint(y).cpu(), op.to("cpu").A_adjoint(expected), rtol=1e-5, atol=1e-6)


def test_gradients_flow_through_the_operator(example, rng):
    _, op, in_shape = example
    x = torch.randn((2, *in_shape), generator=rng, dtype=torch.float64, requires_grad=True)
    y = op.A(x)
    v = torch.randn(y.shape, generator=rng, dtype=torch.float64)
    (g,) = torch.autograd.grad((y * v).sum(), x)
    torch.testing.assert_close(g, op.A_adjoint(v))


# -- the declared contract: image_shape, measurement_shape, measurement_ndim, shape checks ----------------------
def test_the_declared_shapes_are_what_the_operator_does(example, rng):
    _, op, in_shape = example
    shape = op.image_shape
    assert shape is None or (isinstance(shape, tuple) and all(type(n) is int and n > 0 for n in shape))
    if shape is not None:  # the trailing axes of the example's images are the ones the operator fixes
        assert tuple(in_shape[-len(shape):]) == shape
    x = torch.randn((2, *in_shape), generator=rng)
    y = op.A(x)
    assert tuple(op.measurement_shape(tuple(x.shape))) == tuple(y.shape)
    assert op.measurement_ndim is None or op.measurement_ndim == y.ndim
    op.check_image(x)
    op.check_measurement(y)


def test_shape_checks_refuse_another_size_and_name_the_expected_one(example, rng):
    _, op, in_shape = example
    if op.image_shape is None:
        pytest.skip("takes images of any size")
    other = (*in_shape[:-1], in_shape[-1] + 1)
    with pytest.raises(ValueError, match=r"x has shape .* takes images of shape"):
        op.check_image(torch.zeros((1, *other)))
    y = op.A(torch.randn((1, *in_shape), generator=rng))
    bad = torch.zeros((*y.shape[:-1], y.shape[-1] + 1))
    with pytest.raises(ValueError, match=r"y has shape .* produces"):
        op.check_measurement(bad)


def test_norms_are_remembered_beside_the_operator_not_in_it(example):
    _, op, _ = example
    before = dict(vars(op))
    first = op.norm_bound()
    assert op.norm_bound() == first
    assert dict(vars(op)).keys() == before.keys()
