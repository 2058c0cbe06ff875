"""Regressions of the fault sweep (issue 15) in the operators, the baselines and the stability tools: each test
failed before its fix. Bad input must give a clear error or a correct result, never a traceback from deep inside
or a silently wrong answer."""

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from deepinv.physics import LinearPhysics
from torch.func import jacfwd, jacrev, jvp, vmap

import invstable
from invstable import Tikhonov, choose_alpha, fbp, tikhonov, tv
from invstable.operators import (
    AdjointMismatchError,
    Blur,
    CallableOperator,
    Gradient,
    MatrixOperator,
    ParallelBeamCT,
    available_operators,
    check_operator,
    gaussian_kernel,
    make_operator,
    norm_bound,
    operator_example,
)
from invstable.data import InsufficientMemoryError
from invstable.data import _memory
from invstable.operators.functional._radon import projector_matrix, projector_memory
from invstable.stability import adversarial_perturbation, lipschitz_search, random_perturbation


def _registry_operators():
    """Every registered operator with an example, and the matrix operators (dense and sparse)."""
    ops = []
    for name in available_operators():
        example = operator_example(name)
        if example is not None:
            params, in_shape = example
            ops.append(pytest.param(lambda p=params, n=name: make_operator(n, **p), in_shape, id=name))
    mat = torch.randn(7, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ops.append(pytest.param(lambda: MatrixOperator(mat, in_shape=(1, 2, 3)), (1, 2, 3), id="matrix"))
    ops.append(pytest.param(lambda: MatrixOperator(sp.csr_matrix(mat.numpy()), in_shape=(1, 2, 3)), (1, 2, 3),
                            id="sparse-matrix"))
    ops.append(pytest.param(lambda: Blur(gaussian_kernel(1.0), 9, boundary="reflect"), (1, 9, 9), id="blur-reflect"))
    return ops


class _Scaled(LinearPhysics):
    """A deepinv physics whose adjoint is ``factor`` times the true one (a 20 % error by default)."""

    def __init__(self, inner, factor=1.2):
        super().__init__()
        self.inner, self.factor, self.calls = inner, factor, 0

    def A(self, x, **kwargs):
        self.calls += 1
        return self.inner.A(x)

    def A_adjoint(self, y, **kwargs):
        return self.factor * self.inner.A_adjoint(y)


class _WrongAdjointCT(ParallelBeamCT):
    def A_adjoint(self, y, **kwargs):
        return 1.2 * super().A_adjoint(y)


# --- 4: the baselines refuse an operator whose adjoint is wrong ------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda y, op: tikhonov(y, op, 0.1),
    lambda y, op: Tikhonov(op, 0.1)(y),
    lambda y, op: tikhonov(y.double(), op, 0.1),
    lambda y, op: choose_alpha(y, op, noise_level=0.01),
    lambda y, op: choose_alpha(y, op, rule="gcv"),
    lambda y, op: tv(y, op, 0.01, max_iter=3),
    lambda y, op: Tikhonov(op, 0.1).lipschitz_bound((1, *y.shape[1:])),
], ids=["tikhonov", "Tikhonov", "tikhonov-float64", "discrepancy", "gcv", "tv", "lipschitz_bound"])
def test_baselines_refuse_a_wrong_adjoint(call):
    op = _Scaled(Blur(gaussian_kernel(1.0), 12, boundary="reflect"))
    y = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with pytest.raises(AdjointMismatchError, match=r"_Scaled: relative adjoint mismatch .* exceeds the tolerance"):
        call(y, op)


def test_fbp_and_a_tikhonov_regularizer_refuse_a_wrong_adjoint():
    op = _WrongAdjointCT(16, 5)
    y = op.A(torch.rand(1, 1, 16, 16))
    with pytest.raises(AdjointMismatchError, match="_WrongAdjointCT"):
        fbp(y, op)
    blur = Blur(gaussian_kernel(1.0), 12)
    with pytest.raises(AdjointMismatchError, match="regularizer"):
        tikhonov(torch.rand(1, 1, 12, 12), blur, 0.1, regularizer=_Scaled(Gradient()))


