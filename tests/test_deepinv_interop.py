"""deepinv interop both ways: invstable models as deepinv Reconstructors (deepinv.test, Trainer), deepinv denoisers
as invstable blocks (never certified)."""

import math

import deepinv
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from invstable.models import DenoiserBlock, UnrolledInverse, VariationalInverse, load_model
from invstable.operators import Blur, gaussian_kernel
from invstable.training import psnr

SIZE = 32


def _pairs(op, count=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(count, 1, SIZE, SIZE, generator=g), 5, 1, 2)
    return x, op.A(x) + 0.01 * torch.randn(x.shape, generator=g)


class _Pairs(Dataset):
    """(x, y) pairs as deepinv's Trainer reads them: dicts with keys "x" and "y"."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def _loader(x, y):
    return DataLoader(_Pairs(x, y), batch_size=2)


def _deepinv_blur(sigma=2.0):
    # deepinv's own FFT blur: the same circular convolution as invstable's Blur, another implementation
    return deepinv.physics.BlurFFT(img_size=(1, SIZE, SIZE), filter=gaussian_kernel(sigma)[None, None])


def _test(model, x, y, physics):
    return deepinv.test(model, _loader(x, y), physics, device="cpu", verbose=False, show_progress_bar=False,
                        compare_no_learning=False)


@pytest.fixture
def op():
    return Blur(gaussian_kernel(2.0), image_size=SIZE)


@pytest.fixture
def tiny(op):
    return UnrolledInverse(op, iterations=2, channels=4).eval()


@pytest.fixture
def universal(op):
    return load_model("universal", operator=op, preset="blur-g2")


def test_models_are_deepinv_reconstructors(tiny, universal):
    assert isinstance(tiny, deepinv.models.Reconstructor)
    assert isinstance(universal, deepinv.models.Reconstructor)


def test_shipped_model_in_deepinv_test_scores_as_in_invstable():
    from invstable.data import task

    blur = task("blur-g2")
    x, y = (torch.stack(t) for t in zip(*(blur.pairs("validation")[i] for i in range(2))))
    model = load_model("blur-wide")
    assert isinstance(model, deepinv.models.Reconstructor)
    physics = deepinv.physics.BlurFFT(img_size=tuple(x.shape[1:]), filter=blur.operator.kernel.float()[None, None])
    result = _test(model, x, y, physics)
    with torch.no_grad():
        own = float(psnr(model(y).clamp(0, 1), x).mean())
    assert result["PSNR"] == pytest.approx(own, abs=1e-2)  # deepinv's PSNR is in float32, invstable's in float64
    assert own > float(psnr(blur.operator.A_adjoint(y).clamp(0, 1), x).mean())


def test_unrolled_model_runs_in_deepinv_test_with_the_score_of_invstable(tiny, op):
    x, y = _pairs(op)
    result = _test(tiny, x, y, _deepinv_blur())
    with torch.no_grad():
        own = float(psnr(tiny(y).clamp(0, 1), x).mean())
    assert result["PSNR"] == pytest.approx(own, abs=1e-3)


def test_universal_model_runs_in_deepinv_test_with_deepinv_physics(universal, op):
    x, y = _pairs(op)
    result = _test(universal, x, y, _deepinv_blur())
    own = float(psnr(universal(y).clamp(0, 1), x).mean())
    # two solves to the same certified tolerance: equal up to it
    assert result["PSNR"] == pytest.approx(own, abs=0.05)
    assert result["PSNR"] > float(psnr(op.A_adjoint(y).clamp(0, 1), x).mean())


def test_model_y_and_model_y_physics_agree(tiny, op):
    _, y = _pairs(op)
    with torch.no_grad():
        alone = tiny(y)
        assert torch.equal(tiny(y, op), alone)
        assert torch.allclose(tiny(y, _deepinv_blur()), alone, atol=1e-5)


def test_unrolled_model_refuses_another_operator_and_says_how(tiny, op):
    _, y = _pairs(op)
    with pytest.raises(ValueError, match="bound to it.*with_operator"):
        tiny(y, _deepinv_blur(sigma=1.0))
    with pytest.raises(TypeError, match="unexpected keyword"):
        tiny(y, op, x_gt=y)


def test_with_operator_recomputes_the_certificate_for_the_new_operator(tiny, op):
    other = _deepinv_blur(sigma=1.0)
    _, y = _pairs(op)
    tiny(y)  # fixes the image size: the norm of a deepinv physics is estimated on it
    moved = tiny.with_operator(other)
    assert moved.operator is other and tiny.operator is op
    fresh = UnrolledInverse(other, iterations=2, channels=4, image_shape=tiny.image_shape).eval()
    fresh.load_state_dict(moved.state_dict())
    assert moved.lipschitz_bound() == pytest.approx(fresh.lipschitz_bound(), rel=1e-9)
    assert moved.lipschitz_bound() != pytest.approx(tiny.lipschitz_bound(), rel=1e-6)
    assert moved(y, other).shape == y.shape


def test_universal_model_solves_with_the_physics_it_is_given(universal, op):
    other = _deepinv_blur(sigma=1.0)
    _, y = _pairs(op)
    got = universal(y, other)
    assert universal.operator is op
    direct = VariationalInverse(universal.regularizer, other, lam=universal.lam, scale=universal.scale,
                                strong_convexity=universal.strong_convexity, reference=universal.reference)
    tol = 2 * universal.tol * SIZE  # both within tol * sqrt(pixels) of the same minimiser
    assert float((got - direct(y)).flatten(1).norm(dim=1).max()) <= tol
    assert universal.lipschitz_bound(other) == pytest.approx(1 / (2 * math.sqrt(universal.strong_convexity)))


def test_deepinv_trainer_trains_an_unrolled_model(tiny, op):
    x, y = _pairs(op)
    before = [p.detach().clone() for p in tiny.parameters()]
    trainer = deepinv.Trainer(tiny, physics=op, optimizer=torch.optim.Adam(tiny.parameters(), lr=1e-2),
                              train_dataloader=_loader(x, y), epochs=1,
                              save_path=None, verbose=False, show_progress_bar=False, device="cpu")
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, tiny.parameters()))
    assert math.isfinite(tiny.lipschitz_bound())  # still certified after deepinv trained it


def _dncnn():
    return deepinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None)  # never downloads weights


def test_denoiser_block_runs_and_is_never_certified(op):
    model = UnrolledInverse(op, denoiser=_dncnn(), denoiser_sigma=0.05, iterations=3).eval()
    _, y = _pairs(op)
    assert model(y).shape == y.shape
    with pytest.warns(UserWarning, match="no certified Lipschitz bound"):
        assert model.lipschitz_bound() == math.inf
    assert all(isinstance(b, DenoiserBlock) and b.lipschitz_bound() == math.inf for b in model.blocks)
    # the denoiser's weights are the model's (shared by the iterations)
    assert sum(p.numel() for p in model.parameters()) == (sum(p.numel() for p in model.blocks[0].parameters())
                                                           + model.step_logits.numel())


def test_denoiser_model_trains_in_deepinv_and_cannot_be_saved(op, tmp_path):
    model = UnrolledInverse(op, denoiser=_dncnn(), denoiser_sigma=0.05, iterations=2)
    x, y = _pairs(op)
    trainer = deepinv.Trainer(model, physics=op, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                              train_dataloader=_loader(x, y), epochs=1,
                              save_path=None, verbose=False, show_progress_bar=False, device="cpu")
    trainer.train()
    with pytest.raises(ValueError, match="no invstable configuration"):
        model.save(tmp_path / "m.safetensors")


def test_denoiser_options_are_checked(op):
    with pytest.raises(ValueError, match="denoiser_sigma"):
        UnrolledInverse(op, denoiser=_dncnn())
    with pytest.raises(ValueError, match="family"):
        UnrolledInverse(op, denoiser=_dncnn(), denoiser_sigma=0.05, family="hamiltonian")
    with pytest.raises(ValueError, match="channels"):
        UnrolledInverse(op, denoiser=_dncnn(), denoiser_sigma=0.05, channels=4)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        DenoiserBlock(lambda x, s: x, sigma=0.05)
    with pytest.raises(ValueError, match="pass a denoiser"):
        UnrolledInverse(op, denoiser_sigma=0.05)
