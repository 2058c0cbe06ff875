"""Convolution (blur) operators: circular boundary through the FFT, other boundaries through deepinv."""

from __future__ import annotations

import math

import numpy as np
import torch
from deepinv.physics.functional import conv2d, conv_transpose2d

from ._base import Operator, check_tensor, remember, state_version

_BOUNDARIES = ("circular", "valid", "reflect", "replicate", "zeros")


def gaussian_kernel(sigma, size: int | None = None, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Normalised, centred Gaussian kernel :math:`k(i, j) \propto \exp(-(i^2 / 2\sigma_0^2 + j^2 / 2\sigma_1^2))`.

    Parameters
    ----------
    sigma : float or (float, float)
        Standard deviation(s) in pixels (rows, columns).
    size : int, optional
        Odd side of the kernel; default ``2 * ceil(3 * max(sigma)) + 1``.

    Returns
    -------
    torch.Tensor
        ``(size, size)`` kernel summing to 1.
    """
    s = (float(sigma), float(sigma)) if np.isscalar(sigma) else tuple(float(v) for v in sigma)
    if len(s) != 2 or not all(math.isfinite(v) and v > 0 for v in s):
        raise ValueError(f"sigma must be a positive number or a pair of positive numbers, got {sigma!r}")
    if size is None:
        size = 2 * int(math.ceil(3 * max(s))) + 1
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer so that the kernel is centred, got {size!r}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    k = torch.exp(-(r[:, None] ** 2) / (2 * s[0] ** 2) - (r[None, :] ** 2) / (2 * s[1] ** 2))
    return (k / k.sum()).to(dtype)


def _check_kernel_not_zero(kernel: torch.Tensor) -> None:
    if not bool((kernel != 0).any()):
        raise ValueError(
            f"kernel of shape {tuple(kernel.shape)} is all zeros: the blur would map every image to zero (norm 0), "
            f"and nothing can be reconstructed from its measurements; pass a kernel with a non-zero entry, e.g. "
            f"gaussian_kernel(sigma)"
        )


class Blur(Operator):
    r"""Convolution of every channel of an image with one kernel.

    Parameters
    ----------
    kernel : array_like, shape (kh, kw)
        Convolution kernel; its centre is pixel ``(kh // 2, kw // 2)``, as in deepinv's ``Blur`` (checked by
        the tests for odd and even sizes).
    image_size : int or (int, int)
        Image size ``(H, W)``.
    boundary : {"circular", "valid", "reflect", "replicate", "zeros"}
        ``"circular"`` is computed with the FFT (diagonal in Fourier, exact norm and Tikhonov in closed form);
        the others reuse deepinv's convolution and its transpose.

    Notes
    -----
    With circular boundary :math:`A = F^{-1} \operatorname{diag}(\hat k) F`, so
    :math:`\|A\| = \max_\omega |\hat k(\omega)|` exactly and :math:`A^T = F^{-1}\operatorname{diag}(\overline{\hat k}) F`.
    Measurements have shape ``(B, C, H, W)`` (smaller for ``"valid"``).

    Raises
    ------
    ValueError
        For a kernel that is all zeros or not finite (also when a state with such a kernel is loaded, or when
        :meth:`norm_bound` finds the kernel changed to one in place), a kernel larger than the image, or an
        unknown boundary.

    Examples
    --------
    >>> import torch
    >>> from invstable.operators import Blur, gaussian_kernel
    >>> op = Blur(gaussian_kernel(2.0), 64)
    >>> round(op.norm_bound(), 4)  # exact max |k^| = 1, plus a margin of 1e-6 for float32 rounding
    1.0
    """

    name = "blur"
    measurement_ndim = 4

    def __init__(self, kernel, image_size, *, boundary: str = "circular", noise_model=None, **kwargs):
        kernel = torch.as_tensor(np.asarray(kernel) if not isinstance(kernel, torch.Tensor) else kernel)
        if kernel.ndim != 2 or not kernel.is_floating_point():
            raise ValueError(
                f"kernel must be a 2-D floating-point array (kh, kw), got shape {tuple(kernel.shape)} "
                f"and dtype {kernel.dtype}"
            )
        check_tensor(kernel, "kernel")
        _check_kernel_not_zero(kernel)
        if np.isscalar(image_size):
            image_size = (image_size, image_size)
        if len(image_size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                           for v in image_size) or min(image_size) < 1:
            raise ValueError(f"image_size must be an int or a pair (H, W) of positive ints, got {image_size!r}")
        image_size = tuple(int(v) for v in image_size)
        if kernel.shape[0] > image_size[0] or kernel.shape[1] > image_size[1]:
            raise ValueError(f"kernel of shape {tuple(kernel.shape)} is larger than the image {image_size}")
        if boundary not in _BOUNDARIES:
            raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
        super().__init__(noise_model=noise_model, **kwargs)
        self.image_size = image_size  # (H, W), as image_shape (the constructor's name for it)
        self.image_shape = image_size
        self.boundary = boundary
        self.register_buffer("kernel", kernel.to(torch.float64).clone())

    # -- the transfer function of the circular convolution --------------------------------------------
    def transfer_function(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``fft2`` of the kernel embedded in an ``H x W`` array with its centre at the origin."""
        kh, kw = self.kernel.shape
        h, w = self.image_size
        padded = torch.zeros(h, w, dtype=dtype, device=self.kernel.device)
        padded[:kh, :kw] = self.kernel.to(dtype)
        padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
        return torch.fft.fft2(padded)

    def config(self) -> dict:
        return {"name": self.name, "params": {
            "kernel": self.kernel.cpu().tolist(), "image_size": list(self.image_size), "boundary": self.boundary,
        }}

    def norm_bound(self) -> float:
        """Exact ``max |k^|`` for the circular boundary; ``||k||_1`` (Young's inequality) for ``"valid"`` and
        ``"zeros"``; ``||k||_1 sqrt(kh kw)`` (the padding's norm) for reflect and replicate."""
        # measured once per state of the kernel (remembered beside the operator; mul_ or copy_ measure again)
        return remember(self, "norm", state_version(self), self._norm)

    def _norm(self) -> float:
        # the kernel was checked when built, but a state change (mul_, copy_) can make it zero or NaN
        check_tensor(self.kernel, "kernel")
        _check_kernel_not_zero(self.kernel)
        if self.boundary == "circular":
            # margin 1e-6 covers the float32 rounding of the applied transfer function
            return float(self.transfer_function().abs().max()) * (1 + 1e-6)
        norm = float(self.kernel.abs().sum())
        if self.boundary in ("reflect", "replicate"):
            # padding copies pixels: along an axis with k - 1 padded positions a pixel appears at most k times,
            # so ||P||^2 <= kh * kw
            kh, kw = self._conv_kernel().shape
            norm *= math.sqrt(kh * kw)
        return norm

    def _repr_params(self) -> dict:
        return {"kernel": self.kernel, "image_size": self.image_size, "boundary": self.boundary}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        kernel = state_dict.get(prefix + "kernel")
        if isinstance(kernel, torch.Tensor) and kernel.shape == self.kernel.shape:
            if not bool(torch.isfinite(kernel).all()) or not bool((kernel != 0).any()):
                error_msgs.append(f"{prefix}kernel: the state holds a kernel that is all zeros or not finite; a "
                                  f"Blur needs a finite kernel with a non-zero entry")
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def measurement_shape(self, x_shape):
        if self.boundary == "valid":
            kh, kw = self.kernel.shape
            return (*x_shape[:-2], x_shape[-2] - kh + 1, x_shape[-1] - kw + 1)
        return tuple(x_shape)

    def check_image(self, x: torch.Tensor, name: str = "x") -> None:
        check_tensor(x, name)
        if x.ndim < 3 or tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} but this Blur takes images of shape "
                f"(B, C, {self.image_size[0]}, {self.image_size[1]})"
            )

    def check_measurement(self, y: torch.Tensor, name: str = "y") -> None:
        check_tensor(y, name)
        expected = self.measurement_shape((1, 1, *self.image_size))[-2:]
        if y.ndim < 3 or tuple(y.shape[-2:]) != tuple(expected):
            raise ValueError(
                f"{name} has shape {tuple(y.shape)} but the operator produces (B, C, {expected[0]}, {expected[1]}); "
                f"pass a measurement of Blur(image_size={self.image_size}, boundary={self.boundary!r})"
            )

    def _circular(self, t: torch.Tensor, adjoint: bool) -> torch.Tensor:
        if t.numel() == 0:  # an empty batch (the FFT refuses empty tensors)
            return t.clone()
        compute = torch.float64 if t.dtype == torch.float64 else torch.float32
        k_hat = self.transfer_function(compute).to(t.device)
        if adjoint:
            k_hat = k_hat.conj()
        return torch.fft.ifft2(torch.fft.fft2(t.to(compute)) * k_hat).real.to(t.dtype)

    def _conv_kernel(self) -> torch.Tensor:
        """The kernel handed to deepinv. With reflect or replicate padding deepinv's transpose is wrong for a
        kernel axis of size 1 (deepinv 0.5), so such an axis is zero-padded to 3: same centre, same map."""
        k = self.kernel
        if self.boundary in ("reflect", "replicate"):
            pad_w = 1 if k.shape[1] == 1 else 0
            pad_h = 1 if k.shape[0] == 1 else 0
            if pad_w or pad_h:
                k = torch.nn.functional.pad(k, (pad_w, pad_w, pad_h, pad_h))
        return k

    def _padded_conv(self, t: torch.Tensor, conv) -> torch.Tensor:
        """deepinv's convolution (4-D only) over any leading axes."""
        lead = t.shape[:-2]
        out_hw = self.measurement_shape(t.shape)[-2:] if conv is conv2d else self.image_size
        if t.numel() == 0:  # an empty batch (a reshape with -1 is ambiguous for it)
            return t.new_zeros((*lead, *out_hw))
        out = conv(t.reshape(-1, 1, *t.shape[-2:]), self._conv_kernel().to(device=t.device, dtype=t.dtype)[None, None],
                   padding=self.boundary)
        return out.reshape(*lead, *out.shape[-2:])

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        self.check_image(x)
        if self.boundary == "circular":
            return self._circular(x, adjoint=False)
        return self._padded_conv(x, conv2d)

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        self.check_measurement(y)
        if self.boundary == "circular":
            return self._circular(y, adjoint=True)
        return self._padded_conv(y, conv_transpose2d)
