"""FanBeamCT: exact adjoint, norm bound, agreement with deepinv's fan-beam Tomography and with the parallel-beam
limit, geometry checked at construction, registry and CLI. (The registry's contract tests run on it too.)"""

import math

import numpy as np
import pytest
import torch

from invstable.operators import FanBeamCT, ParallelBeamCT, check_operator, make_operator, operator_from_config

N = 32


def smooth_phantom(n, dtype=torch.float64):
    """Two off-centre Gaussian blobs: asymmetric, so that a wrong orientation or a reversed detector shows."""
    r, c = np.mgrid[:n, :n] - (n - 1) / 2
    s = n / 32
    x = np.exp(-((r - 3 * s) ** 2 / (40 * s * s) + (c + 2 * s) ** 2 / (20 * s * s)))
    x += 0.5 * np.exp(-((r + 5 * s) ** 2 + (c - 6 * s) ** 2) / (10 * s * s))
    return torch.tensor(x, dtype=dtype)[None, None]


def test_adjoint_in_float64_and_norm_bound(rng):
    op = FanBeamCT(N, 20, source_distance=50.0, detector_distance=120.0, detector_spacing=1.7)
    x = torch.randn(3, 1, N, N, generator=rng, dtype=torch.float64)
    ax = op.A(x)
    y = torch.randn(ax.shape, generator=rng, dtype=torch.float64)
    lhs, rhs = (ax * y).sum(), (x * op.A_adjoint(y)).sum()
    assert float((lhs - rhs).abs() / lhs.abs()) <= 1e-10
    # power iteration on A^T A approaches ||A|| from below; the operator's bound must lie above it, and be tight
    v = torch.randn(1, 1, N, N, generator=rng, dtype=torch.float64)
    for _ in range(200):
        v = op.A_adjoint(op.A(v))
        v = v / v.norm()
    estimate = float(op.A(v).norm())
    assert estimate <= op.norm_bound() <= estimate * (1 + 1e-4)
    assert op.norm_bound() == pytest.approx(1.0, rel=1e-5)  # normalised by default
    report = check_operator(op, (1, N, N))
    assert report.adjoint_mismatch <= 1e-12 and report.norm_bound >= estimate


