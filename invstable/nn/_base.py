"""What every layer family shares: activations, feature kinds (vector or image), input checks."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._spectral import SAFETY_MARGIN, ConvOperator, DenseOperator

#: Monotone, 1-Lipschitz activations: their derivative lies in [0, 1] wherever it exists, which is what the
#: bounds of every family use.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.1),
    "tanh": torch.tanh,
    "softplus": F.softplus,
}

FEATURES = ("image", "vector")


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is not known; valid names: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def make_operator(features: str, in_ch: int, out_ch: int, *, kernel_size: int, padding_mode: str,
                  margin: float, power_iterations: int, rng, dtype, device):
    """A dense matrix (vector features) or a 'same' convolution (image features)."""
    if features == "image":
        return ConvOperator(in_ch, out_ch, kernel_size, padding_mode=padding_mode, margin=margin,
                            power_iterations=power_iterations, rng=rng, dtype=dtype, device=device)
    if features == "vector":
        return DenseOperator(in_ch, out_ch, margin=margin, power_iterations=power_iterations, rng=rng,
                             dtype=dtype, device=device)
    raise ValueError(f"features={features!r} is not known; use one of {FEATURES}")


def make_bias(features: str, channels: int, dtype, device) -> nn.Parameter:
    shape = (1, channels, 1, 1) if features == "image" else (1, channels)
    return nn.Parameter(torch.zeros(shape, dtype=dtype or torch.get_default_dtype(), device=device))


def check_step(step) -> float:
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
        raise ValueError(f"step must be a finite number > 0, got {step!r}")
    return float(step)


def check_input(x, *, channels: int, features: str, weight: torch.Tensor, name: str = "x") -> None:
    """Raise a helpful error for inputs the layer cannot take."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    ndim = 4 if features == "image" else 2
    layout = "(B, C, H, W)" if features == "image" else "(B, C)"
    if x.dim() != ndim:
        raise ValueError(f"{name} has shape {tuple(x.shape)} but this layer takes {features} features {layout}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels (shape {tuple(x.shape)}) but the layer was built with "
            f"channels={channels}; pass {layout} with C={channels} or build the layer for {x.shape[1]}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}; pass a floating-point tensor, e.g. {name}.float()")
    if x.dtype != weight.dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype} but the layer's weights are {weight.dtype}; "
            f"call layer.to({x.dtype}) or convert {name}"
        )
    if x.device != weight.device:
        raise ValueError(f"{name} is on {x.device} but the layer is on {weight.device}; call layer.to({name}.device)")


def check_finite_weights(module: nn.Module) -> None:
    for name, p in module.named_parameters():
        if not torch.isfinite(p.detach()).all():
            raise ValueError(
                f"parameter {name!r} contains NaN or inf; no Lipschitz bound can be computed. "
                "Re-initialise the layer or load finite weights."
            )


def shear_norm(a: float) -> float:
    """Norm of the block matrix [[I, A], [0, I]] with ||A|| <= a: (a + sqrt(a^2 + 4)) / 2."""
    if not math.isfinite(a):
        return math.inf
    return (a + math.sqrt(a * a + 4.0)) / 2.0


class StableModule(nn.Module):
    """Base class: everything in :mod:`invstable.nn` has ``lipschitz_bound() -> float``."""

    def lipschitz_bound(self) -> float:  # pragma: no cover - overridden
        raise NotImplementedError


__all__ = ["ACTIVATIONS", "SAFETY_MARGIN"]
