"""The convex ridge regulariser, the variational reconstructor around it, its certificate and its model file."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import invstable
from invstable.models import ModelFileError, VariationalInverse, load_regularizer, save_regularizer
from invstable.nn import ConvexRidgeRegularizer, MonotoneSpline
from invstable.operators import Blur, ParallelBeamCT, gaussian_kernel


from tests._nn_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _scrambled(reg: ConvexRidgeRegularizer, seed: int = 0) -> ConvexRidgeRegularizer:
    """Raw spline parameters far outside [0, 1] and larger filters: the guarantees must hold anyway."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        reg.activation.raw_slopes.copy_(torch.rand(reg.activation.raw_slopes.shape, generator=gen) * 3 - 1)
        for k in reg.kernels:
            k.mul_(3.0)
    return reg


def _reg(dtype=torch.float64, seed=0, channels=(1, 4, 8)):
    return _scrambled(ConvexRidgeRegularizer(channels, kernel_size=3, knots=11,
                                             rng=torch.Generator().manual_seed(seed), dtype=dtype), seed)


# ------------------------------------------------------------------ the spline
def test_spline_is_monotone_one_lipschitz_and_zero_at_zero():
    sp = MonotoneSpline(5, knots=9, dtype=torch.float64)
    with torch.no_grad():
        sp.raw_slopes.uniform_(-2, 3)
    t = torch.linspace(-3, 3, 4001, dtype=torch.float64).view(1, 1, -1).expand(1, 5, -1)
    v = sp(t)
    dv = v.diff(dim=-1) / t.diff(dim=-1)
    dv = dv.detach()
    assert float(dv.min()) >= -1e-12 and float(dv.max()) <= 1 + 1e-9
    assert float(sp(torch.zeros(1, 5, 1, dtype=torch.float64)).abs().max()) == 0.0
    assert 0.0 <= sp.max_slope() <= 1.0


def test_spline_backward_and_potential():
    sp = MonotoneSpline(3, knots=7, dtype=torch.float64)
    with torch.no_grad():
        sp.raw_slopes.uniform_(0.05, 0.95)  # inside (0, 1): the clamp is differentiable there
    t = (torch.randn(2, 3, 40, dtype=torch.float64) * 1.5).requires_grad_()
    assert torch.autograd.gradcheck(sp, (t,))
    assert torch.autograd.gradcheck(lambda s: MonotoneSpline.forward(_with_slopes(sp, s), t.detach()),
                                    (sp.raw_slopes.detach().clone().requires_grad_(),))
    # psi' = sigma
    psi = sp.potential(t).sum()
    (g,) = torch.autograd.grad(psi, t)
    torch.testing.assert_close(g, sp(t).detach())


def _with_slopes(sp, raw):
    clone = MonotoneSpline(sp.channels, knots=sp.knots, span=sp.span, dtype=raw.dtype)
    del clone.raw_slopes
    clone.raw_slopes = raw
    return clone


def test_spline_rejects_bad_knots():
    with pytest.raises(ValueError, match="odd"):
        MonotoneSpline(2, knots=8)


# ------------------------------------------------------------------ the regulariser
def test_gradient_is_the_gradient_of_the_potential():
    reg = _reg()
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(reg(x, 2.5).sum(), x)
    torch.testing.assert_close(g, reg.gradient(x, 2.5).detach())


