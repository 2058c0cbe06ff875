"""Helpers for the invstable.nn tests: tolerances, ratio search, builders over every family."""

from __future__ import annotations

import pytest
import torch

import invstable.nn as inn


@pytest.fixture(autouse=False)
def one_thread():
    """Tiny tensors on a shared 2-core machine: one thread avoids OpenMP contention (restored after)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tol(dtype: torch.dtype) -> float:
    """Absolute/relative tolerance for comparisons in ``dtype``."""
    return 1e-10 if dtype == torch.float64 else 1e-4


def ratio(f, x, z):
    """Per-sample ||f(x) - f(z)|| / ||x - z||."""
    d_out = (f(x) - f(z)).flatten(1).norm(dim=1)
    d_in = (x - z).flatten(1).norm(dim=1)
    return d_out / d_in


def random_ratio(f, shape, *, generator, n=64, dtype=torch.float64):
    x = torch.randn((n,) + tuple(shape), generator=generator, dtype=dtype)
    # pairs at several scales: far apart, and close (the local Jacobian)
    scale = torch.logspace(-3, 0, n, dtype=dtype).reshape((n,) + (1,) * len(shape))
    z = x + scale * torch.randn((n,) + tuple(shape), generator=generator, dtype=dtype)
    with torch.no_grad():
        return float(ratio(f, x, z).max())


def adversarial_ratio(f, shape, *, generator, starts=3, steps=80, lr=0.05, dtype=torch.float64):
    """Largest ratio found by Adam ascent on (x, z) from a few random starts."""
    best = 0.0
    for _ in range(starts):
        x = torch.randn((4,) + tuple(shape), generator=generator, dtype=dtype).requires_grad_(True)
        z = (x.detach() + 0.1 * torch.randn(x.shape, generator=generator, dtype=dtype)).requires_grad_(True)
        opt = torch.optim.Adam([x, z], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            r = ratio(f, x, z)
            (-r.sum()).backward()
            opt.step()
            best = max(best, float(r.detach().max()))
        with torch.no_grad():
            best = max(best, float(ratio(f, x, z).max()))
    return best


def scale_weights(module: torch.nn.Module, factor: float) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "weight" in name:
                p.mul_(factor)


# (id, builder(dtype, features, rng) -> module taking x of shape (B, C, ...)); C = 2
def _net(family, **kw):
    def build(dtype, features, rng):
        return inn.stable_network(family, channels=2, features=features, rng=rng, dtype=dtype, **kw)
    return build


CASES = {
    "gradient_flow": _net("gradient_flow", depth=3, step=2.0, hidden=3),
    "gradient_flow_split": _net("gradient_flow", depth=2, step=3.0, step_control="split"),
    "gradient_flow_leaky_contractive": _net("gradient_flow", depth=2, activation="leaky_relu", contraction=0.9),
    "gradient_flow_strongly_convex": _net("gradient_flow", depth=2, activation="tanh", strong_convexity=0.3),
    "antisymmetric": _net("antisymmetric", depth=3, step=0.5, gamma=0.1),
    "resnet": _net("resnet", depth=3, step=0.5),
    "verlet": _net("hamiltonian", depth=3, step=0.5, aux_channels=3),
    "leapfrog": _net("hamiltonian", depth=3, step=0.5, scheme="leapfrog", hidden=3),
    "symplectic_euler": _net("hamiltonian", depth=3, step=0.5, scheme="symplectic_euler"),
    "dense": _net("dense", depth=3, step=0.5),
    "lift": lambda dtype, features, rng: (
        inn.ConstrainedConv2d(2, 3, bound=0.7, rng=rng, dtype=dtype) if features == "image"
        else inn.ConstrainedLinear(2, 3, bound=0.7, rng=rng, dtype=dtype)),
}


def sample_shape(features: str) -> tuple[int, ...]:
    return (2, 5, 5) if features == "image" else (2,)
