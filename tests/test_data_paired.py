"""On-the-fly pairs and the protocol tasks."""

import math

import pytest
import torch

from invstable.data import EllipsePhantoms, Noise, PairedDataset, SheppLogan, shepp_logan, task
from invstable.operators import make_operator

from ._data_helpers import SIZE, small_ct, small_pairs


def test_pair_is_operator_of_image_plus_noise_of_the_rule():
    op = small_ct()
    pairs = PairedDataset(EllipsePhantoms(SIZE, count=4, seed=0), op, Noise(0.05, relative=True), seed=0)
    for i in range(4):
        x, y, sigma = pairs.sample(i)
        assert torch.equal(x, pairs.source[i])
        clean = op.A(x[None])[0]
        assert y.shape == clean.shape
        assert math.isclose(float(sigma), 0.05 * float(clean.abs().mean()), rel_tol=1e-5)


def test_relative_noise_has_the_requested_std_per_sample():
    # large identity "measurements": the empirical std matches 5 % of mean |A x| of each sample
    import deepinv

    images = [torch.full((1, 200, 200), v) for v in (0.2, 0.8)]

    class Constant(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return images[i]

    pairs = PairedDataset(Constant(), deepinv.physics.LinearPhysics(), Noise(0.05, relative=True), seed=3)
    for i, v in enumerate((0.2, 0.8)):
        x, y = pairs[i]
        assert math.isclose(float((y - x).std()), 0.05 * v, rel_tol=0.02)
    fixed = PairedDataset(Constant(), deepinv.physics.LinearPhysics(), Noise(0.01), seed=3)
    assert math.isclose(float((fixed[1][1] - images[1]).std()), 0.01, rel_tol=0.02)


def test_same_index_same_noise_every_epoch_unless_asked():
    pairs = small_pairs()
    y0 = pairs[3][1]
    pairs.set_epoch(5)
    assert torch.equal(pairs[3][1], y0)
    fresh = small_pairs()
    fresh.fixed_noise = False
    fresh.set_epoch(0)
    a = fresh[3][1]
    fresh.set_epoch(1)
    b = fresh[3][1]
    assert not torch.equal(a, b)
    fresh.set_epoch(0)
    assert torch.equal(fresh[3][1], a)
    assert not torch.equal(small_pairs(noise_seed=1)[3][1], y0)


def test_pairs_identical_through_dataloader_workers():
    pairs = small_pairs(count=8)
    loader = torch.utils.data.DataLoader(pairs, batch_size=4, num_workers=2, shuffle=False)
    xs, ys = zip(*loader)
    assert torch.equal(torch.cat(ys), torch.stack([pairs[i][1] for i in range(8)]))
    assert torch.equal(torch.cat(xs), torch.stack([pairs[i][0] for i in range(8)]))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="noise level must be a finite float >= 0, got -0.1"):
        Noise(-0.1)
    with pytest.raises(ValueError, match="unknown noise kind 'poison'; valid kinds are"):
        Noise(0.1, kind="poison")
    with pytest.raises(TypeError, match="noise must be an invstable.data.Noise, got float"):
        PairedDataset(SheppLogan(8), small_ct(), 0.1, seed=0)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        small_pairs().set_epoch(-1)


def test_protocol_tasks_follow_protocols_md():
    ct30, ct180, blur = task("ct-30"), task("ct-180"), task("blur-g2")
    assert ct30.operator.config() == make_operator("ct", image_size=128, angles=30).config()
    assert len(ct30.operator.config()["params"]["angles"]) == 30
    assert len(ct180.operator.config()["params"]["angles"]) == 180
    assert ct30.noise == Noise(0.05, relative=True) and ct180.noise == Noise(0.01, relative=True)
    assert blur.noise == Noise(0.01)
    from invstable.operators import Blur, gaussian_kernel

    assert blur.operator.config() == Blur(gaussian_kernel(sigma=2.0), image_size=128).config()
    # CT test set: 100 phantoms of a seed no training stream may use, then Shepp-Logan at 128
    assert len(ct30.test) == 101 and torch.equal(ct30.test[100], shepp_logan(128))
    assert ct30.seeds["test"] not in (ct30.seeds["train"], ct30.seeds["validation"])
    assert ct30.test.parts[0].seed == ct30.seeds["test"] and ct30.validation.seed == ct30.seeds["validation"]
    # Blur-G2 test set: 64 crops of camera, moon, coins
    assert len(blur.test) == 64 and set(blur.test.images) == {"camera", "moon", "coins"}
    assert all(s.region == r for s, r in ((blur.train, "train"), (blur.validation, "validation")))
    x, y = blur.pairs("test")[0]
    assert x.shape == (1, 128, 128) and y.shape == (1, 128, 128)


def test_task_splits_refuse_reserved_seeds_and_changes_to_fixed_splits():
    ct = task("ct-30")
    for reserved in (ct.seeds["validation"], ct.seeds["test"]):
        with pytest.raises(ValueError, match=f"training seed {reserved} is reserved"):
            ct.source("train", seed=reserved)
    with pytest.raises(ValueError, match="the test split of ct-30 is fixed by the protocol"):
        ct.source("test", count=10)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        ct.source("val")
    with pytest.raises(ValueError, match="unknown task 'ct-60'; valid tasks are"):
        task("ct-60")
    other = ct.pairs("train", count=3, seed=7)
    assert len(other) == 3 and other.seed == 7 and other.source.seed == 7