def test_unnormalised_values_are_line_integrals():
    # a constant image: the central ray crosses the whole n-pixel side at angle 0, so its integral is about n
    op = FanBeamCT(N, [0.0], normalize=False)
    y = op.A(torch.ones(1, 1, N, N, dtype=torch.float64))[0, 0, :, 0]
    assert op.scale == 1.0 and op.detectors % 2 == 1
    assert float(y[op.detectors // 2]) == pytest.approx(N, abs=1.0)
    assert float(y[0]) == 0.0 and float(y[-1]) == 0.0  # the outer rays pass outside the image


@pytest.mark.parametrize(("source", "distance", "spacing"), [(64.0, 128.0, 2.0), (48.0, 100.0, 1.5)])
def test_agreement_with_deepinv_fan_beam_tomography(source, distance, spacing):
    from deepinv.physics import Tomography  # noqa: PLC0415

    op = FanBeamCT(N, 24, source_distance=source, detector_distance=distance, detector_spacing=spacing,
                   normalize=False)
    p = math.ceil(math.sqrt(2.0) * N)  # the side of deepinv's padded image
    fan_parameters = {"pixel_spacing": (p - 1) / p, "source_radius": source, "detector_radius": distance - source,
                      "n_detector_pixels": op.detectors, "detector_spacing": spacing}
    theirs = Tomography(torch.tensor(op.angles.numpy() - 90.0), N, fan_beam=True, fan_parameters=fan_parameters,
                        normalize=False, dtype=torch.float64)
    x = smooth_phantom(N)
    ours = op.A(x)
    cos_gamma = torch.tensor(np.cos(op.fan_angles))[:, None]
    expected = theirs.A(x).flip(-2) / cos_gamma  # theta + 90 degrees, detector axis reversed, unit steps on the ray
    rel = float((ours - expected).norm() / expected.norm())
    corr = float(np.corrcoef(ours.flatten().numpy(), expected.flatten().numpy())[0, 1])
    assert rel < 1e-2 and corr > 0.999
    # the stated mapping matters: without the reversal the sinograms do not agree
    assert float((ours - theirs.A(x) / cos_gamma).norm() / expected.norm()) > 0.1
    # normalised, the sinogram is the line integrals times scale
    normalised = make_operator("fan", **{**op.config()["params"], "normalize": True})
    torch.testing.assert_close(normalised.A(x), ours * normalised.scale)


def test_far_source_tends_to_parallel_beam():
    n, angles = 33, list(np.linspace(0.0, 180.0, 12, endpoint=False))
    parallel = ParallelBeamCT(n, angles, detectors=49, normalize=False)
    fan = FanBeamCT(n, angles, source_distance=1e6, detector_distance=2e6, detector_spacing=2.0, detectors=49,
                    normalize=False)
    x = torch.rand(1, 1, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a, b = parallel.A(x), fan.A(x)
    assert float((a - b).norm() / a.norm()) < 1e-4


def test_defaults_cover_the_image_and_follow_each_other():
    op = FanBeamCT(N, 10, source_distance=40.0)
    assert op.detector_distance == 80.0 and op.detector_spacing == 2.0
    reach = op.source_distance * math.sin(float(np.abs(op.fan_angles).max()))
    assert reach >= N / math.sqrt(2)
    smaller = op.detectors - 2
    with pytest.raises(ValueError, match=rf"the fan of {smaller} detectors .* truncated; pass detectors >= "
                                         rf"{op.detectors}"):
        FanBeamCT(N, 10, source_distance=40.0, detectors=smaller)
    assert np.allclose(op.angles.numpy(), np.arange(10) * 36.0)  # a full rotation


@pytest.mark.parametrize(("params", "match"), [
    ({"image_size": 1}, r"image_size must be an integer >= 2, got 1"),
    ({"image_size": 32.0}, r"image_size must be an integer >= 2, got 32\.0"),
    ({"source_distance": -5.0}, r"source_distance must be a positive finite distance in pixels, got -5\.0"),
    ({"source_distance": float("inf")}, r"source_distance must be a positive finite distance in pixels, got inf"),
    ({"source_distance": "64"}, r"source_distance must be a positive finite distance in pixels, got '64'"),
    ({"source_distance": 20.0}, r"source_distance=20\.0 puts the source inside .* pass source_distance > 22\.6274"),
    ({"source_distance": 64.0, "detector_distance": 60.0},
     r"detector_distance=60\.0 is measured from the source and must exceed source_distance=64"),
    ({"detector_distance": float("nan")}, r"detector_distance must be a positive finite distance in pixels, got nan"),
    ({"detector_spacing": 0.0}, r"detector_spacing must be a positive finite distance in pixels, got 0\.0"),
    ({"detectors": 0}, r"detectors must be an integer >= 1, got 0"),
    ({"detectors": 50.0}, r"detectors must be an integer >= 1, got 50\.0"),
    ({"detectors": True}, r"detectors must be an integer >= 1, got True"),
    ({"detectors": 1}, r"the fan of 1 detectors .* pass detectors >= 51"),
    ({"angles": 0}, r"angles must be a positive count or a list of degrees, got 0"),
])
def test_bad_geometry_is_refused_with_a_clear_message(params, match):
    params = {"image_size": N, "angles": 8, **params}
    with pytest.raises(ValueError, match=match):
        FanBeamCT(params.pop("image_size"), params.pop("angles"), **params)


def test_a_count_of_angles_spans_a_full_rotation_whatever_its_type():
    for count in (6, np.int64(6), np.array(6), torch.tensor(6)):
        assert np.allclose(FanBeamCT(16, count).angles.numpy(), np.arange(6) * 60.0)
    assert FanBeamCT(16, [10.0, 200.0]).angles.tolist() == [10.0, 200.0]


def test_memory_is_estimated_and_a_projector_too_large_is_refused(monkeypatch):
    import tracemalloc  # noqa: PLC0415

    from invstable.data import InsufficientMemoryError, _memory  # noqa: PLC0415
    from invstable.operators._fan import fan_projector_matrix, fan_projector_memory  # noqa: PLC0415

    theta = np.linspace(0.0, 360.0, 10, endpoint=False)
    tracemalloc.start()
    try:
        fan_projector_matrix(24, theta, 40.0, 100.0, 61, 2.0).T.tocsr()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.8 * peak <= fan_projector_memory(24, theta, 40.0, 100.0, 61, 2.0) <= 1.3 * peak
    monkeypatch.setattr(_memory, "available_memory", lambda: 8 * 2**30)
    with pytest.raises(InsufficientMemoryError, match=r"projector of FanBeamCT\(image_size=2048, angles=90.*"
                                                      r"only 8 GiB is available.*fewer angles"):
        FanBeamCT(2048, 90)


def test_bad_shapes_are_refused():
    op = FanBeamCT(16, 5)
    with pytest.raises(ValueError, match=r"x has shape \(1, 1, 16, 15\) but FanBeamCT\(image_size=16\) takes"):
        op.A(torch.zeros(1, 1, 16, 15))
    with pytest.raises(ValueError, match=rf"y has shape \(1, 1, 5, {op.detectors}\) but the operator produces "
                                         rf"\(B, C, {op.detectors}, 5\)"):
        op.A_adjoint(torch.zeros(1, 1, 5, op.detectors))


def test_registry_config_and_repr():
    op = make_operator("fan", image_size=16, angles=6, source_distance=30.0, detector_distance=75.0)
    assert isinstance(op, FanBeamCT) and op.detector_spacing == 2.5
    rebuilt = operator_from_config(op.config())
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(rebuilt.A(x), op.A(x))
    assert repr(op) == repr(rebuilt) and "angles=6" in repr(op) and "source_distance=30.0" in repr(op)
    assert repr(FanBeamCT(16, 6, source_distance=31.0)) != repr(op)


def test_the_geometry_is_configuration_not_state():
    op = FanBeamCT(16, 6)
    state = op.state_dict()
    assert op.image_shape == (16, 16) and op.measurement_shape((2, 1, 16, 16)) == (2, 1, op.detectors, 6)
    FanBeamCT(16, 6).load_state_dict(state)
    with pytest.raises(RuntimeError, match=r"the state holds other angles \(6 of them\) than this FanBeamCT \(7\)"):
        FanBeamCT(16, 7, detectors=op.detectors).load_state_dict(state)
    assert op.float().angles.dtype == torch.float64 and op.angles.tolist() == [0.0, 60.0, 120.0, 180.0, 240.0, 300.0]


def test_cli_makes_a_fan_beam_dataset(tmp_path):
    from invstable.cli import main  # noqa: PLC0415
    from invstable.data import dataset_info  # noqa: PLC0415

    out = tmp_path / "fan.h5"
    code = main(["dataset", "make", "--task", "custom", "--operator", "fan", "--param", "image_size=32",
                 "--param", "angles=12", "--param", "source_distance=60", "--noise-level", "0.01",
                 "--source", "ellipses", "--source-param", "size=32", "--source-param", "seed=2",
                 "--count", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    info = dataset_info(out)
    assert info["count"] == 2 and info["operator"] == make_operator("fan", image_size=32, angles=12,
                                                                    source_distance=60).config()


def test_cli_names_a_bad_fan_parameter(tmp_path, capsys):
    from invstable.cli import main  # noqa: PLC0415

    code = main(["dataset", "make", "--task", "custom", "--operator", "fan", "--param", "image_size=32",
                 "--param", "angles=12", "--param", "source_distance=10", "--noise-level", "0.01",
                 "--source", "ellipses", "--source-param", "size=32", "--source-param", "seed=2", "--count", "2",
                 "--out", str(tmp_path / "x.h5"), "--no-progress"])
    assert code != 0
    assert "source_distance=10 puts the source inside" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
