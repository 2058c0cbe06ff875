"""FBP, Tikhonov, alpha selection and TV against independent references, and bad input."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, resize

import invstable
from invstable import Tikhonov, choose_alpha, fbp, tikhonov, tv
from invstable.operators import Blur, Gradient, ParallelBeamCT, as_operator, gaussian_kernel


def _dense(op, in_shape):
    n = math.prod(in_shape)
    return op.A(torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)).reshape(n, -1).T.numpy()


def _dense_tikhonov(op, reg_name, alpha, in_shape):
    a = _dense(op, in_shape)
    n = a.shape[1]
    l = np.eye(n) if reg_name == "identity" else _dense(Gradient(boundary="circular"), in_shape)
    return np.linalg.solve(a.T @ a + alpha * l.T @ l, a.T)  # R_alpha as a dense matrix


@pytest.fixture(scope="module")
def small_ct():
    op = ParallelBeamCT(16, 9)
    x = torch.from_numpy(resize(shepp_logan_phantom(), (16, 16), anti_aliasing=True))[None, None]
    return op, x


# --- FBP ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("filter_name", ["ramp", "hann", "shepp-logan", "cosine", "hamming", None])
def test_fbp_matches_skimage_iradon(filter_name):
    x = resize(shepp_logan_phantom(), (48, 48), anti_aliasing=True)
    op = ParallelBeamCT(48, 36)
    y = op.A(torch.from_numpy(x)[None, None])
    ours = fbp(y, op, filter=filter_name)[0, 0].numpy()
    ref = iradon(y[0, 0].numpy() / op.scale, np.linspace(0, 180, 36, endpoint=False), output_size=48,
                 filter_name=filter_name, circle=False)
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-6


def test_fbp_recovers_a_well_sampled_phantom():
    x = resize(shepp_logan_phantom(), (64, 64), anti_aliasing=True)
    op = ParallelBeamCT(64, 180)
    recon = fbp(op.A(torch.from_numpy(x)[None, None]).numpy()[0, 0], op)  # numpy in, numpy out, axes dropped
    assert recon.shape == (64, 64)
    assert 10 * np.log10(1 / np.mean((recon - x) ** 2)) > 26  # PSNR in dB; the plain back-projection is below 0


def test_fbp_bad_input():
    with pytest.raises(TypeError, match="needs a ParallelBeamCT operator, got Blur"):
        fbp(torch.zeros(1, 1, 8, 8), Blur(torch.ones(3, 3), 8))
    with pytest.raises(ValueError, match="filter must be one of"):
        fbp(torch.zeros(1, 1, 23, 4), ParallelBeamCT(16, 4), filter="lanczos")


# --- Tikhonov ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reg", ["identity", "gradient"])
def test_tikhonov_cg_matches_a_dense_solve(small_ct, reg):
    op, x = small_ct
    y = op.A(x) + 0.01 * torch.randn(op.A(x).shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours, info = tikhonov(y, op, 0.03, regularizer=reg, tol=1e-10, max_iter=2000, return_info=True)
    ref = _dense_tikhonov(op, reg, 0.03, (1, 16, 16)) @ y.reshape(-1).numpy()
    assert info.method == "cg" and bool(info.converged.all())
    np.testing.assert_allclose(ours.reshape(-1).numpy(), ref, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("reg", ["identity", "gradient"])
def test_tikhonov_fft_matches_a_dense_solve(reg):
    op = Blur(gaussian_kernel(1.2, dtype=torch.float64), (12, 10))
    y = torch.randn(2, 1, 12, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours, info = tikhonov(y, op, 0.02, regularizer=reg, return_info=True)
    r = _dense_tikhonov(op, reg, 0.02, (1, 12, 10))
    assert info.method == "fft"
    np.testing.assert_allclose(ours.reshape(2, -1).numpy(), y.reshape(2, -1).numpy() @ r.T, rtol=1e-9, atol=1e-10)


def test_tikhonov_fft_and_cg_paths_agree():
    op = Blur(gaussian_kernel(1.0, dtype=torch.float64), 16)
    y = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    l = invstable.operators.MatrixOperator(_dense(Gradient(), (1, 16, 16)), in_shape=(1, 16, 16))  # not FFT-able
    via_cg = tikhonov(y, op, 0.05, regularizer=l, tol=1e-11, max_iter=3000)
    via_fft = tikhonov(y, op, 0.05, regularizer="gradient")
    torch.testing.assert_close(via_cg, via_fft, rtol=1e-7, atol=1e-9)


def test_tikhonov_alpha_per_sample(small_ct):
    op, x = small_ct
    y = op.A(x.repeat(2, 1, 1, 1))
    both = tikhonov(y, op, torch.tensor([0.01, 0.5]), tol=1e-10)
    torch.testing.assert_close(both[1:], tikhonov(y[1:], op, 0.5, tol=1e-10), rtol=1e-7, atol=1e-9)


def test_tikhonov_numpy_in_numpy_out(small_ct):
    op, x = small_ct
    y = op.A(x)
    for arr, shape in ((y[0, 0].numpy(), (16, 16)), (y[0].numpy(), (1, 16, 16)), (y.numpy(), (1, 1, 16, 16))):
        out = tikhonov(arr, op, 0.1)
        assert isinstance(out, np.ndarray) and out.shape == shape
    np.testing.assert_allclose(tikhonov(y[0, 0].numpy(), op, 0.1), tikhonov(y, op, 0.1)[0, 0].numpy())


def test_tikhonov_warm_start_saves_iterations(small_ct):
    op, x = small_ct
    y = op.A(x)
    cold, info_cold = tikhonov(y, op, 0.01, tol=1e-8, return_info=True)
    _, info_warm = tikhonov(y, op, 0.011, tol=1e-8, x0=cold, return_info=True)
    assert int(info_warm.iterations[0]) < int(info_cold.iterations[0])


def test_tikhonov_reports_non_convergence(small_ct):
    op, x = small_ct
    with pytest.warns(RuntimeWarning, match="raise max_iter or alpha"):
        _, info = tikhonov(op.A(x), op, 1e-6, max_iter=2, return_info=True)
    assert not bool(info.converged.any()) and int(info.iterations[0]) == 2


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_tikhonov_rejects_bad_alpha(small_ct, alpha):
    op, x = small_ct
    with pytest.raises(ValueError, match="alpha must be finite and > 0"):
        tikhonov(op.A(x), op, alpha)


@pytest.mark.parametrize("bad, error, match", [
    (torch.full((1, 1, 23, 9), float("inf")), ValueError, "NaN or Inf"),
    (torch.zeros(1, 1, 23, 30), ValueError, r"y has shape \(1, 1, 23, 30\) but the operator produces \(B, C, 23, 9\)"),
    (np.zeros((23, 9), dtype=np.int32), TypeError, "dtype int32"),
    (torch.zeros(23, 9), ValueError, "add the batch"),
    ([[0.0]], TypeError, "torch.Tensor or a numpy array"),
])
def test_tikhonov_rejects_bad_measurements(small_ct, bad, error, match):
    op, _ = small_ct
    with pytest.raises(error, match=match):
        tikhonov(bad, op, 0.1)


@pytest.mark.parametrize("reg", ["identity", "gradient"])
def test_tikhonov_lipschitz_constant_is_the_dense_spectral_norm(reg):
    op = ParallelBeamCT(10, 6)  # 90 measurements: Lanczos converges within 90 steps
    exact = np.linalg.norm(_dense_tikhonov(op, reg, 0.05, (1, 10, 10)), 2)
    assert Tikhonov(op, 0.05, regularizer=reg).lipschitz_bound() == pytest.approx(exact, rel=1e-6)


def test_tikhonov_lipschitz_constant_fft_is_exact():
    op = Blur(gaussian_kernel(1.5, dtype=torch.float64), 12)
    for reg in ("identity", "gradient"):
        exact = np.linalg.norm(_dense_tikhonov(op, reg, 0.01, (1, 12, 12)), 2)
        assert Tikhonov(op, 0.01, regularizer=reg).lipschitz_bound() == pytest.approx(exact, rel=1e-10)


@settings(max_examples=10, deadline=None)
@given(h=st.integers(3, 12), w=st.integers(3, 12), batch=st.integers(1, 3), channels=st.integers(1, 2),
       reg=st.sampled_from(["identity", "gradient"]))
def test_tikhonov_keeps_shapes(h, w, batch, channels, reg):
    op = Blur(torch.ones(3, 3) / 9, (h, w))
    y = torch.rand(batch, channels, h, w, generator=torch.Generator().manual_seed(h * w))
    x = tikhonov(y, op, 0.1, regularizer=reg)
    assert x.shape == y.shape and bool(torch.isfinite(x).all())


# --- choosing alpha ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reg", ["identity", "gradient"])
def test_discrepancy_principle_hits_its_target(reg):
    op = Blur(gaussian_kernel(1.5), 32)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 32, 32, generator=g)
    sigma = torch.tensor([0.01, 0.03, 0.05])
    y = op.A(x) + sigma[:, None, None, None] * torch.randn(x.shape, generator=g)
    alpha = choose_alpha(y, op, noise_level=sigma, regularizer=reg)
    assert alpha.shape == (3,) and bool((alpha[1:] > alpha[:-1]).all())  # more noise, more regularisation
    residual = (op.A(tikhonov(y, op, alpha, regularizer=reg)) - y).reshape(3, -1).norm(dim=1)
    target = sigma * math.sqrt(32 * 32)
    torch.testing.assert_close(residual, target, rtol=0.01, atol=0)


def test_discrepancy_principle_on_ct_with_cg(small_ct):
    op, x = small_ct
    y = op.A(x) + 0.02 * torch.randn(op.A(x).shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    alpha = choose_alpha(y, op, noise_level=0.02, tol=1e-9)
    residual = float((op.A(tikhonov(y, op, alpha, tol=1e-9)) - y).norm())
    assert residual == pytest.approx(0.02 * math.sqrt(y.numel()), rel=0.01)


def test_discrepancy_principle_needs_a_noise_level(small_ct):
    op, x = small_ct
    with pytest.raises(ValueError, match="needs noise_level"):
        choose_alpha(op.A(x), op)
    with pytest.raises(ValueError, match="rule must be one of"):
        choose_alpha(op.A(x), op, rule="l-curve")
    with pytest.warns(RuntimeWarning, match="noise_level too large"):
        choose_alpha(op.A(x), op, noise_level=100.0)


def test_gcv_is_close_to_the_exact_gcv_minimiser():
    op = Blur(gaussian_kernel(1.5, dtype=torch.float64), 16)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64)
    y = op.A(x) + 0.02 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    a = _dense(op, (1, 16, 16))
    m = a.shape[0]
    grid = np.logspace(-6, 1, 100)
    scores = []
    for alpha in grid:  # exact GCV with dense matrices
        influence = a @ np.linalg.solve(a.T @ a + alpha * np.eye(m), a.T)
        r = influence @ y.reshape(-1).numpy() - y.reshape(-1).numpy()
        scores.append(m * (r @ r) / np.trace(np.eye(m) - influence) ** 2)
    best = grid[int(np.argmin(scores))]
    chosen = float(choose_alpha(y, op, rule="gcv")[0])
    assert abs(math.log10(chosen / best)) < 0.15


def test_gcv_with_randomised_trace_on_ct(small_ct):
    op, x = small_ct
    y = op.A(x) + 0.05 * torch.randn(op.A(x).shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    alpha = float(choose_alpha(y, op, rule="gcv", rng=0)[0])
    errors = {a: float((tikhonov(y, op, a) - x).norm()) for a in (alpha, alpha * 100, alpha / 100)}
    assert errors[alpha] < errors[alpha * 100] and errors[alpha] < errors[alpha / 100]


# --- TV ---------------------------------------------------------------------------------------------------------
def test_tv_beats_tikhonov_on_a_piecewise_constant_phantom():
    x = torch.from_numpy(resize(shepp_logan_phantom(), (48, 48), anti_aliasing=True)).float()[None, None]
    op = ParallelBeamCT(48, 20)
    g = torch.Generator().manual_seed(7)
    y = op.A(x) + 0.01 * torch.randn(op.A(x).shape, generator=g)
    err_tv = float((tv(y, op, 1e-3, max_iter=200) - x).norm())
    err_tik = min(float((tikhonov(y, op, a) - x).norm()) for a in (1e-3, 1e-2, 1e-1))
    assert err_tv < err_tik
    assert invstable.TotalVariation(op, 1e-3).lipschitz_bound() == math.inf


def test_tv_numpy_and_bad_lambda():
    op = Blur(gaussian_kernel(1.0), 16)
    y = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    assert tv(y, op, 0.01, max_iter=10).shape == (16, 16)
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        tv(y, op, 0.0)


# --- a user's operator through the whole pipeline -----------------------------------------------------------
def test_baselines_run_on_a_matrix_operator():
    rng = np.random.default_rng(8)
    mat = rng.standard_normal((30, 25))
    op = as_operator(mat, in_shape=(1, 5, 5))
    x = torch.from_numpy(rng.random((2, 1, 5, 5)))
    y = op.A(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recon = tikhonov(y, op, 1e-8, tol=1e-12, max_iter=1000)
    torch.testing.assert_close(recon, x, rtol=1e-5, atol=1e-6)


# --- regressions ------------------------------------------------------------------------------------------------
def test_tv_warm_start(small_ct):
    op, x = small_ct
    y = op.A(x).float()
    start = tikhonov(y, op, 0.01)
    assert tv(y[0, 0].numpy(), op, 1e-3, max_iter=5, x0=start[0, 0].numpy()).shape == (16, 16)
    with pytest.raises(ValueError, match=r"x0 has shape \(1, 1, 16, 15\)"):
        tv(y, op, 1e-3, x0=torch.zeros(1, 1, 16, 15))
    assert tv(y, op, np.float32(1e-3), max_iter=2).shape == x.shape


def test_singular_fft_normal_equations_are_named():
    op = Blur(torch.tensor([[0.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), 8)  # zero at frequency 0
    with pytest.raises(ValueError, match="singular"):
        tikhonov(torch.rand(1, 1, 8, 8), op, 0.1, regularizer="gradient")
    assert Tikhonov(op, 0.1, regularizer="gradient").lipschitz_bound() == math.inf


def test_zero_measurement_with_a_warm_start(small_ct):
    op, x = small_ct
    y = op.A(x)
    y[0] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, info = tikhonov(y, op, 0.1, x0=torch.ones_like(x), return_info=True)
    assert float(out.abs().max()) == 0.0 and bool(info.converged.all())


@pytest.mark.parametrize("alpha, error", [(True, TypeError), ("0.1", TypeError), (1e-50, ValueError)])
def test_alpha_types(small_ct, alpha, error):
    op, x = small_ct
    with pytest.raises(error, match="alpha"):
        tikhonov(op.A(x).float(), op, alpha)


def test_warm_start_of_the_wrong_shape(small_ct):
    op, x = small_ct
    with pytest.raises(ValueError, match="x0 has shape"):
        tikhonov(op.A(x), op, 0.1, x0=torch.zeros(1, 1, 8, 32, dtype=torch.float64))


def test_choose_alpha_options_are_checked(small_ct):
    op, x = small_ct
    for bad in ({"tau": 0}, {"n_probes": 0}, {"grid": 1}):
        with pytest.raises(ValueError, match="tau > 0"):
            choose_alpha(op.A(x), op, noise_level=0.01, **bad)


# --- differentiable in y (what lets invstable.stability attack the baselines) -------------------------------

def _check_linear_gradient(reconstruct, y):
    """For a linear map R: autograd's vector-Jacobian product is R^T (adjoint identity <R u, g> = <u, R^T g>)
    and agrees with a central finite difference along a random direction."""
    g = torch.randn_like(reconstruct(y.detach()))
    u = y.detach().clone().requires_grad_(True)
    out = reconstruct(u)
    grad, = torch.autograd.grad((out * g).sum(), u)
    with torch.no_grad():
        lhs = float((reconstruct(y.detach()) * g).sum())
        d = torch.randn_like(y) * 1e-3
        fd = float(((reconstruct(y + d) - reconstruct(y - d)) * g).sum() / 2)
    assert lhs == pytest.approx(float((y.detach() * grad).sum()), rel=1e-8)
    assert fd == pytest.approx(float((d * grad).sum()), rel=1e-7)


@pytest.mark.parametrize("regularizer", ["identity", "gradient"])
def test_tikhonov_gradient_is_the_transpose_solve(regularizer):
    from invstable.operators import ParallelBeamCT

    torch.manual_seed(0)
    op = ParallelBeamCT(16, 8)
    y = op.A(torch.rand(2, 1, 16, 16, dtype=torch.float64))
    solver = invstable.Tikhonov(op, 0.05, regularizer=regularizer, tol=1e-12, max_iter=2000)
    _check_linear_gradient(solver, y)
    with torch.no_grad():  # and the no-grad call is unchanged
        assert torch.allclose(solver(y.clone().requires_grad_(True)), solver(y))


def test_fft_tikhonov_and_fbp_are_differentiable():
    from invstable.operators import Blur, ParallelBeamCT, gaussian_kernel

    torch.manual_seed(0)
    blur = Blur(gaussian_kernel(1.0), 16)
    _check_linear_gradient(invstable.Tikhonov(blur, 0.01), blur.A(torch.rand(2, 1, 16, 16, dtype=torch.float64)))
    ct = ParallelBeamCT(16, 8)
    _check_linear_gradient(lambda v: invstable.fbp(v, ct, filter="hann"),
                           ct.A(torch.rand(2, 1, 16, 16, dtype=torch.float64)))


def test_adversarial_search_on_tikhonov_stays_below_its_exact_constant():
    from invstable.operators import Blur, gaussian_kernel
    from invstable.stability import adversarial_perturbation

    op = Blur(gaussian_kernel(2.0), 32)
    y = op.A(torch.rand(2, 1, 32, 32))
    solver = invstable.Tikhonov(op, 0.01)
    found = adversarial_perturbation(solver, y, eta=0.05, steps=40, restarts=2)
    exact = solver.lipschitz_bound()
    assert torch.all(found.ratio <= exact * (1 + 1e-5))
    assert torch.all(found.ratio > 0.5 * exact)  # the search gets close: it is a real attack


def test_tv_is_differentiable_when_y_requires_grad():
    from invstable.operators import ParallelBeamCT

    op = ParallelBeamCT(16, 8)
    y = op.A(torch.rand(1, 1, 16, 16)).requires_grad_(True)
    out = invstable.tv(y, op, 0.01, max_iter=5, prox_iter=3)
    grad, = torch.autograd.grad(out.square().sum(), y)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert not invstable.tv(y.detach(), op, 0.01, max_iter=5, prox_iter=3).requires_grad


# --- TV runs to convergence and says how far it got ------------------------------------------------------------
def test_tv_records_its_final_relative_change_and_warns_at_max_iter():
    op = Blur(gaussian_kernel(1.0), 16)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
    y = op.A(x) + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    solver = invstable.TotalVariation(op, 0.01, max_iter=5000, tol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", invstable.ConvergenceWarning)
        x_k = solver(y)
    done = solver.last_solve
    assert done.converged and done.iterations < 5000
    assert bool((done.relative_change < 1e-5).all()) and done.max_relative_change < 1e-5
    # one iteration fewer has not converged: the warning, and the previous iterate
    short = invstable.TotalVariation(op, 0.01, max_iter=done.iterations - 1, tol=1e-5)
    with pytest.warns(invstable.ConvergenceWarning, match=rf"stopped at max_iter={done.iterations - 1}"):
        x_prev = short(y)
    assert not short.last_solve.converged and short.last_solve.max_relative_change >= 1e-5
    # the recorded figure is the relative change of the returned iterate, ||x_k - x_{k-1}|| / ||x_k||, per sample
    expected = (x_k - x_prev).flatten(1).norm(dim=1) / x_k.flatten(1).norm(dim=1)
    torch.testing.assert_close(done.relative_change, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("option, match", [({"max_iter": 0}, "max_iter must be an integer >= 1"),
                                           ({"max_iter": 2.5}, "max_iter must be an integer >= 1"),
                                           ({"tol": 0.0}, "tol must be a finite number > 0"),
                                           ({"prox_iter": 0}, "prox_iter must be an integer >= 1")])
def test_tv_options_are_checked(option, match):
    with pytest.raises(ValueError, match=match):
        invstable.TotalVariation(Blur(gaussian_kernel(1.0), 16), 0.01, **option)
