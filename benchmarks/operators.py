"""Operator speed protocol (PROTOCOLS.md): ``A`` and ``A^T`` per batch of 8 on CT-30 and CT-180 against deepinv's
``Tomography`` with the same geometry, as ratios timed interleaved in one run; CPU with 2 threads, and the GPU when
there is one. Also the circular blur of Blur-G2 against deepinv's ``Blur``, and the one-off cost of building the
sparse projector.

    python benchmarks/operators.py            # full run, writes benchmarks/results/operators.json
    python benchmarks/operators.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import deepinv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import environment, time_interleaved, write_result  # noqa: E402
from invstable.operators import Blur, ParallelBeamCT, gaussian_kernel  # noqa: E402

BATCH = 8
SIZE = 128


def ct_case(angles: int, device: torch.device, repeats: int, size: int = SIZE) -> dict:
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (protocol: 2)")
    parser.add_argument("--results-dir", default=None, help="where to write operators.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 20
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    runs = []
    for device in devices:
        cases = [ct_case(30, device, repeats), ct_case(180, device, repeats), blur_case(device, repeats)]
        runs.append({"environment": environment(device), "cases": cases})
        for c in cases:
            print(f"{device.type:>4} {c['task']:<8} A: {c['speedup_A']:6.1f}x  A^T: {c['speedup_AT']:6.1f}x faster "
                  f"than deepinv (invstable A {c['timings']['invstable_A']['median_s'] * 1e3:.2f} ms, "
                  f"A^T {c['timings']['invstable_AT']['median_s'] * 1e3:.2f} ms per batch of {BATCH})")
    payload = {
        "benchmark": "operators", "protocol": "PROTOCOLS.md, Speed: operator", "quick": args.quick,
        "command": "python benchmarks/operators.py" + (" --quick" if args.quick else ""),
        "target": "ParallelBeamCT A and A^T each >= 20x faster than deepinv Tomography (CT-180, batch 8, CPU)",
        "runs": runs,
        "numpy": np.__version__, "deepinv": deepinv.__version__,
    }
    path = write_result("operators", payload, results_dir=args.results_dir)
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