def test_the_adjoint_verdict_is_measured_once_and_kept_beside_the_operator():
    op = _Scaled(Blur(gaussian_kernel(1.0), 12, boundary="reflect"), factor=1.0)
    before = set(vars(op))
    y = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    tikhonov(y, op, 0.1)
    first = op.calls
    tikhonov(y, op, 0.1)
    assert op.calls - first == first - 3  # the second call pays for its solve only, not for the 3 probes
    norm_bound(op, (1, 12, 12))
    measured = op.calls
    norm_bound(op, (1, 12, 12))
    assert op.calls == measured
    assert set(vars(op)) == before  # nothing was written into the user's object


def test_a_changed_operator_is_checked_again():
    op = _Scaled(Blur(gaussian_kernel(1.0), 12, boundary="reflect"), factor=1.0)
    y = torch.rand(1, 1, 12, 12)
    tikhonov(y, op, 0.1)
    op.factor = 1.2  # not a parameter: the verdict cannot see it, but a new buffer makes a new state
    op.register_buffer("marker", torch.zeros(1))
    with pytest.raises(AdjointMismatchError):
        tikhonov(y, op, 0.1)


# --- 9: the tolerance follows the precision the operator computes in -------------------------------------------
def test_check_operator_accepts_deepinv_tomography_fresh_and_used():
    import deepinv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deepinv's own warnings about its defaults
        op = deepinv.physics.Tomography(angles=8, img_width=12, normalize=True)
    fresh = check_operator(op, (1, 12, 12))
    op.A(torch.rand(1, 1, 12, 12))
    used = check_operator(op, (1, 12, 12))
    for report in (fresh, used):
        assert report.dtype == torch.float32 and report.tol == 1e-4


def test_an_operator_returning_float32_is_held_to_the_float32_tolerance():
    mat = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    op = CallableOperator(lambda x: x.float() @ mat.T, lambda y: y.float() @ mat, (4,))
    report = check_operator(op, (4,))
    assert report.dtype == torch.float32 and report.tol == 1e-4
    with pytest.raises(AdjointMismatchError, match="computes in float32"):
        CallableOperator(lambda x: x.float() @ mat.T, lambda y: 1.01 * (y.float() @ mat), (4,))


# --- 10: a batch of zero -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("factory, in_shape", _registry_operators())
def test_operators_take_an_empty_batch(factory, in_shape):
    op = factory()
    x = torch.zeros((0, *in_shape))
    y = op.A(x)
    assert y.shape[0] == 0 and op.A_adjoint(y).shape == x.shape


@pytest.mark.parametrize("call", [
    lambda y, op: tikhonov(y, op, 0.1),
    lambda y, op: tikhonov(y, op, 0.1, regularizer="gradient"),
    lambda y, op: tv(y, op, 0.1),
], ids=["tikhonov", "tikhonov-gradient", "tv"])
@pytest.mark.parametrize("op", [ParallelBeamCT(16, 5), Blur(gaussian_kernel(1.0), 12)], ids=["ct", "blur"])
def test_baselines_return_an_empty_batch(call, op):
    image = op.image_shape
    y = torch.zeros(op.measurement_shape((0, 1, *image)))
    assert call(y, op).shape == (0, 1, *image)


def test_fbp_choose_alpha_and_lipschitz_bound_on_an_empty_batch():
    op = ParallelBeamCT(16, 5)
    y = torch.zeros(0, 1, 23, 5)
    assert fbp(y, op).shape == (0, 1, 16, 16)
    assert fbp(np.zeros((0, 23, 5)), op).shape == (0, 16, 16)
    assert choose_alpha(y, op, noise_level=0.1).shape == (0,)
    assert choose_alpha(y, op, rule="gcv").shape == (0,)
    assert choose_alpha(torch.zeros(0, 1, 12, 12), Blur(gaussian_kernel(1.0), 12), rule="gcv").shape == (0,)
    with pytest.raises(ValueError, match=r"y_shape must be the shape of a batch of at least one measurement"):
        Tikhonov(op, 0.1).lipschitz_bound((0, 1, 23, 5))


