"""Multi-scale blocks through an isometric resampling: pixel unshuffle, a stable network, pixel shuffle."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import StableModule


class Resampled(StableModule):
    r"""``shuffle o network o unshuffle``: a stable network run on a grid ``factor`` times coarser.

    Pixel unshuffle moves each ``factor x factor`` patch of every channel into ``factor^2`` channels of one
    pixel: it only permutes the entries, so it is an isometry (its inverse, pixel shuffle, too), and

    .. math::

        \mathrm{Lip}(S \circ N \circ S^{-1}) = \mathrm{Lip}(N).

    The inner network sees ``channels * factor^2`` channels on an ``(H / factor, W / factor)`` grid: the same
    convolution reaches ``factor`` times further at the same cost per pixel.

    Parameters
    ----------
    network : module with ``lipschitz_bound()``
        Acting on ``(B, channels * factor**2, H / factor, W / factor)``.
    factor : int

    Examples
    --------
    >>> import torch
    >>> from invstable.nn import Resampled, stable_network
    >>> block = Resampled(stable_network("gradient_flow", channels=4 * 4, depth=1), factor=2)
    >>> block(torch.randn(1, 4, 8, 8)).shape
    torch.Size([1, 4, 8, 8])
    """

    def __init__(self, network: torch.nn.Module, factor: int) -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be a positive int, got {factor!r}")
        self.network, self.factor = network, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factor
        if f == 1:
            return self.network(x)
        if x.dim() != 4 or x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"a block at scale {f} takes (B, C, H, W) images with H and W divisible by {f}; got "
                             f"shape {tuple(x.shape)}")
        return F.pixel_shuffle(self.network(F.pixel_unshuffle(x, f)), f)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """The inner network's bound (the resampling is an isometry)."""
        return self.network.lipschitz_bound()

    def extra_repr(self) -> str:
        return f"factor={self.factor}"
