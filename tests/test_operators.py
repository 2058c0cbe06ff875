"""ParallelBeamCT, Blur and the wrappers: agreement with independent implementations, and bad input."""

from importlib.metadata import EntryPoint

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from deepinv.physics import Blur as DeepinvBlur
from deepinv.physics import Denoising, LinearPhysics
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.data import shepp_logan_phantom
from skimage.transform import radon, resize

import invstable
from invstable.operators import (
    AdjointMismatchError,
    Blur,
    CallableOperator,
    MatrixOperator,
    ParallelBeamCT,
    as_operator,
    check_operator,
    gaussian_kernel,
    make_operator,
    register_operator,
)
from invstable.operators import _registry

from .conftest import tolerance


@pytest.fixture(scope="module")
def phantom():
    return resize(shepp_logan_phantom(), (64, 64), anti_aliasing=True)


# --- ParallelBeamCT ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("angles", [30, 180, [0.0, 17.5, 45.0, 91.0, 133.3]])
def test_ct_agrees_with_skimage_radon(phantom, angles):
    op = ParallelBeamCT(64, angles, normalize=False)
    ours = op.A(torch.from_numpy(phantom)[None, None])[0, 0].numpy()
    theta = np.linspace(0, 180, angles, endpoint=False) if isinstance(angles, int) else np.asarray(angles)
    ref = radon(phantom, theta, circle=False)
    assert ours.shape == ref.shape
    relative = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert relative < 1e-6  # same sampling and interpolation: equal up to rounding


def test_ct_normalisation_and_scale(phantom):
    raw = ParallelBeamCT(64, 30, normalize=False)
    op = ParallelBeamCT(64, 30)
    x = torch.from_numpy(phantom)[None, None]
    torch.testing.assert_close(op.A(x) / op.scale, raw.A(x))
    assert 1.0 <= op.norm_bound() <= 1.0 + 1e-5
    assert check_operator(op, (1, 64, 64)).norm_bound == op.norm_bound()


def test_ct_adjoint_precision_float32_and_float64(rng):
    op = ParallelBeamCT(48, 40)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(4, 2, 48, 48, generator=rng, dtype=dtype)
        ax = op.A(x)
        y = torch.randn(ax.shape, generator=rng, dtype=dtype)
        mismatch = float(((ax * y).sum() - (x * op.A_adjoint(y)).sum()).abs() / (ax.norm() * y.norm()))
        assert mismatch <= tolerance(dtype)


def test_ct_custom_detectors_and_batch_channels(rng):
    op = ParallelBeamCT(32, 12, detectors=40)
    x = torch.randn(3, 2, 32, 32, generator=rng)
    assert op.A(x).shape == (3, 2, 40, 12)
    # each sample and channel is transformed on its own
    torch.testing.assert_close(op.A(x)[1, 1], op.A(x[1:2, 1:2])[0, 0])


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(1, 1, 30, 32), r"has shape \(1, 1, 30, 32\).*\(B, C, 32, 32\)"),
    (torch.zeros(1, 1, 32, 32, dtype=torch.int64), "dtype torch.int64"),
    (torch.full((1, 1, 32, 32), float("nan")), "NaN or Inf"),
])
def test_ct_rejects_bad_images(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ParallelBeamCT(32, 10).A(bad)


def test_ct_rejects_a_sinogram_of_another_geometry():
    op = ParallelBeamCT(32, 10)
    with pytest.raises(ValueError, match=r"operator produces \(B, C, 46, 10\).*ParallelBeamCT\(image_size=32, angles=10\)"):
        op.A_adjoint(torch.zeros(1, 1, 46, 30))


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 1, "angles": 3}, "image_size"), ({"image_size": 8, "angles": 0}, "angles"),
    ({"image_size": 8, "angles": [0.0, float("nan")]}, "angles"), ({"image_size": 8, "angles": 3, "detectors": 1}, "detectors"),
])
def test_ct_rejects_bad_geometry(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParallelBeamCT(**kwargs)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(4, 20), angles=st.integers(1, 12), extra=st.integers(-2, 6), batch=st.integers(1, 3))
def test_ct_shapes_and_adjointness_for_any_geometry(n, angles, extra, batch):
    detectors = max(2, n + extra)
    op = ParallelBeamCT(n, angles, detectors=detectors)
    g = torch.Generator().manual_seed(n * 100 + angles)
    x = torch.randn(batch, 1, n, n, generator=g, dtype=torch.float64)
    ax = op.A(x)
    assert ax.shape == (batch, 1, detectors, angles)
    y = torch.randn(ax.shape, generator=g, dtype=torch.float64)
    denom = float(ax.norm() * y.norm()) or 1.0
    assert abs(float((ax * y).sum() - (x * op.A_adjoint(y)).sum())) / denom <= 1e-12


