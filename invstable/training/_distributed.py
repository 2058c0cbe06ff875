"""Process-group set-up for ``torchrun``: gloo on CPUs, NCCL on GPUs."""

from __future__ import annotations

import contextlib
import os

import torch


@contextlib.contextmanager
def distributed(device: str = "auto"):
    """Yield ``(rank, world_size)``; under ``torchrun`` (``WORLD_SIZE`` > 1) join the default process group.

    The backend is NCCL when the run uses CUDA and gloo otherwise. A group already initialised by the caller
    is used as it is and left open.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or not torch.distributed.is_available():
        yield 0, 1
        return
    if torch.distributed.is_initialized():
        yield torch.distributed.get_rank(), torch.distributed.get_world_size()
        return
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        yield torch.distributed.get_rank(), torch.distributed.get_world_size()
    finally:
        torch.distributed.destroy_process_group()
