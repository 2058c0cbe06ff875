"""The calling convention of the baselines: torch in, torch out; numpy in (batch and channel axes optional),
numpy out; bad measurements rejected with a message that says what was expected."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..operators._base import Operator, check_tensor, complex_message, require_operator
from ..operators._check import verify_adjoint


def as_measurement(y, op, name: str = "y") -> tuple[torch.Tensor, Callable[[torch.Tensor], object]]:
    """Validate ``y`` for ``op`` and return it as a batched tensor, with the function that maps a result back
    to the caller's convention (numpy without the axes that were added, or torch as it is).

    ``op`` must be a linear operator whose ``A_adjoint`` is the adjoint of ``A`` (see
    :func:`invstable.operators.check_operator`; measured once per operator and shape, then remembered): an
    :class:`~invstable.operators.AdjointMismatchError` otherwise. A batch of zero measurements is valid."""
    require_operator(op)
    from_numpy = isinstance(y, np.ndarray)
    if from_numpy:
        if np.iscomplexobj(y):
            raise TypeError(complex_message(name, y.dtype))
        if not np.issubdtype(y.dtype, np.floating):
            raise TypeError(f"{name} has dtype {y.dtype}; pass floating-point measurements, e.g. {name}.astype(np.float32)")
        t = torch.from_numpy(np.ascontiguousarray(y))
    elif isinstance(y, torch.Tensor):
        t = y
    else:
        raise TypeError(f"{name} must be a torch.Tensor or a numpy array, got {type(y).__name__}")
    check_tensor(t, name)

    # the contract of invstable's operators; a foreign deepinv physics declares no measurement shape
    ndim = op.measurement_ndim if isinstance(op, Operator) else None
    added = 0
    if ndim is not None and t.ndim < ndim:
        if not from_numpy:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but {type(op).__name__} expects batched measurements with "
                f"{ndim} axes; add the batch (and channel) axes, e.g. {name}[None, None]"
            )
        added = ndim - t.ndim
        t = t.reshape((1,) * added + tuple(t.shape))
    if isinstance(op, Operator):
        op.check_measurement(t, name)
    # a wrong adjoint makes every baseline silently wrong (CG on a non-symmetric system, FISTA on another
    # objective): refuse it, measured once per operator and measurement shape
    verify_adjoint(op, y_shape=tuple(t.shape[1:]), dtype=t.dtype, device=t.device)

    def restore(x: torch.Tensor):
        if not from_numpy:
            return x
        out = x.detach().cpu()
        return out.reshape(out.shape[added:]).numpy()  # drop the leading axes that were added to y

    return t, restore


def as_alpha(alpha, batch: int, like: torch.Tensor, name: str = "alpha") -> torch.Tensor:
    """A positive regularisation weight per sample, shape ``(batch,)``, validated in float64 before it is cast
    to the dtype of the solve (so that a Python float keeps its precision in a float64 solve)."""
    if isinstance(alpha, (bool, str, bytes)) or (isinstance(alpha, np.ndarray) and alpha.dtype == bool):
        raise TypeError(f"{name} must be a number or an array of numbers, got {alpha!r}")
    if (alpha.is_complex() if isinstance(alpha, torch.Tensor) else np.iscomplexobj(alpha)):
        raise TypeError(f"{name} is complex ({alpha!r}); a regularisation weight is a real number > 0")
    try:
        a = (alpha.detach().to(torch.float64) if isinstance(alpha, torch.Tensor)
             else torch.as_tensor(np.asarray(alpha, dtype=np.float64))).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers, got {alpha!r}") from None
    if a.numel() not in (1, batch):
        raise ValueError(f"{name} must be a number or one value per sample ({batch}), got {a.numel()} values")
    dtype = like.dtype if like.is_floating_point() else torch.float32
    if not bool(torch.isfinite(a).all()) or not bool((a > 0).all()) or not bool((a.to(dtype) > 0).all()):
        raise ValueError(
            f"{name} must be finite and > 0 (and representable in {dtype}), got {alpha!r}; pick one with "
            f"invstable.choose_alpha"
        )
    return a.to(device=like.device, dtype=dtype).expand(batch).clone()


def as_start(x0, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A warm start of exactly the reconstruction's ``shape`` (numpy may omit the leading singleton axes)."""
    t = x0 if isinstance(x0, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x0)) if isinstance(
        x0, np.ndarray) else None
    if t is None:
        raise TypeError(f"x0 must be a torch.Tensor or a numpy array, got {type(x0).__name__}")
    check_tensor(t, "x0")
    if isinstance(x0, np.ndarray) and t.ndim < len(shape):
        t = t.reshape((1,) * (len(shape) - t.ndim) + tuple(t.shape))
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but the reconstruction has shape {tuple(shape)}")
    return t.to(dtype)