def test_stability_tools_on_an_empty_batch():
    y = torch.zeros(0, 1, 4, 4)
    found = adversarial_perturbation(lambda v: 2 * v, y, 0.1)
    assert found.delta.shape == y.shape and found.ratio.shape == (0,)
    assert lipschitz_search(lambda v: 2 * v, y).shape == (0,)
    assert random_perturbation(y, 0.1).shape == y.shape


# --- 13: a projector too large for the machine is refused before it is built --------------------------------------
def test_ct_refuses_a_projector_larger_than_the_memory(monkeypatch):
    monkeypatch.setattr(_memory, "available_memory", lambda: 8 * 2**30)
    with pytest.raises(InsufficientMemoryError, match=r"projector of ParallelBeamCT\(image_size=4096, angles=180.*"
                                                      r"needs about \d+ GiB.*only 8 GiB is available.*fewer angles"):
        ParallelBeamCT(4096, 180)
    with pytest.raises(ValueError, match="needs about"):  # a ValueError too, which command lines report cleanly
        ParallelBeamCT(3000, 90)


def test_ct_memory_estimate_is_close_to_the_measured_peak():
    import tracemalloc

    tracemalloc.start()
    try:
        proj = projector_matrix(24, np.linspace(0, 180, 10, endpoint=False), 34)
        proj.T.tocsr()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.7 * peak <= projector_memory(24, 10, 34) <= 1.5 * peak


def test_the_back_projector_is_checked_too(monkeypatch):
    op = ParallelBeamCT(19, 7)  # a geometry no other test builds: its back-projector is not cached yet
    y = op.A(torch.rand(1, 1, 19, 19))
    monkeypatch.setattr(_memory, "available_memory", lambda: 1000)
    with pytest.raises(MemoryError, match="back-projector"):
        fbp(y, op)


# --- 14: a kernel that is all zeros or not finite -------------------------------------------------------------
def test_blur_refuses_a_zero_or_non_finite_kernel():
    with pytest.raises(ValueError, match=r"kernel of shape \(3, 3\) is all zeros"):
        Blur(torch.zeros(3, 3), 8)
    with pytest.raises(ValueError, match="NaN or Inf"):
        Blur(torch.full((3, 3), float("nan")), 8)
    with pytest.raises(ValueError, match="all zeros"):
        make_operator("blur", image_size=8, kernel=[[0.0, 0.0], [0.0, 0.0]])
    blur = Blur(gaussian_kernel(1.0), 8)
    with pytest.raises(RuntimeError, match="all zeros or not finite"):
        blur.load_state_dict({"kernel": torch.zeros_like(blur.kernel)})
    blur.kernel.mul_(0)  # changed in place after it was built: its norm (what models divide by) says so
    with pytest.raises(ValueError, match="all zeros"):
        blur.norm_bound()


# --- 15: a plain function where an operator is expected -------------------------------------------------------
def _forward(x):
    return 2 * x


@pytest.mark.parametrize("call", [
    lambda f: check_operator(f, (4,)),
    lambda f: norm_bound(f, (4,)),
    lambda f: choose_alpha(torch.rand(1, 4), f, noise_level=0.1),
    lambda f: invstable.operators._norms.power_norm(f, (4,)),
])
def test_a_function_is_not_an_operator(call):
    with pytest.raises(TypeError, match=r"must be a linear operator with A and A_adjoint .*got the function "
                                        r"'_forward'.*as_operator\(\(forward, adjoint\), in_shape="):
        call(_forward)
    with pytest.raises(TypeError, match=r"got a \(forward, adjoint\) pair"):
        check_operator((_forward, _forward), (4,))


