"""Cost of the constraints: training-step time of each constrained stack over the same stack unconstrained.

For every family, two stacks are built from the same seed with the public API, one with the constraint on
(warm-started power iteration, one iteration per step, plus the rescaling or step control) and one with
``constrained=False``; a training step (forward, backward, Adam update) of each is timed interleaved
(benchmarks/_common.time_interleaved), and the ratio of the medians is reported. Target (issue 3): <= 1.15.

Usage: python -m benchmarks.layer_overhead [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile

import torch

import invstable.nn as inn
from benchmarks._common import environment, time_interleaved, write_result
from invstable.evaluation import train_step_fn

FAMILIES = {
    "gradient_flow": ("gradient_flow", {}),
    "antisymmetric": ("antisymmetric", {"step": 0.5}),
    "hamiltonian_verlet": ("hamiltonian", {"scheme": "verlet", "step": 0.5}),
    "hamiltonian_leapfrog": ("hamiltonian", {"scheme": "leapfrog", "step": 0.5}),
    "hamiltonian_symplectic_euler": ("hamiltonian", {"scheme": "symplectic_euler", "step": 0.5}),
    "dense": ("dense", {"step": 0.5}),
}


class _LiftStack(torch.nn.Module):
    """A stack of norm-constrained 3x3 convolutions with ReLU (the lifting/projection layers)."""

    def __init__(self, channels, depth, constrained, rng, device):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            inn.ConstrainedConv2d(channels, channels, constrained=constrained, rng=rng, device=device)
            for _ in range(depth))

    def forward(self, x):
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x


def build(name, constrained, *, channels, depth, device):
    rng = torch.Generator().manual_seed(0)
    if name == "constrained_conv":
        return _LiftStack(channels, depth, constrained, rng, device)
    family, options = FAMILIES[name]
    return inn.stable_network(family, channels=channels, depth=depth, constrained=constrained, rng=rng,
                              device=device, **options)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (< 2 minutes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:
        sizes = dict(batch=4, channels=8, image=16, depth=4)
        repeats = 5
    else:
        sizes = dict(batch=8, channels=16, image=32, depth=4)
        repeats = 15
    g = torch.Generator().manual_seed(1)
    shape = (sizes["batch"], sizes["channels"], sizes["image"], sizes["image"])
    x = torch.randn(shape, generator=g).to(device)
    target = torch.randn(shape, generator=g).to(device)
    results = {}
    for name in list(FAMILIES) + ["constrained_conv"]:
        fns = {}
        for constrained in (True, False):
            model = build(name, constrained, channels=sizes["channels"], depth=sizes["depth"], device=device)
            fns["on" if constrained else "off"] = train_step_fn(model, x, target)
        t = time_interleaved(fns, repeats=repeats, device=device)
        ratio = t["on"]["median_s"] / t["off"]["median_s"]
        results[name] = {"ratio": ratio, "constrained": t["on"], "unconstrained": t["off"]}
        print(f"{name:32s} ratio {ratio:.3f}  (on {t['on']['median_s'] * 1e3:.2f} ms, "
              f"off {t['off']['median_s'] * 1e3:.2f} ms)", flush=True)
    payload = {
        "benchmark": "layer_overhead",
        "protocol": "training step (forward, backward, Adam) of a constrained stack over the same stack with "
                    "constrained=False, medians of interleaved timings, one run; power_iterations=1",
        "target_ratio": 1.15,
        "quick": args.quick,
        "sizes": sizes,
        "repeats": repeats,
        "results": results,
        "environment": environment(device),
    }
    # a quick run is a smoke test: it goes to a temporary folder, never over the published result
    results_dir = tempfile.mkdtemp(prefix="invstable-quick-") if args.quick else None
    path = write_result("layer_overhead", payload, results_dir=results_dir)
    _plot(results, path.with_suffix(".png"))
    print(f"wrote {path}")


def _plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(results)
    ratios = [results[n]["ratio"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(names, ratios, color="tab:blue")
    ax.axvline(1.15, color="tab:red", ls="--", label="target 1.15")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("training-step time, constrained / unconstrained")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