def test_composed_kernel_is_the_composition_of_the_convolutions():
    reg = _reg()
    x = torch.randn(2, 1, 14, 14, dtype=torch.float64)
    first = reg.kernels[0] - reg.kernels[0].mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(F.conv2d(x, reg.kernel()), F.conv2d(F.conv2d(x, first), reg.kernels[1]))
    assert float(reg.kernel().sum(dim=(2, 3)).abs().max()) < 1e-12  # zero mean: constants are not penalised


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_is_monotone_and_lipschitz_on_searched_pairs(seed):
    """<grad R(x) - grad R(z), x - z> >= 0 (convexity) and ||grad R(x) - grad R(z)|| <= s ||W||^2 ||x - z||,
    on pairs chosen by Adam to violate them, with scrambled weights."""
    reg = _reg(seed=seed)
    size = (12, 12)
    bound = reg.smoothness(size)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, *size, dtype=torch.float64, generator=gen).requires_grad_()
    z = (x.detach() + 0.1 * torch.randn(x.shape, dtype=torch.float64, generator=gen)).requires_grad_()
    opt = torch.optim.Adam([x, z], lr=0.05)
    worst_ratio, worst_mono = 0.0, math.inf
    for _ in range(60):
        gx, gz = reg.gradient(x, 1.7), reg.gradient(z, 1.7)
        d = (x - z).flatten(1)
        ratio = (gx - gz).flatten(1).norm(dim=1) / d.norm(dim=1)
        mono = ((gx - gz).flatten(1) * d).sum(dim=1) / d.norm(dim=1) ** 2
        worst_ratio = max(worst_ratio, float(ratio.max()))
        worst_mono = min(worst_mono, float(mono.min()))
        opt.zero_grad()
        (-(ratio.sum()) + mono.sum()).backward()
        opt.step()
    assert worst_mono >= -1e-10
    assert worst_ratio <= bound * (1 + 1e-9)
    # the certified norm covers the valid convolution's norm found by power iteration
    k = reg.kernel().detach()
    v = torch.randn(1, 1, *size, dtype=torch.float64, generator=gen)
    for _ in range(300):
        v = F.conv_transpose2d(F.conv2d(v, k), k)
        v = v / v.norm()
    assert float(F.conv2d(v, k).norm()) <= reg.operator_norm(size) * (1 + 1e-9)


def test_regulariser_rejects_bad_input():
    reg = ConvexRidgeRegularizer((1, 2, 4), kernel_size=3)
    with pytest.raises(ValueError, match="grayscale"):
        reg.gradient(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="smaller than"):
        reg.gradient(torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="start at 1"):
        ConvexRidgeRegularizer((3, 8))


# ------------------------------------------------------------------ the reconstructor and its certificate
def _blur(size=16, sigma=1.5, dtype=torch.float64):
    return Blur(gaussian_kernel(sigma), image_size=size).to(dtype)


def _model(op, *, m=0.05, lam=0.3, tol=1e-4, bounds=(0.0, 1.0), seed=0, reference=0.0):
    return VariationalInverse(_reg(seed=seed), op, lam=lam, scale=3.0, strong_convexity=m, bounds=bounds, tol=tol,
                              max_iter=5000, reference=reference)