# --- 17: torch.func transforms go through the operators and Tikhonov -----------------------------------------
@pytest.mark.parametrize("factory, in_shape", _registry_operators())
def test_operators_work_under_torch_func(factory, in_shape):
    op = factory()
    x = torch.rand((2, *in_shape), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = torch.rand_like(x)
    _, tangent = jvp(op.A, (x,), (v,))
    torch.testing.assert_close(tangent, op.A(v))  # linear: the derivative is A itself
    torch.testing.assert_close(vmap(op.A)(x[:, None]), op.A(x)[:, None])
    y = op.A(x)
    torch.testing.assert_close(vmap(op.A_adjoint)(y[:, None]), op.A_adjoint(y)[:, None])
    jac = jacrev(op.A)(x[:1]).reshape(y[0].numel(), x[0].numel())
    torch.testing.assert_close(jacfwd(op.A)(x[:1]).reshape(jac.shape), jac)
    jac_t = jacrev(op.A_adjoint)(y[:1]).reshape(x[0].numel(), y[0].numel())
    torch.testing.assert_close(jac_t, jac.T)  # and the Jacobian of the adjoint is the transposed one


def test_ct_has_second_derivatives():
    op = ParallelBeamCT(8, 3)
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    grad, = torch.autograd.grad(op.A(x).square().sum(), x, create_graph=True)
    hvp, = torch.autograd.grad((grad * x).sum(), x)
    torch.testing.assert_close(hvp, 4 * op.A_adjoint(op.A(x.detach())))  # d/dx <2 A^T A x, x> = 4 A^T A x


@pytest.mark.parametrize("op", [ParallelBeamCT(8, 4), Blur(gaussian_kernel(1.0), 8)], ids=["cg", "fft"])
def test_tikhonov_works_under_torch_func(op):
    solver = Tikhonov(op, torch.tensor([0.05, 0.2], dtype=torch.float64), tol=1e-12, max_iter=500)
    y = op.A(torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    d = torch.rand_like(y)
    _, tangent = jvp(solver, (y,), (d,))
    torch.testing.assert_close(tangent, solver(d))  # linear in y
    stacked = torch.stack([y, d])
    torch.testing.assert_close(vmap(solver)(stacked), torch.stack([solver(y), solver(d)]))
    jac = jacrev(lambda v: solver(v)[:1])(y)  # rows of sample 0 only depend on sample 0
    assert jac.shape == (1, 1, 8, 8, *y.shape) and float(jac[..., 1, :, :, :].abs().max()) == 0.0


# --- 18: reprs tell operators apart ----------------------------------------------------------------------------
def test_reprs_carry_what_distinguishes_operators():
    cts = [ParallelBeamCT(16, 30), ParallelBeamCT(16, 60), ParallelBeamCT(16, list(np.arange(30) * 6.0 + 1)),
           ParallelBeamCT(16, 30, detectors=30), ParallelBeamCT(16, 30, normalize=False)]
    assert len({repr(op) for op in cts}) == len(cts)
    assert "angles=30" in repr(cts[0]) and "digest" in repr(cts[2])
    blurs = [Blur(gaussian_kernel(1.0, 5), 16), Blur(gaussian_kernel(1.5, 5), 16),
             Blur(gaussian_kernel(1.0, 5), 16, boundary="reflect")]
    assert len({repr(op) for op in blurs}) == len(blurs)
    assert repr(Blur(gaussian_kernel(1.0, 5), 16)) == repr(blurs[0])  # equal operators print alike
    mats = [MatrixOperator(np.eye(3)), MatrixOperator(2 * np.eye(3)), MatrixOperator(sp.csr_matrix(np.eye(3)))]
    assert len({repr(op) for op in mats}) == len(mats)


# --- 19: complex input is named as such ------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda z: ParallelBeamCT(16, 5).A(z),
    lambda z: Blur(gaussian_kernel(1.0), 16).A(z),
    lambda z: Gradient().A(z),
    lambda z: MatrixOperator(np.eye(256)).A(z.reshape(1, 256)),
    lambda z: tikhonov(z, Blur(gaussian_kernel(1.0), 16), 0.1),
    lambda z: tv(z, Blur(gaussian_kernel(1.0), 16), 0.1),
    lambda z: tikhonov(z.numpy(), Blur(gaussian_kernel(1.0), 16), 0.1),
    lambda z: adversarial_perturbation(lambda v: v, z, 0.1),
])
def test_complex_input_is_reported_as_complex(call):
    z = torch.ones(1, 1, 16, 16, dtype=torch.complex64)
    with pytest.raises(TypeError, match=r"is complex.*real|dtype torch.complex64; the searches need real"):
        call(z)


