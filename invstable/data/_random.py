"""Seeds and generators: every random draw in ``invstable.data`` goes through here.

Sample ``index`` of a seeded source draws from its own numpy PCG64 generator seeded with
``SeedSequence((seed, index))``: the 128-bit states of two different pairs coincide with
probability about 2**-64, so streams of different seeds (the train / validation / test splits)
do not share a draw, whatever their sizes. (torch's CPU generator keeps only 32 bits of its
seed, too few for that, so it is used only for the noise, which deepinv draws.)
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

MAX_SEED = 2**31 - 1


def check_seed(seed, *, name: str = "seed") -> int:
    """Return ``seed`` as an int after checking it is an integer in [0, 2**31 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int in [0, {MAX_SEED}], got {seed!r} of type {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be in [0, {MAX_SEED}], got {seed}; pass a smaller non-negative int")
    return seed


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of the stream ``seed``."""
    if index < 0:
        raise IndexError(f"sample index must be >= 0, got {index}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence((check_seed(seed), int(index)))))


def noise_generator(*words: int) -> torch.Generator:
    """A torch CPU generator for a noise draw, seeded by hashing non-negative ints."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def as_numpy_rng(rng) -> np.random.Generator:
    """Turn ``rng`` into a numpy generator.

    A ``torch.Generator`` is advanced by one draw that seeds the result; an int seeds
    ``numpy.random.default_rng``; ``None`` takes fresh OS entropy (non-reproducible). The
    global torch and numpy random states are never read nor changed.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=rng)))
    if rng is None:
        return np.random.default_rng()
    return np.random.default_rng(check_seed(rng, name="rng"))
