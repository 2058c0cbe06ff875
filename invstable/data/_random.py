"""Seeds and generators: every random draw in ``invstable.data`` goes through here.

A sample of a seeded source is drawn from its own generator, seeded from the pair
(seed, index). The map ``(seed, index) -> (seed << 32) | index`` is injective, so two
sources with different seeds never share a generator state, whatever their sizes.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

MAX_SEED = 2**31 - 1
MAX_INDEX = 2**32 - 1


def check_seed(seed, *, name: str = "seed") -> int:
    """Return ``seed`` as an int after checking it is an integer in [0, 2**31 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int in [0, {MAX_SEED}], got {seed!r} of type {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be in [0, {MAX_SEED}], got {seed}; pass a smaller non-negative int")
    return seed


def sample_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator for sample ``index`` of the stream ``seed`` (injective in the pair)."""
    if not 0 <= index <= MAX_INDEX:
        raise IndexError(f"sample index must be in [0, {MAX_INDEX}], got {index}")
    return torch.Generator().manual_seed((check_seed(seed) << 32) | int(index))


def mixed_generator(*words: int) -> torch.Generator:
    """A CPU generator seeded by hashing non-negative ints (for noise draws, which need no disjointness)."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) | (int(state[1]) >> 1))


def as_generator(rng) -> torch.Generator:
    """Turn ``rng`` (a ``torch.Generator``, an int seed or ``None``) into a CPU generator.

    ``None`` gives a generator seeded from fresh OS entropy (non-reproducible); the global
    torch seed is never read nor changed.
    """
    if isinstance(rng, torch.Generator):
        return rng
    if rng is None:
        return torch.Generator().manual_seed(int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> 1))
    return torch.Generator().manual_seed(check_seed(rng, name="rng"))
