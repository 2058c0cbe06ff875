r"""Filtered back-projection for parallel-beam CT."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..operators import ParallelBeamCT
from ._io import as_measurement

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def fourier_filter(size: int, name: str = "ramp") -> np.ndarray:
    r"""Frequency response (length ``size``, FFT order) of the FBP filter ``name``.

    The ramp is the DFT of the band-limited spatial ramp of Kak & Slaney (1988, eq. 61):
    :math:`h(0) = 1/4`, :math:`h(k) = -1 / (\pi k)^2` for odd :math:`k`, 0 for even :math:`k \ne 0`, which
    avoids the DC offset of sampling :math:`|\omega|` directly. The other filters multiply it by a window.
    """
    if name not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS} or None, got {name!r}")
    k = np.rint(np.fft.fftfreq(size, d=1.0 / size)).astype(np.int64)  # signed sample offsets, FFT order
    h = np.zeros(size)
    h[k == 0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    response = 2.0 * np.real(np.fft.fft(h))
    omega = np.pi * np.fft.fftfreq(size)[1:]
    if name == "shepp-logan":
        response[1:] *= np.sin(omega) / omega
    elif name == "cosine":
        response *= np.fft.fftshift(np.sin(np.linspace(0, np.pi, size, endpoint=False)))
    elif name == "hamming":
        response *= np.fft.fftshift(np.hamming(size))
    elif name == "hann":
        response *= np.fft.fftshift(np.hanning(size))
    return response


def fbp(y, op: ParallelBeamCT, *, filter: str | None = "ramp"):
    r"""Filtered back-projection of parallel-beam sinograms.

    Parameters
    ----------
    y : torch.Tensor (B, C, detectors, angles) or numpy array (batch and channel axes optional)
        Sinograms measured with ``op`` (normalised or not: ``op.scale`` is undone).
    op : ParallelBeamCT
    filter : {"ramp", "shepp-logan", "cosine", "hamming", "hann"} or None
        ``None`` gives the unfiltered back-projection.

    Returns
    -------
    x : same kind as ``y``, images of side ``op.image_size``

    Notes
    -----
    :math:`x(r) = \frac{\pi}{2 N_\theta} \sum_\theta (h * p_\theta)(r \cdot \theta^\perp)`, with the
    projections zero-padded to ``max(64, 2^ceil(log2(2 detectors)))`` before filtering in Fourier and
    back-projected by linear interpolation on the detector. This reproduces
    :func:`skimage.transform.iradon` (``circle=False``), in torch, batched, on any device.

    References
    ----------
    A. C. Kak and M. Slaney, *Principles of Computerized Tomographic Imaging*, IEEE Press, 1988, ch. 3.

    Examples
    --------
    >>> import torch
    >>> from invstable.operators import ParallelBeamCT
    >>> op = ParallelBeamCT(32, 60)
    >>> fbp(op.A(torch.ones(1, 1, 32, 32)), op).shape
    torch.Size([1, 1, 32, 32])
    """
    if not isinstance(op, ParallelBeamCT):
        raise TypeError(
            f"fbp needs a ParallelBeamCT operator, got {type(op).__name__}; use invstable.tikhonov for other "
            f"operators"
        )
    if filter is not None and filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS} or None, got {filter!r}")
    t, restore = as_measurement(y, op)
    dtype = t.dtype if t.dtype == torch.float64 else torch.float32  # differentiable in y (a linear map)
    p = t.to(dtype) / op.scale
    if filter is not None and p.numel() > 0:  # (the FFT refuses an empty batch, which has nothing to filter)
        size = max(64, 2 ** int(math.ceil(math.log2(2 * op.detectors))))
        response = torch.as_tensor(fourier_filter(size, filter), dtype=dtype, device=t.device)
        spectrum = torch.fft.fft(p, n=size, dim=-2) * response[:, None]
        p = torch.fft.ifft(spectrum, dim=-2).real[..., : op.detectors, :]
    x = op.backproject(p) * (math.pi / (2 * op.n_angles))
    return restore(x.to(t.dtype))
