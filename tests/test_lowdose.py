"""Photon-counting noise (Poisson, log-Poisson low-dose CT) and the ct-30-lowdose task."""

import json
import math

import numpy as np
import pytest
import torch

from invstable.data import EllipsePhantoms, HDF5PairedDataset, Noise, PairedDataset, make_dataset, task

from ._data_helpers import SIZE, small_ct

LOW = Noise(kind="log-poisson", photons=4096, attenuation=2.0)


def _constant_pairs(values, noise, *, seed=0, shape=(1, 300, 300)):
    import deepinv

    class Constant(torch.utils.data.Dataset):
        def __len__(self):
            return len(values)

        def __getitem__(self, i):
            return torch.full(shape, float(values[i]))

    return PairedDataset(Constant(), deepinv.physics.LinearPhysics(), noise, seed=seed)


def test_log_poisson_has_the_delta_method_mean_and_std():
    # y = -log(P(N0 exp(-mu c)) / N0) / mu: variance exp(mu c) / (mu^2 N0) to first order and mean
    # c + exp(mu c) / (2 mu N0) to second order (the log of a Poisson count is biased upwards)
    pairs = _constant_pairs([0.0, 0.5, 1.5], LOW)
    for i, c in enumerate((0.0, 0.5, 1.5)):
        x, y, sigma = pairs.sample(i)
        predicted = math.exp(LOW.attenuation * c / 2) / (LOW.attenuation * math.sqrt(LOW.photons))
        assert math.isclose(float(sigma), predicted, rel_tol=1e-5)
        assert math.isclose(float((y - c).std()), predicted, rel_tol=0.03)
        bias = math.exp(LOW.attenuation * c) / (2 * LOW.attenuation * LOW.photons)
        assert abs(float((y - c).mean()) - bias) < 4 * predicted / 300  # 4 standard errors of 90 000 draws
    # fewer photons, more noise: the std grows as 1 / sqrt(N0)
    quarter = _constant_pairs([0.5], Noise(kind="log-poisson", photons=1024, attenuation=2.0))
    assert math.isclose(float(quarter.sample(0)[2]), 2 * float(pairs.sample(1)[2]), rel_tol=1e-5)


def test_poisson_counts_photons_of_the_measurement():
    noise = Noise(kind="poisson", photons=50.0)
    x, y, sigma = _constant_pairs([0.4], noise).sample(0)
    counts = y * 50.0
    assert torch.allclose(counts, counts.round(), atol=1e-3)  # whole photons
    assert math.isclose(float(y.mean()), 0.4, rel_tol=0.01)
    assert math.isclose(float(y.var()), 0.4 / 50.0, rel_tol=0.03)
    assert math.isclose(float(sigma), math.sqrt(0.4 / 50), rel_tol=1e-6)
    with pytest.raises(ValueError, match="must be >= 0, but its smallest entry is -0.5"):
        noise(torch.full((1, 1, 2, 2), -0.5), rng=torch.Generator())


def test_a_bin_without_photons_reads_as_a_tenth_of_a_photon():
    few = Noise(kind="log-poisson", photons=2.0, attenuation=1.0)
    y, _ = few(torch.full((1, 1, 64, 64), 8.0), rng=torch.Generator().manual_seed(0))  # 2 e^-8: almost no photon
    assert bool(torch.isfinite(y).all())
    assert math.isclose(float(y.max()), -math.log(0.1 / 2.0), rel_tol=1e-6)


def test_photon_noise_is_reproducible_per_index_and_follows_the_seed():
    pairs = PairedDataset(EllipsePhantoms(SIZE, count=4, seed=0), small_ct(), LOW, seed=5)
    again = PairedDataset(EllipsePhantoms(SIZE, count=4, seed=0), small_ct(), LOW, seed=5)
    assert torch.equal(pairs[2][1], again[2][1]) and torch.equal(pairs[3][1], again[3][1])
    assert not torch.equal(pairs[2][1], PairedDataset(EllipsePhantoms(SIZE, count=4, seed=0), small_ct(), LOW,
                                                      seed=6)[2][1])
    pairs.set_epoch(3)  # fixed noise: the same in every epoch
    assert torch.equal(pairs[2][1], again[2][1])


def test_photon_noise_rules_are_checked():
    with pytest.raises(ValueError, match="kind='log-poisson' needs attenuation > 0"):
        Noise(kind="log-poisson", photons=100)
    with pytest.raises(ValueError, match="kind='poisson' needs photons > 0 .*, got -3"):
        Noise(kind="poisson", photons=-3)
    with pytest.raises(ValueError, match="level and relative describe Gaussian noise"):
        Noise(0.05, kind="log-poisson", photons=100, attenuation=1.0)
    with pytest.raises(ValueError, match="photons set photon-counting noise; pass kind='poisson'"):
        Noise(0.05, photons=100)
    with pytest.raises(ValueError, match="attenuation is for kind='log-poisson'"):
        Noise(kind="poisson", photons=100, attenuation=1.0)


def test_configs_rebuild_the_rule_and_gaussian_configs_are_unchanged():
    for noise in (LOW, Noise(kind="poisson", photons=10), Noise(0.05, relative=True)):
        assert Noise(**json.loads(json.dumps(noise.config()))) == noise
    # the key set of Gaussian rules is what files made before photon noise existed store (same checksums)
    assert Noise(0.01).config() == {"kind": "gaussian", "level": 0.01, "relative": False}
    assert repr(LOW) == "Noise(photons=4096.0, attenuation=2.0, kind='log-poisson')"
    assert "4096 photons" in LOW.describe()


def test_lowdose_task_is_ct30_with_log_poisson_noise():
    low, ct30 = task("ct-30-lowdose"), task("ct-30")
    assert low.noise == LOW and low.seeds == ct30.seeds
    assert low.operator.config() == ct30.operator.config()
    assert torch.equal(low.validation[3], ct30.validation[3]) and torch.equal(low.test[100], ct30.test[100])
    pairs = low.pairs("validation")
    xs, ys, sigmas = zip(*(pairs.sample(i) for i in range(6)))
    clean = low.operator.A(torch.stack(xs))
    noise = torch.stack(ys) - clean
    # the stored sigma is the noise's root mean square, to within sampling error
    assert torch.allclose(noise.flatten(1).pow(2).mean(1).sqrt(), torch.stack(sigmas), rtol=0.05)
    # over the validation split, not gentler than CT-30's 5 % of mean |A x| (on average)
    every = low.operator.A(torch.stack([low.validation[i] for i in range(len(low.validation))]))
    relative = low.noise.std(every) / every.flatten(1).abs().mean(1)
    assert float(relative.mean()) > 0.05
    # and the beam is not absorbed: the densest ray of every phantom keeps more than 1 % of its photons, that of
    # a typical phantom less than 20 %
    transmission = torch.exp(-low.noise.attenuation * every.flatten(1).amax(1))
    assert float(transmission.min()) > 0.01 and float(transmission.median()) < 0.2


def test_lowdose_file_records_the_photon_count(tmp_path):
    low = task("ct-30-lowdose")
    pairs = PairedDataset(EllipsePhantoms(SIZE, count=2, seed=0), small_ct(), low.noise, seed=1)
    make_dataset(tmp_path / "low.h5", pairs, task="ct-30-lowdose", split="validation", progress=False)
    stored = HDF5PairedDataset(tmp_path / "low.h5")
    assert stored.noise == low.noise and stored.meta["noise"]["photons"] == 4096
    x, y, sigma = stored.sample(1)
    assert np.array_equal(y.numpy(), pairs[1][1].numpy())