# --- 20: the stability tools say what they received ------------------------------------------------------------
def test_stability_messages_name_what_was_received():
    def reconstruct(v):
        return 2 * v

    y = torch.rand(2, 1, 4, 4)
    zero = y.clone()
    zero[1] = 0
    with pytest.raises(ValueError, match=r"sample\(s\) 1 of y are all zeros.*relative"):
        adversarial_perturbation(reconstruct, zero, 0.1, steps=1, restarts=1)
    with pytest.raises(TypeError, match=r"got a numpy array of shape \(2, 1, 16, 16\).*torch.from_numpy"):
        lipschitz_search(reconstruct, np.zeros((2, 1, 16, 16)))
    with pytest.raises(ValueError, match=r"radius must be a finite number > 0.*got -1"):
        lipschitz_search(reconstruct, y, radius=-1)
    with pytest.raises(ValueError, match="eta must be a finite number > 0"):
        adversarial_perturbation(reconstruct, y, math.inf)
    with pytest.raises(ValueError, match=r"y contains NaN or Inf in sample\(s\) 0"):
        adversarial_perturbation(reconstruct, torch.full((1, 1, 4, 4), math.nan), 0.1)
    with pytest.raises(ValueError, match="lr must be"):
        lipschitz_search(reconstruct, y, lr=0)
    with pytest.raises(ValueError, match=r"target must be a tensor of the reconstruction's shape \(2, 1, 4, 4\)"):
        adversarial_perturbation(reconstruct, y, 0.1, target=torch.zeros(2, 16))
    assert adversarial_perturbation(reconstruct, y, np.float32(0.1), steps=2, restarts=1).ratio.shape == (2,)


def test_fbp_works_under_torch_func():
    op = ParallelBeamCT(8, 4)
    y = op.A(torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))

    def reconstruct(v):
        return fbp(v, op)

    torch.testing.assert_close(jvp(reconstruct, (y,), (y,))[1], reconstruct(y))
    torch.testing.assert_close(vmap(reconstruct)(y[:, None]), reconstruct(y)[:, None])
    assert jacrev(reconstruct)(y[:1]).shape == (1, 1, 8, 8, 1, 1, 12, 4)


# --- siblings: weights that are complex or arrays where one number is meant -------------------------------------
def test_weights_say_what_they_received():
    op = Blur(gaussian_kernel(1.0), 8)
    y = torch.rand(1, 1, 8, 8)
    with pytest.raises(TypeError, match="alpha is complex"):
        tikhonov(y, op, torch.tensor(0.1 + 1j))
    with pytest.raises(ValueError, match=r"lam must be one number .* shape \(2,\)"):
        tv(y, op, torch.tensor([0.1, 0.2]))
    assert tv(y, op, torch.tensor(0.01), max_iter=2).shape == y.shape  # a one-element tensor is a number
    with pytest.raises(ValueError, match="noise_level must be a real number"):
        choose_alpha(y, op, noise_level="loud")
    assert "Blur(kernel=<shape (7, 7)" in repr(Tikhonov(op, 0.1))
    assert "Blur(kernel=<shape (7, 7)" in repr(invstable.TotalVariation(op, 0.1))
