"""Stacks of one layer family and the registry behind :func:`stable_network`."""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
from torch import nn

from ._antisymmetric import AntisymmetricLayer
from ._base import LayerOptions, StableModule, check_input
from ._dense import DenseNetwork
from ._gradient_flow import GradientFlowLayer
from ._hamiltonian import LeapfrogLayer, SymplecticEulerLayer, VerletLayer
from ._resnet import ResNetLayer


class StableSequential(StableModule):
    """Composition ``f_N o ... o f_1`` of layers; ``lipschitz_bound()`` is the product of theirs.

    Parameters
    ----------
    layers : iterable of modules with ``lipschitz_bound()``
    family : str, optional
        Name recorded for :func:`prolong` and reports.
    """

    def __init__(self, layers, *, family: str | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.family = family

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        out = 1.0
        for layer in self.layers:
            out *= layer.lipschitz_bound()
        return out


class HamiltonianNetwork(StableModule):
    r"""A stack of Hamiltonian layers acting on images or vectors; the auxiliary state is carried inside.

    ``forward(x)`` starts from ``(y, z) = (x, 0)`` (Verlet, symplectic Euler) or ``(y_{-1}, y_0) = (x, x)``
    (leapfrog: zero initial velocity) and returns the final ``y``, of the shape of ``x``.

    ``lipschitz_bound()`` multiplies the pair-map bounds of the layers; for leapfrog it includes the factor
    :math:`\sqrt{2}` of the embedding :math:`x \mapsto (x, x)`. :meth:`inverse_states` runs the whole stack
    backwards from a final pair.
    """

    family = "hamiltonian"

    def __init__(self, layers, *, scheme: str) -> None:
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"scheme={scheme!r} is not known; valid schemes: {sorted(SCHEMES)}")
        self.layers = nn.ModuleList(layers)
        self.scheme = scheme

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.layers[0]
        check_input(x, channels=first.channels, features=first.features,
                    weight=next(first.parameters()))
        if self.scheme == "leapfrog":
            return x, x
        aux = first.aux_channels
        z = x.new_zeros((x.shape[0], aux) + tuple(x.shape[2:]))
        return x, z

    def forward_states(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The final pair of states."""
        a, b = self.initial_state(x)
        for layer in self.layers:
            a, b = layer(a, b)
        return a, b

    def inverse_states(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run every layer backwards from the final pair (eval-mode maps)."""
        for layer in reversed(self.layers):
            a, b = layer.inverse(a, b)
        return a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.forward_states(x)
        return b if self.scheme == "leapfrog" else a

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        out = math.sqrt(2.0) if self.scheme == "leapfrog" else 1.0
        for layer in self.layers:
            out *= layer.lipschitz_bound()
        return out


SCHEMES: dict[str, type] = {
    "verlet": VerletLayer,
    "leapfrog": LeapfrogLayer,
    "symplectic_euler": SymplecticEulerLayer,
}


def _check_depth(depth):
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")


def _gradient_flow(channels, depth, step, **options):
    return StableSequential([GradientFlowLayer(channels, step=step, **options) for _ in range(depth)],
                            family="gradient_flow")


def _antisymmetric(channels, depth, step, **options):
    return StableSequential([AntisymmetricLayer(channels, step=step, **options) for _ in range(depth)],
                            family="antisymmetric")


def _resnet(channels, depth, step, **options):
    return StableSequential([ResNetLayer(channels, step=step, **options) for _ in range(depth)], family="resnet")


def _hamiltonian(channels, depth, step, *, scheme="verlet", **options):
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not known; valid schemes: {sorted(SCHEMES)}")
    cls = SCHEMES[scheme]
    return HamiltonianNetwork([cls(channels, step=step, **options) for _ in range(depth)], scheme=scheme)


def _dense(channels, depth, step, **options):
    return DenseNetwork(channels, depth, step=step, **options)


def _options(*classes) -> set[str]:
    """The keyword options a layer class takes: its own keyword-only parameters and, for a class taking
    ``**options``, the shared :class:`LayerOptions` (less those it excludes)."""
    names: set[str] = set()
    for cls in classes:
        sig = inspect.signature(cls.__init__)
        names |= {n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            names |= LayerOptions.names() - cls.excluded_options
    return names - {"step"}


#: family name -> (builder, the options it accepts)
LAYER_FAMILIES: dict[str, tuple[Callable[..., nn.Module], set[str]]] = {
    "gradient_flow": (_gradient_flow, _options(GradientFlowLayer)),
    "hamiltonian": (_hamiltonian, {"scheme"} | _options(VerletLayer, LeapfrogLayer, SymplecticEulerLayer)),
    "antisymmetric": (_antisymmetric, _options(AntisymmetricLayer)),
    "dense": (_dense, _options(DenseNetwork)),
    "resnet": (_resnet, _options(ResNetLayer)),
}


def stable_network(family: str, *, channels: int, depth: int, step: float | None = None, **options) -> nn.Module:
    """Build a stack of ``depth`` layers of one family acting on ``(B, channels, H, W)`` (or ``(B, channels)``).

    Parameters
    ----------
    family : {"gradient_flow", "hamiltonian", "antisymmetric", "dense", "resnet"}
    channels : int
    depth : int
    step : float, optional
        Step ``h`` of every layer; default 1.0 (for "gradient_flow" the step taken is further capped by
        ``2 / ||W||^2``; for the others the weights are rescaled to meet each family's condition).
    **options
        Keyword options of the family's layer class (e.g. ``features="vector"``, ``activation="relu"``,
        ``scheme="leapfrog"`` for "hamiltonian", ``gamma=0.1`` for "antisymmetric", ``rng=...``,
        ``dtype=...``); unknown names raise a TypeError listing the valid ones.

    Returns
    -------
    torch.nn.Module
        A :class:`StableSequential`, :class:`HamiltonianNetwork` or :class:`DenseNetwork`, mapping inputs to
        outputs of the same shape, with ``lipschitz_bound()``.

    Raises
    ------
    ValueError
        Unknown family, non-positive depth/channels/step.
    TypeError
        Unknown options.

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import stable_network
    >>> net = stable_network("gradient_flow", channels=3, depth=4).eval()
    >>> net(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 3, 8, 8])
    >>> net.lipschitz_bound()
    1.0
    """
    if family not in LAYER_FAMILIES:
        raise ValueError(f"family={family!r} is not known; valid families: {sorted(LAYER_FAMILIES)}")
    builder, valid = LAYER_FAMILIES[family]
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for family {family!r}; valid options: {sorted(valid)}")
    _check_depth(depth)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    step = 1.0 if step is None else step
    if family == "hamiltonian":
        scheme = options.get("scheme", "verlet")
        if scheme in SCHEMES:
            bad = sorted(set(options) - {"scheme"} - _options(SCHEMES[scheme]))
            if bad:
                raise TypeError(f"option(s) {bad} do not apply to scheme {scheme!r}; valid options: "
                                f"{sorted(_options(SCHEMES[scheme]) | {'scheme'})}")
    return builder(channels, depth, step, **options)
