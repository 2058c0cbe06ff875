"""The quality benchmark (invstable.evaluation): scores and the target checks (the full run is a benchmark, not a
test)."""

import numpy as np
import torch

from invstable.evaluation import scores
from invstable.evaluation._quality import targets


def test_scores_of_a_perfect_and_a_noisy_reconstruction():
    x = torch.rand(3, 1, 16, 16)
    s = scores(x, x)
    assert np.all(s["psnr"] > 150) and np.allclose(s["ssim"], 1) and np.allclose(s["relative_error"], 0)
    noisy = scores(x + 0.1, x)
    assert np.all(noisy["psnr"] < 25) and np.all(noisy["relative_error"] > 0)
    assert np.allclose(scores(x + 5, x)["psnr"], scores(torch.ones_like(x), x)["psnr"])  # clipped to [0, 1]


def test_targets_are_computed_from_the_rows():
    rows = [
        {"method": "Tikhonov (identity, validation alpha)", "psnr_mean": 24.0, "lipschitz_bound": 7.0},
        {"method": "Tikhonov (gradient, validation alpha)", "psnr_mean": 25.0, "lipschitz_bound": None},
        {"method": "TV (validation lambda)", "psnr_mean": 28.0, "lipschitz_bound": float("inf")},
        {"method": "ct30-gradflow", "psnr_mean": 31.5, "lipschitz_bound": 13.0},
        {"method": "ct30-unconstrained", "psnr_mean": 33.0, "lipschitz_bound": float("inf")},
    ]
    got = {(t["model"], t["target"]): t for t in targets("ct-30", rows)}
    assert got[("ct30-gradflow", "above best Tikhonov by >= 6 dB")]["met"]  # 31.5 - 25 = 6.5
    assert got[("ct30-gradflow", "above TV by >= 2 dB")]["met"]
    assert not got[("ct30-gradflow", "within 1 dB of the unconstrained model (or better)")]["met"]
    ratio = got[("ct30-gradflow", "bound at most twice Tikhonov's constant (ratio <= 2)")]
    assert ratio["met"] and ratio["value"] == round(13 / 7, 3)
    assert got[("ct30-unconstrained", "above TV by >= 2 dB")]["met"]
    assert ("ct30-unconstrained", "within 1 dB of the unconstrained model (or better)") not in got
