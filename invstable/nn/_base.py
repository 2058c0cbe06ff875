"""What every layer family shares: activations, options, feature kinds (vector or image), input checks, the
base class with its hooks, and the refresh of the norm estimates."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._spectral import INIT_ITERATIONS, SAFETY_MARGIN, ConvWeight, DenseWeight, WeightMap

#: Monotone, 1-Lipschitz activations: their derivative lies in [0, 1] wherever it exists, which is what the
#: bounds of every family use.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.1),
    "tanh": torch.tanh,
    "softplus": F.softplus,
}

FEATURES = ("image", "vector")
PADDING_MODES = ("zeros", "circular")


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is not known; valid names: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def check_positive(name: str, value) -> float:
    """``value`` as a float, or a ValueError naming ``name`` unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


@dataclasses.dataclass
class LayerOptions:
    """The options every layer family shares: how its weight maps and biases are built.

    Parameters
    ----------
    features : {"image", "vector"}, default "image"
        Inputs ``(B, C, H, W)`` with convolutions, or ``(B, C)`` with matrices.
    kernel_size : int (odd), default 3
    padding_mode : {"zeros", "circular"}, default "zeros"
    margin : float, default :data:`SAFETY_MARGIN`
        Relative safety margin of the power-iteration estimate (see :class:`WeightMap`).
    power_iterations : int, default 1
        Power-iteration steps per training-mode call.
    rng : torch.Generator, optional
        For the initial weights.
    dtype, device : optional
    """

    features: str = "image"
    kernel_size: int = 3
    padding_mode: str = "zeros"
    margin: float = SAFETY_MARGIN
    power_iterations: int = 1
    rng: torch.Generator | None = None
    dtype: torch.dtype | None = None
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ValueError(f"features={self.features!r} is not known; use one of {FEATURES}")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode={self.padding_mode!r} is not supported; use one of {PADDING_MODES}")

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls, owner: str, options: dict, *, exclude: frozenset[str] = frozenset(),
              **fixed) -> "LayerOptions":
        """The options of layer ``owner`` from its keyword arguments: unknown names raise a TypeError that lists
        the valid ones."""
        valid = cls.names() - exclude
        unknown = sorted(set(options) - valid)
        if unknown:
            raise TypeError(f"{owner} got unknown option(s) {unknown}; valid options: {sorted(valid)} "
                            "(and the layer's own keywords)")
        return cls(**{**options, **fixed})

    def weight(self, in_ch: int, out_ch: int, **overrides) -> WeightMap:
        """A weight map ``in_ch -> out_ch``: a matrix (vector features) or a 'same' convolution (images)."""
        return make_weight(self.features, in_ch, out_ch, **{
            "kernel_size": self.kernel_size, "padding_mode": self.padding_mode, "margin": self.margin,
            "power_iterations": self.power_iterations, "rng": self.rng, "dtype": self.dtype,
            "device": self.device, **overrides})

    def bias(self, channels: int) -> nn.Parameter:
        """A zero bias broadcasting over ``(B, channels, H, W)`` or ``(B, channels)``."""
        shape = (1, channels, 1, 1) if self.features == "image" else (1, channels)
        return nn.Parameter(torch.zeros(shape, dtype=self.dtype or torch.get_default_dtype(), device=self.device))


def make_weight(features: str, in_ch: int, out_ch: int, *, kernel_size: int, padding_mode: str,
                margin: float, power_iterations: int, rng, dtype, device,
                init_iterations: int = INIT_ITERATIONS) -> WeightMap:
    """A dense matrix (vector features) or a 'same' convolution (image features)."""
    if features == "image":
        return ConvWeight(in_ch, out_ch, kernel_size, padding_mode=padding_mode, margin=margin,
                          power_iterations=power_iterations, init_iterations=init_iterations, rng=rng,
                          dtype=dtype, device=device)
    if features == "vector":
        return DenseWeight(in_ch, out_ch, margin=margin, power_iterations=power_iterations,
                           init_iterations=init_iterations, rng=rng, dtype=dtype, device=device)
    raise ValueError(f"features={features!r} is not known; use one of {FEATURES}")


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


#: Submodule names of weight maps before they were called weight maps (model files and checkpoints written
#: then): old name -> new name. Loading renames the keys.
LEGACY_NAMES = {"operator": "weight_map", "operator_z": "weight_map_z", "operator_y": "weight_map_y"}


def _rename_legacy(module: nn.Module, state_dict: dict, prefix: str) -> None:
    for old, new in LEGACY_NAMES.items():
        if not isinstance(getattr(module, new, None), WeightMap) or old in module._modules:
            continue
        head = prefix + old + "."
        for key in [k for k in state_dict if k.startswith(head)]:
            state_dict[prefix + new + "." + key[len(head):]] = state_dict.pop(key)


def rename_legacy_keys(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``state_dict`` with the keys of weight maps saved under their old names (``...operator.weight``)
    renamed to the names ``module`` uses now (``...weight_map.weight``); other keys unchanged.

    ``load_state_dict`` does this by itself; the function is for code that checks the keys of a file against a
    model before loading it.
    """
    out = dict(state_dict)
    for name, sub in module.named_modules():
        if isinstance(sub, StableModule):
            _rename_legacy(sub, out, name + "." if name else "")
    return out


class StableModule(nn.Module):
    """Base class: everything in :mod:`invstable.nn` has ``lipschitz_bound() -> float``.

    Hooks with default behaviour, which families override instead of being probed by name:
    :meth:`on_norms_refreshed` (after :func:`refresh_spectral_norms` converged the estimates) and
    :meth:`halve_step` (multi-level prolongation, :func:`prolong`).
    """

    #: shared options (:class:`LayerOptions`) a class taking ``**options`` does not accept
    excluded_options: frozenset[str] = frozenset()

    def lipschitz_bound(self) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def on_norms_refreshed(self) -> None:
        """Called by :func:`refresh_spectral_norms` once the estimates are converged; nothing by default."""

    def halve_step(self) -> None:
        """Turn this layer into one of two that together cover its time step (for :func:`prolong`)."""
        raise TypeError(f"{type(self).__name__} has no time step to halve; prolong takes networks of one-step "
                        "layers (gradient_flow, antisymmetric, resnet, hamiltonian)")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _rename_legacy(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class StepLayer(StableModule):
    """A layer taking one time step ``h`` (``self.step``) of a discretised dynamical system."""

    step: float

    def halve_step(self) -> None:
        self.step = self.step / 2


def refresh_spectral_norms(module: nn.Module, *, iterations: int = INIT_ITERATIONS,
                           input_size: tuple[int, int] | None = None, reseed: bool = False) -> nn.Module:
    """Run ``iterations`` power iterations in every weight map of ``module`` (before export or certification).

    Parameters
    ----------
    module : torch.nn.Module
    iterations : int
    input_size : (H, W), optional
        For convolutions: the image size to certify; by default the size each one last saw.
    reseed : bool, default False
        Start every iteration from the fixed seed vector: the result depends on the weights only.

    Returns
    -------
    module
        Every :class:`StableModule` inside then gets :meth:`StableModule.on_norms_refreshed`.
    """
    for sub in module.modules():
        if isinstance(sub, WeightMap):
            sub.refresh(iterations, input_size=input_size, reseed=reseed)
    for sub in module.modules():
        if isinstance(sub, StableModule):
            sub.on_norms_refreshed()
    return module


__all__ = ["ACTIVATIONS", "SAFETY_MARGIN", "LayerOptions", "StableModule", "refresh_spectral_norms",
           "rename_legacy_keys"]
