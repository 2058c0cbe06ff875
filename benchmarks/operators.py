"""Operator speed protocol (PROTOCOLS.md): ``A`` and ``A^T`` per batch of 8 on CT-30 and CT-180 against deepinv's
``Tomography`` with the same geometry, as ratios timed interleaved in one run; CPU with 2 threads, and the GPU when
there is one. Also the circular blur of Blur-G2 against deepinv's ``Blur``, and the one-off cost of building the
sparse projector.

    python -m benchmarks.operators            # full run, writes benchmarks/results/operators.json
    python -m benchmarks.operators --quick    # fewer repeats

The cases are :func:`invstable.evaluation.ct_case` and :func:`invstable.evaluation.blur_case` (the speed
benchmark's operator section).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import deepinv

from benchmarks._common import environment, write_result
from invstable.evaluation import blur_case, ct_case


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
                  f"A^T {c['timings']['invstable_AT']['median_s'] * 1e3:.2f} ms per batch of {c['batch']})")
    payload = {
        "benchmark": "operators", "protocol": "PROTOCOLS.md, Speed: operator", "quick": args.quick,
        "command": "python -m benchmarks.operators" + (" --quick" if args.quick else ""),
        "target": "ParallelBeamCT A and A^T each >= 20x faster than deepinv Tomography (CT-180, batch 8, CPU)",
        "runs": runs,
        "numpy": np.__version__, "deepinv": deepinv.__version__,
    }
    path = write_result("operators", payload, results_dir=args.results_dir)
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
