"""Operator speed cases (PROTOCOLS.md, "Speed: operator"): ``A`` and ``A^T`` per batch of 8 against deepinv with
the same geometry, timed interleaved in one run (:func:`time_interleaved`); the speed-ups are ratios of medians.
"""

from __future__ import annotations

import time

import torch

from ..operators import Blur, ParallelBeamCT, gaussian_kernel
from ._record import time_interleaved

BATCH = 8
SIZE = 128


def ct_case(angles: int, device: torch.device, repeats: int, size: int = SIZE) -> dict:
    """``ParallelBeamCT(size, angles)`` against deepinv's ``Tomography`` (same angles, unnormalised), batch 8."""
    import deepinv  # noqa: PLC0415 (the peer library, only for the comparison)

    start = time.perf_counter()
    ours = ParallelBeamCT(size, angles, normalize=False)
    x = torch.rand(BATCH, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    ours.to(device).A(x)  # builds and moves the sparse matrices (one-off, cached per geometry)
    build_s = time.perf_counter() - start
    theta = torch.linspace(0, 180, angles + 1, dtype=torch.float32)[:-1]
    theirs = deepinv.physics.Tomography(theta.to(device), size, circle=False, normalize=False, device=device)
    y_ours, y_theirs = ours.A(x), theirs.A(x)
    ours.A_adjoint(y_ours)
    theirs.A_adjoint(y_theirs)
    timings = time_interleaved({
        "invstable_A": lambda: ours.A(x),
        "deepinv_A": lambda: theirs.A(x),
        "invstable_AT": lambda: ours.A_adjoint(y_ours),
        "deepinv_AT": lambda: theirs.A_adjoint(y_theirs),
    }, repeats=repeats, device=device)
    agreement = float((y_ours - y_theirs).norm() / y_theirs.norm()) if y_ours.shape == y_theirs.shape else None
    return {
        "task": f"CT-{angles}", "image_size": size, "angles": angles, "batch": BATCH,
        "measurement_shape": list(y_ours.shape), "deepinv_measurement_shape": list(y_theirs.shape),
        "relative_difference_to_deepinv": agreement,
        "projector_build_s": build_s,
        "timings": timings,
        "speedup_A": timings["deepinv_A"]["median_s"] / timings["invstable_A"]["median_s"],
        "speedup_AT": timings["deepinv_AT"]["median_s"] / timings["invstable_AT"]["median_s"],
    }


def blur_case(device: torch.device, repeats: int) -> dict:
    """The circular Gaussian blur of Blur-G2 against deepinv's ``Blur``, batch 8."""
    import deepinv  # noqa: PLC0415

    kernel = gaussian_kernel(2.0)
    ours = Blur(kernel, SIZE).to(device)
    theirs = deepinv.physics.Blur(filter=kernel[None, None].to(device), padding="circular", device=device)
    x = torch.rand(BATCH, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).to(device)
    timings = time_interleaved({
        "invstable_A": lambda: ours.A(x), "deepinv_A": lambda: theirs.A(x),
        "invstable_AT": lambda: ours.A_adjoint(x), "deepinv_AT": lambda: theirs.A_adjoint(x),
    }, repeats=repeats, device=device)
    return {
        "task": "Blur-G2", "image_size": SIZE, "batch": BATCH,
        "relative_difference_to_deepinv": float((ours.A(x) - theirs.A(x)).norm() / theirs.A(x).norm()),
        "timings": timings,
        "speedup_A": timings["deepinv_A"]["median_s"] / timings["invstable_A"]["median_s"],
        "speedup_AT": timings["deepinv_AT"]["median_s"] / timings["invstable_AT"]["median_s"],
    }