@pytest.mark.parametrize("bounds", [(0.0, 1.0), None])
def test_certified_distance_to_the_minimiser_holds(bounds):
    op = _blur()
    x = torch.rand(3, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = op.A(x) + 0.05 * torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loose = _model(op, tol=3e-2, bounds=bounds)
    x_loose, info = loose.solve(y)
    exact = _model(op, tol=1e-10, bounds=bounds)
    x_star, _ = exact.solve(y)
    dist = (x_loose - x_star).flatten(1).norm(dim=1)
    assert info.converged and bool((dist <= info.error_bound + 1e-9).all())
    assert bool((info.error_bound <= info.tolerance).all())
    if bounds is not None:
        assert float(x_loose.min()) >= 0.0 and float(x_loose.max()) <= 1.0


@pytest.mark.parametrize("op_name", ["blur", "ct"])
def test_certificate_holds_on_adversarially_searched_pairs(op_name):
    """||R(y1) - R(y2)|| <= L ||y1 - y2|| + additive, with (y1, y2) chosen by Adam through the implicit gradient to
    maximise the ratio; small m so that the bound is not trivially loose."""
    torch.manual_seed(0)
    op = _blur(size=12) if op_name == "blur" else ParallelBeamCT(12, angles=5).to(torch.float64)
    model = _model(op, m=3e-2, lam=0.05, tol=1e-5, reference=0.4 if op_name == "blur" else 0.0)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen)
    y1 = (op.A(x)).detach().requires_grad_()
    d = (1e-2 * torch.randn(y1.shape, dtype=torch.float64, generator=gen)).requires_grad_()
    opt = torch.optim.Adam([y1, d], lr=0.02)
    worst = 0.0
    for _ in range(10):
        r1, r2 = model(y1), model(y1 + d)
        cert = model.certificate()
        dn = d.flatten(1).norm(dim=1)
        ratio = (r1 - r2).flatten(1).norm(dim=1) / dn
        allowed = cert.lipschitz + cert.additive / dn
        assert bool((ratio <= allowed + 1e-9).all()), (ratio, allowed)
        worst = max(worst, float(ratio.max()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    assert worst > 0  # the pairs were really reconstructed apart (the check above was not vacuous)
    assert model.lipschitz_bound() == pytest.approx(1 / (2 * math.sqrt(3e-2)))


def test_implicit_gradient_matches_finite_differences():
    op = _blur(size=12)
    model = _model(op, m=0.05, lam=0.2, tol=1e-11, bounds=None)
    gen = torch.Generator().manual_seed(5)
    y = (op.A(torch.rand(1, 1, 12, 12, dtype=torch.float64, generator=gen))).requires_grad_()
    w = torch.randn(1, 1, 12, 12, dtype=torch.float64, generator=gen)
    (g,) = torch.autograd.grad((model(y) * w).sum(), y)
    v = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    eps = 1e-5
    with torch.no_grad():
        fd = ((model(y + eps * v) * w).sum() - (model(y - eps * v) * w).sum()) / (2 * eps)
    assert float((g * v).sum()) == pytest.approx(float(fd), rel=1e-4, abs=1e-8)


def test_tune_moves_each_weight_to_an_interior_optimum_and_respects_the_bound():
    op = _blur()
    gen = torch.Generator().manual_seed(0)
    x = F.avg_pool2d(torch.rand(4, 1, 32, 32, dtype=torch.float64, generator=gen), 2)
    y = op.A(x) + 0.02 * torch.randn(x.shape, dtype=torch.float64, generator=gen)
    model = _model(op, m=0.5, lam=1.0, tol=1e-3)
    record = model.tune(x, y, max_lipschitz=2.0, max_evaluations=30, reference="mean")
    assert model.reference == pytest.approx(float(x.mean()))
    assert model.lipschitz_bound() <= 2.0 * (1 + 1e-12)
    assert model.strong_convexity >= 1 / 16 * (1 - 1e-12)
    best = record["validation_psnr"]
    assert all(e["psnr"] <= best + 1e-12 for e in record["evaluations"])
    start = record["evaluations"][0]["psnr"]
    assert best >= start


def test_bad_arguments_are_refused():
    op = _blur()
    reg = _reg()
    with pytest.raises(ValueError, match="strong_convexity"):
        VariationalInverse(reg, op, lam=1.0, strong_convexity=0.0)
    with pytest.raises(ValueError, match="bounds"):
        VariationalInverse(reg, op, lam=1.0, strong_convexity=0.1, bounds=(1, 0))
    model = VariationalInverse(reg, op, lam=1.0, strong_convexity=0.1)
    with pytest.raises(ValueError, match="image size"):
        model.certificate()


# ------------------------------------------------------------------ files and loading
def test_regularizer_file_round_trip_and_digest(tmp_path):
    reg = _reg(dtype=torch.float32)
    path = save_regularizer(reg, tmp_path / "r.safetensors", metadata={"noise_levels": [
        {"sigma": 0.02, "lam": 0.3, "scale": 10.0}, {"sigma": 0.1, "lam": 2.0, "scale": 3.0}]})
    loaded, extra = load_regularizer(path)
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(loaded.gradient(x, 2.0), reg.gradient(x, 2.0).detach())
    with pytest.raises(FileExistsError, match="overwrite"):
        save_regularizer(reg, path, metadata={})
    # one flipped bit in the tensor bytes: refused on load
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="digest"):
        load_regularizer(bad)
    op = _blur(dtype=torch.float32)
    model = invstable.load_model(path, operator=op, noise_level=0.05)
    assert isinstance(model, VariationalInverse) and 0.3 < model.lam < 2.0
    with pytest.raises(ValueError, match="operator="):
        invstable.load_model(path)


def test_unrolled_models_refuse_an_operator():
    if "ct30-gradflow" not in invstable.list_models():
        pytest.skip("shipped models not installed")
    with pytest.raises(ValueError, match="own operator"):
        invstable.load_model("ct30-gradflow", operator=_blur())


def test_shipped_universal_serves_two_operators():
    if "universal" not in invstable.list_models():
        pytest.skip("the universal model is not installed")
    for op, preset in ((Blur(gaussian_kernel(2.0), image_size=128), "blur-g2"),
                       (ParallelBeamCT(128, angles=30), "ct-30")):
        model = invstable.load_model("universal", operator=op, preset=preset)
        x = invstable.data.shepp_logan(128)[None]
        y = op.A(x)
        x_hat = model(y)
        assert x_hat.shape == x.shape and model.last_solve.converged
        assert model.lipschitz_bound() == pytest.approx(1 / (2 * math.sqrt(model.strong_convexity)))
    from invstable.models._pretrained import _pretrained_path

    assert _pretrained_path("universal").stat().st_size < 4 * 2 ** 20
    info = invstable.models.model_info("universal")
    assert info["presets"] and info["training"]["steps"] > 0


# ------------------------------------------------------------------ training
def test_train_ridge_resumes_exactly_and_refuses_to_overwrite(tmp_path):
    from invstable.training import RidgeConfig, train_ridge

    cfg = RidgeConfig(channels=(1, 2, 4), kernel_size=3, knots=11, patch=16, batch_size=4, natural_patches=16,
                      phantom_patches=8, validation_patches=8, denoise_steps=3, steps=4, validate_every=2,
                      checkpoint_every=2)
    full, rec = train_ridge(cfg, log=lambda *_: None)
    ck = tmp_path / "ck.pt"
    part = RidgeConfig(**{**cfg.__dict__})
    # an interrupted run: train 2 steps (the checkpoint is written at step 2), then resume to 4
    import invstable.training._ridge as ridge

    class Stop(Exception):
        pass

    calls = {"n": 0}
    real_save = ridge.atomic_write

    def stop_after_first_save(path, write):
        out = real_save(path, write)
        calls["n"] += 1
        raise Stop
    ridge.atomic_write = stop_after_first_save
    try:
        with pytest.raises(Stop):
            train_ridge(part, checkpoint=ck, log=lambda *_: None)
    finally:
        ridge.atomic_write = real_save
    with pytest.raises(FileExistsError, match="resume"):
        train_ridge(part, checkpoint=ck, log=lambda *_: None)
    resumed, rec2 = train_ridge(part, checkpoint=ck, resume=True, log=lambda *_: None)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = RidgeConfig(**{**cfg.__dict__, "lr": 1e-4})
    with pytest.raises(ValueError, match="configuration"):
        train_ridge(other, checkpoint=ck, resume=True, log=lambda *_: None)
    assert rec2["curve"][-1]["step"] == 4


# ------------------------------------------------------------------ command line
def test_reconstruct_command_with_a_regularizer_file_and_any_registered_operator(tmp_path, capsys):
    import json

    import numpy as np

    from invstable.cli import main

    reg = _reg(dtype=torch.float32)
    path = save_regularizer(reg, tmp_path / "u.safetensors", metadata={"noise_levels": [
        {"sigma": 0.02, "lam": 0.05, "scale": 5.0}, {"sigma": 0.1, "lam": 0.2, "scale": 2.0}]})
    op = Blur(gaussian_kernel(1.0), image_size=24)
    y = op.A(torch.rand(1, 1, 24, 24))[0, 0].numpy()
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "x.npy"
    args = ["reconstruct", "--method", str(path), "--input", str(tmp_path / "y.npy"), "--out", str(out)]
    assert main(args) == 2  # no operator: a clear error, not a traceback
    assert "--operator" in capsys.readouterr().err
    assert main(args + ["--operator", "blur", "--sigma", "1.0", "--image-size", "24", "--noise-level", "0.05"]) == 0
    note = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.load(out).shape == (24, 24) and note["lipschitz_bound"] == pytest.approx(1 / (2 * math.sqrt(1e-3)))
