"""Gradient norms against depth: where gradients vanish or explode, family by family.

For depths 8 ... 512 and each family (plain ResNet, antisymmetric, gradient flow, Hamiltonian/Verlet),
networks are built with the public API at their default initialisation and a fixed step, and the gradient
of ``<r, f(x)>`` (``r`` a fixed random unit direction) is measured with respect to the input ``x`` and to the
first layer's weight. Median over seeds. The certified ``lipschitz_bound()`` is recorded next to it.

Usage: python -m benchmarks.depth_gradients [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile

import torch

import invstable.nn as inn
from benchmarks._common import environment, write_result

FAMILIES = {
    "resnet": ("resnet", {}),
    "antisymmetric": ("antisymmetric", {}),
    "gradient_flow": ("gradient_flow", {}),
    "hamiltonian_verlet": ("hamiltonian", {"scheme": "verlet"}),
}


def first_weight(net):
    return next(p for n, p in net.named_parameters() if n.startswith("layers.0.") and "weight" in n)


def measure(family, depth, *, seed, channels, image, step):
    name, options = FAMILIES[family]
    g = torch.Generator().manual_seed(seed)
    net = inn.stable_network(name, channels=channels, depth=depth, step=step, rng=g, **options)
    x = torch.randn(4, channels, image, image, generator=g).requires_grad_(True)
    r = torch.randn(4, channels, image, image, generator=g)
    r = r / r.norm()
    net.eval()
    net(x.detach())  # warm-start vectors at this size (eval: the map then stays fixed)
    out = (net(x) * r).sum()
    gx, gw = torch.autograd.grad(out, [x, first_weight(net)])
    return {"grad_input": float(gx.norm()), "grad_first_weight": float(gw.norm()),
            "output_norm_ratio": float(net(x).detach().norm() / x.detach().norm()),
            "lipschitz_bound": net.lipschitz_bound()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (no timing is reported; 1 avoids contention on shared cores)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        depths, seeds, channels, image = [8, 32, 128], [0], 2, 4
    else:
        depths, seeds, channels, image = [8, 16, 32, 64, 128, 256, 512], [0, 1, 2], 4, 8
    step = 0.5
    results: dict[str, dict] = {}
    for family in FAMILIES:
        results[family] = {}
        for depth in depths:
            runs = [measure(family, depth, seed=s, channels=channels, image=image, step=step) for s in seeds]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            results[family][str(depth)] = med
            print(f"{family:20s} depth {depth:4d}  |d/dx| {med['grad_input']:.3e}  "
                  f"|d/dK1| {med['grad_first_weight']:.3e}  bound {med['lipschitz_bound']:.3e}", flush=True)
    payload = {
        "benchmark": "depth_gradients",
        "protocol": "gradient of <r, f(x)> (r fixed random unit direction) w.r.t. x and the first layer's "
                    "weight; default initialisation (weights N(0, 1/fan_in)), eval mode, step h fixed, so the "
                    "final time T = depth * h grows with depth; median over seeds",
        "quick": args.quick,
        "depths": depths, "seeds": seeds, "channels": channels, "image_size": image, "batch": 4, "step": step,
        "results": results,
        "environment": environment("cpu"),
    }
    path = write_result("depth_gradients", payload,
                        results_dir=tempfile.mkdtemp(prefix="invstable-quick-") if args.quick else None)
    _plot(results, depths, path.with_suffix(".png"))
    print(f"wrote {path}")


def _plot(results, depths, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "grad_input", "||d<r, f(x)>/dx||"),
                           (axes[1], "grad_first_weight", "||d<r, f(x)>/dK_1||")):
        for family, per_depth in results.items():
            vals = [per_depth[str(d)][key] for d in depths]
            vals = [v if v > 0 and math.isfinite(v) else float("nan") for v in vals]
            ax.loglog(depths, vals, "o-", label=family)
        ax.set_xlabel("depth (layers), step h = 0.5")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
