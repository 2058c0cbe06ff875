"""The operator contract: deepinv's ``LinearPhysics``, plus what invstable needs to certify a model.

An invstable operator is a :class:`deepinv.physics.LinearPhysics` (``A``, ``A_adjoint``, a noise model), so
it works inside deepinv, and any deepinv linear physics works in invstable. Our own operators add

- ``config()``: the registry name and JSON-serialisable parameters that rebuild the operator;
- ``norm_bound()``: an upper bound on the spectral norm ``||A||``, exact where known;
- ``measurement_shape(x_shape)`` and shape checks whose messages say what was expected.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from deepinv.physics import LinearPhysics


def complex_message(name: str, dtype) -> str:
    """What to say about complex data: invstable's operators and baselines are real."""
    return (f"{name} is complex ({dtype}); invstable's operators and reconstructions take real tensors: pass "
            f"{name}.real (or {name}.abs() for magnitude data)")


def check_tensor(t: torch.Tensor, name: str) -> None:
    """Reject what cannot be a signal: a non-tensor, a complex or non-float dtype, NaN or Inf."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}; convert it with torch.as_tensor")
    if t.is_complex():
        raise TypeError(complex_message(name, t.dtype))
    if not t.is_floating_point():
        raise TypeError(
            f"{name} has dtype {t.dtype}; pass floating-point values (for example {name}.float())"
        )
    try:
        finite = bool(torch.isfinite(t).all())
    except RuntimeError:  # no values to look at: a tensor under torch.vmap (torch.func) or on the meta device
        return
    if not finite:
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s); clean or mask them before reconstructing")


class Operator(LinearPhysics):
    """Base class of invstable's linear operators (a deepinv ``LinearPhysics``).

    Subclasses implement ``A``, ``A_adjoint``, ``measurement_shape``, ``config`` and
    ``norm_bound``.
    """

    #: registry name, set by subclasses that can be rebuilt from ``config()``
    name: str | None = None

    def config(self) -> dict:
        """Registry name and parameters that rebuild this operator with ``make_operator``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be rebuilt from a configuration")

    def norm_bound(self) -> float:
        """Upper bound on the spectral norm ``||A||_2``."""
        raise NotImplementedError

    def measurement_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``A x`` for an ``x`` of shape ``x_shape`` (batch axis included)."""
        raise NotImplementedError

    #: number of axes of a batched measurement (``None`` when it is not fixed)
    measurement_ndim: int | None = None

    def _repr_params(self) -> dict:
        """What tells this operator apart from another of its class: its configuration by default."""
        try:
            return dict(self.config()["params"])
        except NotImplementedError:
            return {}

    def __repr__(self) -> str:
        # every parameter is shown, long arrays by their shape, range and a digest of their values, so that two
        # operators with different geometries or kernels never print alike
        shown = ", ".join(f"{k}={summarise(v)}" for k, v in self._repr_params().items())
        return f"{type(self).__name__}({shown})"


def digest(values) -> str:
    """Eight hex digits of SHA-256 over the float64 values (and shape) of an array: equal arrays, equal digests."""
    if isinstance(values, torch.Tensor):
        array = values.detach().cpu().to(torch.float64).numpy()
    else:
        array = np.asarray(values, dtype=np.float64)
    h = hashlib.sha256(repr(array.shape).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:8]


def summarise(value) -> str:
    """A parameter as a repr shows it: short values as they are, long or nested arrays as
    ``<shape (7, 7), values in [0, 0.16], digest 1a2b3c4d>``."""
    is_array = isinstance(value, (torch.Tensor, np.ndarray))
    if not is_array and not (isinstance(value, (list, tuple)) and (
            len(value) > 8 or any(isinstance(v, (list, tuple)) for v in value))):
        return repr(value)
    try:
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError):
        return repr(value)
    if array.size == 0:
        return f"<empty array of shape {array.shape}>"
    return (f"<shape {array.shape}, values in [{array.min():.6g}, {array.max():.6g}], "
            f"digest {digest(array)}>")


def state_version(module: torch.nn.Module) -> tuple:
    """A key that changes whenever a parameter or buffer of ``module`` is replaced or modified in place
    (``load_state_dict``, ``.to()``, ``mul_``): caches of derived quantities such as norms use it."""
    return tuple((name, t.data_ptr(), t._version, t.dtype, str(t.device))
                 for name, t in list(module.named_parameters()) + list(module.named_buffers())
                 if t.layout == torch.strided)
