"""The two-dimensional examples of Haber & Ruthotto (2017): concentric ellipses, swiss roll and "peaks".

Each data set is classified by a lifting ``R^2 -> R^w`` (a learned linear map), a stable network from
``invstable.nn.stable_network`` on vector features, and a linear softmax classifier. Training is multi-level
(Haber & Ruthotto 2017, Sec. 4): train at 4 layers, prolong to 8 (``invstable.nn.prolong``: piecewise-linear
in time, step halved, final time T fixed), train, and so on up to 32 layers, with the smoothness-in-time
regulariser. Validation accuracy is reported per level for the plain ResNet, the antisymmetric ResNet and
the Verlet (Hamiltonian) network, next to the paper's figures.

The data are generated here (the paper's exact sets are not available); sizes and budgets are smaller than
the paper's (a few hundred Adam steps per level on a CPU), and are recorded in the JSON.

Usage: python -m benchmarks.seed_toys [--quick]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

import invstable.nn as inn
from benchmarks._common import environment, write_result

# Accuracies reported in the issue from Haber & Ruthotto (2017), Sec. 5 (validation, final level).
PAPER = {
    "ellipses": {"resnet": 100.0, "antisymmetric": 100.0, "verlet": 100.0},
    "swiss_roll": {"resnet": 100.0, "verlet": 100.0, "note": "Verlet reaches 100 % already at 32 layers"},
    "peaks": {"resnet": 98.8, "antisymmetric": 98.8, "verlet": 99.1},
}

MODELS = {
    "resnet": ("resnet", {}),
    "antisymmetric": ("antisymmetric", {"gamma": 0.01}),
    "verlet": ("hamiltonian", {"scheme": "verlet"}),
}


def ellipses(n, g):
    """Two classes: inside an ellipse, or in the elliptic ring around it."""
    x = torch.rand(n, 2, generator=g) * 2 - 1
    rho = torch.sqrt((x[:, 0] / 1.0) ** 2 + (x[:, 1] / 0.6) ** 2)
    label = (rho > 0.55).long()
    return x, label, 2


def swiss_roll(n, g):
    """Two interleaved spirals (the 'swiss roll')."""
    t = torch.rand(n, generator=g) * 3 * math.pi + 0.5 * math.pi
    label = torch.randint(0, 2, (n,), generator=g)
    r = t / (3.5 * math.pi)
    angle = t + math.pi * label
    x = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1)
    x = x + 0.01 * torch.randn(n, 2, generator=g)
    return x, label, 2


def _peaks(x, y):
    return (3 * (1 - x) ** 2 * torch.exp(-x**2 - (y + 1) ** 2)
            - 10 * (x / 5 - x**3 - y**5) * torch.exp(-x**2 - y**2)
            - torch.exp(-((x + 1) ** 2) - y**2) / 3)


def peaks(n, g):
    """Five classes: level sets of MATLAB's peaks function on [-3, 3]^2 (thresholds at fixed quantiles)."""
    x = torch.rand(n, 2, generator=g) * 6 - 3
    z = _peaks(x[:, 0], x[:, 1])
    grid = torch.linspace(-3, 3, 200)
    zz = _peaks(*torch.meshgrid(grid, grid, indexing="ij")).flatten()
    thresholds = torch.quantile(zz, torch.tensor([0.2, 0.4, 0.6, 0.8]))
    label = torch.bucketize(z, thresholds)
    return x / 3, label, 5


DATASETS = {"ellipses": ellipses, "swiss_roll": swiss_roll, "peaks": peaks}


class Classifier(torch.nn.Module):
    def __init__(self, net, width, classes, g):
        super().__init__()
        self.lift = torch.nn.Linear(2, width)
        self.net = net
        self.head = torch.nn.Linear(width, classes)
        with torch.no_grad():
            for lin in (self.lift, self.head):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / math.sqrt(lin.weight.shape[1]))
                lin.bias.zero_()

    def forward(self, x):
        return self.head(self.net(self.lift(x)))


def train_level(model, x, y, *, steps, lr, alpha):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + alpha * inn.time_smoothness(model.net)
        loss.backward()
        opt.step()
    return float(loss.detach())


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    return 100.0 * float((model(x).argmax(dim=1) == y).double().mean())


def run(dataset, model_name, *, levels, width, final_time, steps, lr, alpha, n_train, n_val, seed):
    g = torch.Generator().manual_seed(seed)
    x, y, classes = DATASETS[dataset](n_train, g)
    xv, yv, _ = DATASETS[dataset](n_val, g)
    family, options = MODELS[model_name]
    net = inn.stable_network(family, channels=width, depth=levels[0], step=final_time / levels[0],
                             features="vector", rng=g, **options)
    model = Classifier(net, width, classes, g)
    out = []
    for i, depth in enumerate(levels):
        if i > 0:
            model.net = inn.prolong(model.net)
        before = accuracy(model, xv, yv)
        start = time.perf_counter()
        loss = train_level(model, x, y, steps=steps, lr=lr, alpha=alpha)
        out.append({"depth": depth, "val_accuracy": accuracy(model, xv, yv),
                    "train_accuracy": accuracy(model, x, y), "val_accuracy_after_prolongation": before,
                    "final_loss": loss, "seconds": time.perf_counter() - start,
                    "lipschitz_bound_of_stable_part": model.net.lipschitz_bound()})
        print(f"{dataset:10s} {model_name:13s} depth {depth:3d}: val {out[-1]['val_accuracy']:6.2f} % "
              f"(after prolongation, before training {before:6.2f} %)", flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        cfg = dict(levels=[4, 8], width=4, final_time=4.0, steps=30, lr=1e-2, alpha=1e-3, n_train=300, n_val=300)
    else:
        cfg = dict(levels=[4, 8, 16, 32], width=6, final_time=4.0, steps=200, lr=1e-2, alpha=1e-3,
                   n_train=1000, n_val=1000)
    results = {}
    for dataset in DATASETS:
        results[dataset] = {}
        for model_name in MODELS:
            results[dataset][model_name] = run(dataset, model_name, seed=0, **cfg)
    payload = {
        "benchmark": "seed_toys",
        "protocol": "Haber & Ruthotto (2017) 2-D examples, multi-level training 4 -> 32 layers by prolongation "
                    "(final time fixed, step halved per level), Adam full batch, smoothness-in-time "
                    "regulariser; data generated here, smaller budget than the paper",
        "config": cfg,
        "paper": PAPER,
        "results": results,
        "environment": environment("cpu"),
    }
    path = write_result("seed_toys", payload,
                        results_dir=tempfile.mkdtemp(prefix="invstable-quick-") if args.quick else None)
    _plot(results, PAPER, path.with_suffix(".png"))
    print(f"wrote {path}")


def _plot(results, paper, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.6), sharey=True)
    colors = {"resnet": "tab:blue", "antisymmetric": "tab:orange", "verlet": "tab:green"}
    for ax, (dataset, per_model) in zip(axes, results.items()):
        for model_name, levels in per_model.items():
            depths = [r["depth"] for r in levels]
            ax.plot(depths, [r["val_accuracy"] for r in levels], "o-", color=colors[model_name], label=model_name)
            ref = paper[dataset].get(model_name)
            if isinstance(ref, float):
                ax.axhline(ref, color=colors[model_name], ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{dataset} (dotted: paper)")
        ax.set_xlabel("layers")
    axes[0].set_ylabel("validation accuracy (%)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
