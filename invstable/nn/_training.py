"""Training aids of Haber & Ruthotto (2017): smoothness in time and multi-level prolongation in depth."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._dense import DenseNetwork
from ._base import refresh_spectral_norms


def _layers(network: nn.Module) -> nn.ModuleList:
    layers = getattr(network, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise TypeError(f"expected a network from stable_network (with a non-empty .layers), got "
                        f"{type(network).__name__}")
    return layers


def time_smoothness(network: nn.Module, *, include_bias: bool = True, scale_by_step: bool = False) -> torch.Tensor:
    r"""Smoothness-in-time regulariser :math:`\sum_j \|K_j - K_{j-1}\|_F^2 (+ \|b_j - b_{j-1}\|^2)`.

    Parameters
    ----------
    network : a network from :func:`stable_network`
    include_bias : bool, default True
    scale_by_step : bool, default False
        Divide by the step ``h``: the discretisation of :math:`\int \|\dot K(t)\|^2 dt`
        (Haber & Ruthotto 2017, Eq. (4.3)).

    Returns
    -------
    torch.Tensor
        A differentiable scalar.

    Examples
    --------
    >>> from invstable.nn import stable_network, time_smoothness
    >>> float(time_smoothness(stable_network("resnet", channels=2, depth=1)))
    0.0
    """
    layers = _layers(network)
    total = None
    for prev, cur in zip(layers[:-1], layers[1:]):
        for (name, p), (_, q) in zip(prev.named_parameters(), cur.named_parameters()):
            if not include_bias and "bias" in name:
                continue
            term = (q - p).pow(2).sum()
            if scale_by_step:
                term = term / cur.step
            total = term if total is None else total + term
    if total is None:
        p = next(network.parameters())
        total = p.new_zeros(())
    return total


@torch.no_grad()
def prolong(network: nn.Module) -> nn.Module:
    r"""Multi-level training: a network of depth ``2N`` and step ``h/2`` from one of depth ``N`` and step ``h``.

    The weights are piecewise-linear in time: layer ``j`` of the coarse network sits at :math:`t_j = jh`;
    the fine layer ``k`` at :math:`t_k = kh/2` takes :math:`K(t_k)` interpolated linearly between the coarse
    layers (constant beyond the last). Fine networks therefore reproduce the coarse function up to the
    discretisation error of the underlying ODE (first order in ``h``), which the tests check.
    Power-iteration vectors are copied from the nearest coarse layer and then refreshed
    (:func:`refresh_spectral_norms`).
    For a gradient-flow stack with a contraction factor ``c < 1`` the fine layers use ``sqrt(c)``, so that
    the end-to-end factor is unchanged.

    Parameters
    ----------
    network : a "gradient_flow", "antisymmetric", "resnet" or "hamiltonian" network from
        :func:`stable_network`.

    Returns
    -------
    torch.nn.Module
        A new network; the input is not modified.

    Raises
    ------
    TypeError
        For a :class:`DenseNetwork` (its memory weights are not a function of one time) or other modules.

    References
    ----------
    E. Haber, L. Ruthotto, "Stable architectures for deep neural networks", Inverse Problems 34 (2018), Sec. 4.
    """
    if isinstance(network, DenseNetwork):
        raise TypeError("prolong does not support the dense network: its memory weights couple all pairs of "
                        "steps; build a deeper DenseNetwork and train it instead")
    layers = _layers(network)
    n = len(layers)
    new = copy.deepcopy(network)
    fine = []
    for k in range(2 * n):
        j, odd = divmod(k, 2)
        layer = copy.deepcopy(layers[j])
        if odd and j + 1 < n:
            nxt = dict(layers[j + 1].named_parameters())
            for name, p in layer.named_parameters():
                p.copy_(0.5 * (p + nxt[name]))
        layer.halve_step()  # each family's hook (the gradient flow also splits its contraction factor)
        fine.append(layer)
    new.layers = nn.ModuleList(fine)
    # the copied warm starts belong to neighbouring weights: converge them for the new ones
    refresh_spectral_norms(new)
    return new
