"""A tiny deblurring problem (16 x 16) for fast training tests; also run as a script by the resume test."""

from __future__ import annotations

import sys

import torch

from invstable.models import UnrolledInverse
from invstable.operators import Blur, gaussian_kernel
from invstable.training import TrainConfig, train
from invstable.training._distributed import distributed

SIZE = 16


def operator():
    return Blur(gaussian_kernel(1.0), image_size=SIZE)


class TinyPairs(torch.utils.data.Dataset):
    """Smooth random images (sums of a few bumps) and their blurred, noisy measurements; deterministic."""

    def __init__(self, count: int, seed: int = 0, op=None):
        self.op = op or operator()
        gen = torch.Generator().manual_seed(seed)
        grid = torch.linspace(-1, 1, SIZE)
        yy, xx = torch.meshgrid(grid, grid, indexing="ij")
        images = []
        for _ in range(count):
            c = torch.rand(3, 2, generator=gen) * 1.6 - 0.8
            w = torch.rand(3, generator=gen) * 0.3 + 0.1
            img = sum(torch.exp(-((xx - c[k, 0]) ** 2 + (yy - c[k, 1]) ** 2) / w[k] ** 2) for k in range(3))
            images.append(img.clamp(0, 1)[None])
        self.x = torch.stack(images)
        with torch.no_grad():
            self.y = self.op.A(self.x) + 0.01 * torch.randn(self.x.shape, generator=gen)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def model(family="gradient_flow", **kw):
    kw = {"iterations": 2, "channels": 3, "depth": 1, "init_degree": 8, **kw}
    return UnrolledInverse(operator(), family=family, **kw)


def config(**kw):
    kw = {"steps": 6, "batch_size": 4, "lr": 1e-2, "validate_every": 3, "checkpoint_every": 1, "progress": False,
          "device": "cpu", **kw}
    return TrainConfig(**kw)


if __name__ == "__main__":
    # python tests/_tiny.py STEPS CHECKPOINT OUT [resume]: the run the resume-after-kill and DDP tests start
    torch.set_num_threads(1)
    steps, ckpt, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with distributed("cpu") as (rank, world):
        result = train(model(), TinyPairs(16), validation=TinyPairs(4, seed=1), config=config(steps=steps),
                       checkpoint=ckpt if rank == 0 else None, resume=len(sys.argv) > 4)
        if rank == 0:
            result.model.save(out)
