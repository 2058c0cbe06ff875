"""Quality metrics of the protocols: PSNR (data range 1), SSIM and relative L2 error, per image."""

from __future__ import annotations

import numpy as np
import torch

from ..training import psnr as _training_psnr


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """PSNR (data range 1) of each image, the reconstruction clipped to [0, 1], in double precision."""
    return _training_psnr(x_hat.detach().clamp(0, 1).double().cpu(), x.detach().double().cpu()).numpy()


def scores(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, np.ndarray]:
    """PSNR, SSIM and relative error of each image (reconstructions clipped to [0, 1]).

    Parameters
    ----------
    x_hat, x : torch.Tensor
        Reconstructions and truths, shape ``(B, 1, H, W)``, values of ``x`` in [0, 1].

    Returns
    -------
    dict
        ``{"psnr", "ssim", "relative_error"}``, each a float64 array of shape ``(B,)``.
    """
    from skimage.metrics import structural_similarity  # noqa: PLC0415 (keeps `import invstable` light)

    if not isinstance(x_hat, torch.Tensor) or not isinstance(x, torch.Tensor):
        raise TypeError(f"scores needs two tensors (B, 1, H, W), got {type(x_hat).__name__} and {type(x).__name__}")
    if tuple(x_hat.shape) != tuple(x.shape) or x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"the reconstruction has shape {tuple(x_hat.shape)} and the truth {tuple(x.shape)}; both must "
                         "be (B, 1, H, W) and the same: return images of the truth's shape")
    x_hat = x_hat.detach().clamp(0, 1).double().cpu()
    x = x.detach().double().cpu()
    rel = ((x_hat - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).numpy()
    ssim = np.array([structural_similarity(a[0].numpy(), b[0].numpy(), data_range=1.0) for a, b in zip(x_hat, x)])
    return {"psnr": psnr(x_hat, x), "ssim": ssim, "relative_error": rel}
