"""A deepinv denoiser as the regularising block of an unrolled model: for comparisons, never certified."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DenoiserBlock"]


class DenoiserBlock(nn.Module):
    r"""The step :math:`x \leftarrow D(x, \sigma)` of a denoiser ``D`` (DnCNN, DRUNet or any deepinv
    :class:`~deepinv.models.Denoiser`) as a regularising block of :class:`invstable.models.UnrolledInverse`.

    The block acts on the image channels of the unrolled state and passes any other channel through unchanged.
    It exists so that a user can compare invstable's certified blocks with a denoiser of deepinv in the same
    unrolled scheme; **it carries no certificate**: nothing bounds the Lipschitz constant of a trained
    denoiser, so :meth:`lipschitz_bound` is ``inf`` and so is the bound of any model that uses the block.

    Parameters
    ----------
    denoiser : torch.nn.Module
        Called as ``denoiser(x, sigma)`` on images ``(B, C, H, W)``, as deepinv's denoisers are. Its weights
        are the block's (trained with the model, moved with ``.to()``). Build deepinv's networks with
        ``pretrained=None`` unless you mean to download their weights.
    sigma : float
        Noise level passed to the denoiser at every step (DnCNN ignores it; DRUNet is conditioned on it).
    image_channels : int, default 1
        The channels of the state that hold the image.

    Examples
    --------
    >>> import torch, deepinv
    >>> block = DenoiserBlock(deepinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None), sigma=0.05)
    >>> block(torch.rand(2, 1, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
    >>> block.lipschitz_bound()
    inf
    """

    #: no certified Lipschitz bound (see :meth:`lipschitz_bound`)
    certified = False

    def __init__(self, denoiser: nn.Module, *, sigma: float, image_channels: int = 1) -> None:
        super().__init__()
        if not isinstance(denoiser, nn.Module):
            raise TypeError(f"denoiser must be a torch.nn.Module called as denoiser(x, sigma) (a deepinv denoiser such "
                            f"as deepinv.models.DnCNN(pretrained=None)), got {type(denoiser).__name__}")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"denoiser_sigma must be a finite number >= 0 (the noise level the denoiser is asked to "
                             f"remove at each step), got {sigma!r}")
        if isinstance(image_channels, bool) or not isinstance(image_channels, int) or image_channels < 1:
            raise ValueError(f"image_channels must be a positive int, got {image_channels!r}")
        self.denoiser = denoiser
        self.sigma = float(sigma)
        self.image_channels = image_channels

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        c = self.image_channels
        x = self.denoiser(s[:, :c], self.sigma)
        if tuple(x.shape) != tuple(s[:, :c].shape):
            raise ValueError(f"the denoiser {type(self.denoiser).__name__} returned shape {tuple(x.shape)} for an input "
                             f"of shape {tuple(s[:, :c].shape)}; a regularising block must keep the image's shape "
                             f"(check its in_channels / out_channels against image_channels={c})")
        return x if s.shape[1] == c else torch.cat([x, s[:, c:]], dim=1)

    def lipschitz_bound(self) -> float:
        """``inf``: a denoiser of deepinv has no certified Lipschitz bound (this block exists for comparisons)."""
        return math.inf

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, image_channels={self.image_channels}, certified=False"
