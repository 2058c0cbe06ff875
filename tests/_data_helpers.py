"""Small shared builders for the tests of invstable.data (tiny sizes, fast)."""

from __future__ import annotations

from invstable.data import EllipsePhantoms, Noise, PairedDataset
from invstable.operators import make_operator

SIZE = 16


def small_ct(angles: int = 7):
    return make_operator("ct", image_size=SIZE, angles=angles)


def small_pairs(*, count: int = 12, seed: int = 0, noise_seed: int = 0, operator=None,
                noise: Noise | None = None) -> PairedDataset:
    return PairedDataset(EllipsePhantoms(SIZE, count=count, seed=seed), operator or small_ct(),
                         noise or Noise(0.05, relative=True), seed=noise_seed)