# --- Blur -----------------------------------------------------------------------------------------------------
def test_gaussian_kernel():
    k = gaussian_kernel(2.0)
    assert k.shape == (13, 13)
    assert abs(float(k.sum()) - 1) < 1e-6
    torch.testing.assert_close(k, k.flip(0))
    torch.testing.assert_close(k, k.T)
    assert gaussian_kernel((1.0, 3.0)).shape == (19, 19)
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(1.0, 4)
    with pytest.raises(ValueError, match="positive"):
        gaussian_kernel(-1.0)


@pytest.mark.parametrize("kernel_shape", [(5, 5), (4, 3)])
def test_circular_blur_matches_deepinv(kernel_shape, rng):
    kernel = torch.rand(kernel_shape, generator=rng)
    ours = Blur(kernel, (20, 18))
    ref = DeepinvBlur(filter=kernel[None, None], padding="circular")
    x = torch.rand(2, 3, 20, 18, generator=rng)
    torch.testing.assert_close(ours.A(x), ref.A(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.A_adjoint(x), ref.A_adjoint(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("boundary", ["valid", "reflect", "replicate", "zeros"])
def test_other_boundaries_are_adjoint_and_bounded(boundary, rng):
    op = Blur(torch.rand(5, 3, generator=rng, dtype=torch.float64), (11, 9), boundary=boundary)
    report = check_operator(op, (1, 11, 9))
    assert report.adjoint_mismatch <= 1e-12
    n = 11 * 9
    dense = op.A(torch.eye(n, dtype=torch.float64).reshape(n, 1, 11, 9)).reshape(n, -1).T
    assert op.norm_bound() >= float(torch.linalg.matrix_norm(dense, ord=2))


def test_circular_blur_norm_is_exact():
    op = Blur(gaussian_kernel(1.5, dtype=torch.float64), 16)
    n = 256
    dense = op.A(torch.eye(n, dtype=torch.float64).reshape(n, 1, 16, 16)).reshape(n, -1).T
    true = float(torch.linalg.matrix_norm(dense, ord=2))
    assert true <= op.norm_bound() <= true * (1 + 2e-6)  # margin 1e-6 for float32 rounding


def test_blur_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        Blur(torch.ones(3), 8)
    with pytest.raises(ValueError, match="larger than the image"):
        Blur(torch.ones(9, 9), 8)
    with pytest.raises(ValueError, match="boundary"):
        Blur(torch.ones(3, 3), 8, boundary="mirror")
    with pytest.raises(ValueError, match=r"has shape \(1, 1, 8, 9\)"):
        Blur(torch.ones(3, 3), 8).A(torch.zeros(1, 1, 8, 9))


# --- as_operator -----------------------------------------------------------------------------------------------
def _matrix(kind, rng):
    m = torch.randn(10, 12, generator=rng, dtype=torch.float64)
    m[m.abs() < 0.5] = 0
    return {"torch": m, "torch-sparse": m.to_sparse(), "numpy": m.numpy(), "scipy": sp.csr_matrix(m.numpy())}[kind], m


@pytest.mark.parametrize("kind", ["torch", "torch-sparse", "numpy", "scipy"])
def test_matrices_become_operators(kind, rng):
    mat, dense = _matrix(kind, rng)
    op = as_operator(mat, in_shape=(1, 3, 4))
    assert isinstance(op, MatrixOperator) and isinstance(op, LinearPhysics)
    x = torch.randn(2, 1, 3, 4, generator=rng, dtype=torch.float64)
    torch.testing.assert_close(op.A(x), x.reshape(2, -1) @ dense.T)
    y = torch.randn(2, 10, generator=rng, dtype=torch.float64)
    torch.testing.assert_close(op.A_adjoint(y), (y @ dense).reshape(2, 1, 3, 4))
    report = check_operator(op, (1, 3, 4))
    assert report.adjoint_mismatch <= 1e-12
    true = float(torch.linalg.matrix_norm(dense, ord=2))
    assert true <= report.norm_bound <= true * (1 + 1e-6)


def test_matrix_in_shape_must_fit():
    with pytest.raises(ValueError, match=r"12 columns but in_shape \(1, 4, 4\) has 16 elements"):
        as_operator(np.ones((10, 12)), in_shape=(1, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        as_operator(np.ones((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="2-D"):
        as_operator(np.ones((3, 3, 3)))


def test_deepinv_physics_is_returned_as_is():
    physics = Denoising()
    assert as_operator(physics) is physics


def test_callable_pair(rng):
    mat = torch.randn(6, 5, generator=rng, dtype=torch.float64)
    op = as_operator((lambda x: x @ mat.T, lambda y: y @ mat), in_shape=(5,))
    assert isinstance(op, CallableOperator)
    report = check_operator(op, (5,))
    true = float(torch.linalg.matrix_norm(mat, ord=2))
    assert report.norm_method == "power iteration"
    assert true <= report.norm_bound <= true * (1 + report.margin) * (1 + 1e-6)


def test_callable_pair_that_is_not_adjoint_is_rejected(rng):
    mat = torch.randn(6, 5, generator=rng, dtype=torch.float64)
    with pytest.raises(AdjointMismatchError, match="relative adjoint mismatch .* exceeds the tolerance"):
        as_operator((lambda x: x @ mat.T, lambda y: 1.01 * (y @ mat)), in_shape=(5,))
    with pytest.raises(ValueError, match="needs in_shape"):
        as_operator((lambda x: x, lambda y: y))


def test_unsupported_objects_are_rejected():
    with pytest.raises(TypeError, match="cannot make an operator from str"):
        as_operator("ct")

    class Square(invstable.operators.Operator.__mro__[1].__mro__[1]):  # deepinv Physics, not linear
        def A(self, x, **kwargs):
            return x**2

    with pytest.raises(TypeError, match="non-linear"):
        as_operator(Square())


# --- registry -------------------------------------------------------------------------------------------------
def test_registry_names_valid_operators_in_its_error():
    with pytest.raises(ValueError, match="unknown operator 'mri'.*blur.*ct"):
        make_operator("mri")
    with pytest.raises(ValueError, match="exactly one of"):
        make_operator("blur", image_size=8)


def test_entry_point_plugins_are_registered(monkeypatch):
    def fake_entry_points(group):
        assert group == "invstable.operators"
        return [EntryPoint(name="identity-plugin", value="deepinv.physics:Denoising", group=group)]

    monkeypatch.setattr(_registry, "entry_points", fake_entry_points)
    monkeypatch.setattr(_registry, "_entry_points_loaded", False)
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    assert "identity-plugin" in invstable.operators.available_operators()
    assert isinstance(make_operator("identity-plugin"), Denoising)


def test_register_refuses_to_overwrite_silently():
    with pytest.raises(ValueError, match="already registered"):
        register_operator("ct", lambda **kw: None)


# --- certificates stay true when the operator changes, and other regressions ---------------------------------
def _dense_norm(op, in_shape):
    n = int(np.prod(in_shape))
    dense = op.A(torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)).reshape(n, -1).T
    return float(torch.linalg.matrix_norm(dense, ord=2))


def test_norm_bounds_follow_state_changes(rng):
    blur = Blur(gaussian_kernel(1.0), 8)
    blur.norm_bound()
    blur.load_state_dict(Blur(3 * torch.rand(7, 7, generator=rng), 8).state_dict())
    assert blur.norm_bound() >= _dense_norm(blur, (1, 8, 8))
    blur.kernel.mul_(5)
    assert blur.norm_bound() >= _dense_norm(blur, (1, 8, 8))
    for sparse in (False, True):
        mat = torch.eye(4, dtype=torch.float64)
        op = MatrixOperator(sp.csr_matrix(mat.numpy()) if sparse else mat)
        op.norm_bound()
        # a sparse state must keep the sparsity pattern (a different one is a size-mismatch error)
        other = 7 * torch.eye(4, dtype=torch.float64) if sparse else 10 * torch.randn(4, 4, generator=rng, dtype=torch.float64)
        op.load_state_dict(MatrixOperator(sp.csr_matrix(other.numpy()) if sparse else other).state_dict())
        assert op.norm_bound() >= float(torch.linalg.matrix_norm(other, ord=2))


def test_norm_bound_of_a_deepinv_physics_follows_its_parameters():
    physics = DeepinvBlur(filter=gaussian_kernel(1.0)[None, None], padding="circular")
    first = invstable.operators.norm_bound(physics, (1, 16, 16))
    physics.update_parameters(filter=5 * gaussian_kernel(1.0)[None, None])
    assert invstable.operators.norm_bound(physics, (1, 16, 16)) >= 5 * first / 1.01 - 1e-6


def test_power_iteration_that_has_not_converged_says_so():
    w = torch.full((1, 64, 64), 0.985, dtype=torch.float64)
    w[0, 0, 0] = 1.0
    with pytest.warns(RuntimeWarning, match="did not converge"):
        report = check_operator(CallableOperator(lambda x: x * w, lambda y: y * w, (1, 64, 64), check=False),
                                (1, 64, 64), max_iter=20)
    assert not report.converged


@pytest.mark.parametrize("boundary", ["reflect", "replicate"])
@pytest.mark.parametrize("shape", [(3, 1), (1, 2), (1, 1)])
def test_kernels_with_a_unit_axis_have_exact_adjoints(boundary, shape, rng):
    op = Blur(torch.rand(shape, generator=rng, dtype=torch.float64), 6, boundary=boundary)
    assert check_operator(op, (1, 6, 6)).adjoint_mismatch <= 1e-12
    assert op.norm_bound() >= _dense_norm(op, (1, 6, 6))


def test_ct_state_with_other_angles_is_refused_and_copies_work():
    import copy

    op = ParallelBeamCT(16, 4)
    x = torch.rand(1, 1, 16, 16)
    expected = op.A(x)  # after use, the cached sparse matrices must not break deepcopy
    torch.testing.assert_close(copy.deepcopy(op).A(x), expected)
    with pytest.raises(RuntimeError, match="other angles.*operator_from_config"):
        op.load_state_dict(ParallelBeamCT(16, [0.0, 10.0, 20.0, 30.0]).state_dict())


@pytest.mark.parametrize("angles, error", [(30.0, TypeError), ([[0, 1], [2, 3]], ValueError), (True, TypeError)])
def test_ambiguous_angles_are_refused(angles, error):
    with pytest.raises(error, match="angles"):
        ParallelBeamCT(16, angles)


def test_integer_counts_of_any_kind_are_counts():
    for count in (np.int64(30), np.array(30), torch.tensor(30)):
        assert ParallelBeamCT(16, count).n_angles == 30


def test_sparse_matrix_input_checks():
    with pytest.raises(TypeError, match="complex128"):
        MatrixOperator(sp.random(5, 5, density=0.5, format="csr", random_state=0).astype(np.complex128))
    with pytest.raises(TypeError, match="int64"):
        MatrixOperator(sp.csr_matrix(np.eye(3, dtype=np.int64)))
    assert MatrixOperator(sp.csr_matrix((5, 6))).norm_bound() == 0.0


def test_gradient_refuses_unbatched_vectors():
    with pytest.raises(ValueError, match="in_shape=\\(1, H, W\\)"):
        invstable.operators.Gradient().A(torch.randn(3, 16))


def test_the_contract_defaults_serve_a_matrix_operator():
    op = MatrixOperator(torch.eye(6, dtype=torch.float64)[:4], in_shape=(1, 2, 3))
    assert op.image_shape == (1, 2, 3) and op.measurement_ndim == 2
    assert op.measurement_shape((5, 1, 2, 3)) == (5, 4)
    with pytest.raises(ValueError, match=r"y has shape \(2, 5\) but MatrixOperator produces measurements of shape "
                                         r"\(B, 4\)"):
        op.check_measurement(torch.zeros(2, 5))
    pair = as_operator((lambda x: 2 * x, lambda y: 2 * y), in_shape=(3, 4))
    assert pair.image_shape == (3, 4) and pair.measurement_shape((7, 3, 4)) == (7, 3, 4)


def test_a_users_physics_is_measured_without_being_written_to():
    import deepinv

    physics = deepinv.physics.Blur(filter=torch.ones(1, 1, 3, 3) / 9, padding="circular")
    before = dict(vars(physics))
    first = invstable.operators.norm_bound(physics, (1, 8, 8))
    assert invstable.operators.norm_bound(physics, (1, 8, 8)) == first
    assert vars(physics).keys() == before.keys()


def test_ct_keeps_its_angles_once_and_they_survive_a_cast():
    op = ParallelBeamCT(16, [0.0, 33.3, 90.0])
    assert "angles" not in dict(op.named_buffers())  # configuration, not a tensor to move or cast
    op = op.double().float()
    assert op.angles.dtype == torch.float64 and op.angles.tolist() == [0.0, 33.3, 90.0]
    assert op.config()["params"]["angles"] == [0.0, 33.3, 90.0]


def test_the_norm_module_agrees_with_dense_linear_algebra(rng):
    from invstable.operators import _norms

    m = torch.randn(9, 7, generator=rng, dtype=torch.float64)
    exact = float(torch.linalg.matrix_norm(m, ord=2))
    gram = (m.T @ m).numpy()
    assert _norms.largest_eigenvalue(lambda v: gram @ v, 7, rtol=1e-12) == pytest.approx(exact**2, rel=1e-10)
    estimate, _, converged = _norms.power_norm(MatrixOperator(m), (7,), rtol=1e-10, max_iter=5000, generator=rng)
    assert converged and estimate <= exact * (1 + 1e-12) and estimate == pytest.approx(exact, rel=1e-6)
    sparse = sp.random(40, 30, density=0.2, format="csr", random_state=1)
    assert _norms.matrix_norm(sparse) == pytest.approx(np.linalg.norm(sparse.toarray(), 2), rel=1e-10)
    assert _norms.matrix_norm(m) == pytest.approx(exact, rel=1e-14)


def test_config_of_answers_for_every_kind_of_operator():
    from invstable.operators._base import config_of

    assert config_of(ParallelBeamCT(16, 3)) == {"name": "ct", "params": {"image_size": 16, "angles": [0.0, 60.0, 120.0],
                                                                         "detectors": 23, "normalize": True}}
    assert config_of(MatrixOperator(np.eye(3))) is None  # an invstable operator without a configuration
    assert config_of(Denoising()) is None  # a deepinv physics without config()
