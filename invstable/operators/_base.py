"""The operator contract: deepinv's ``LinearPhysics``, plus what invstable needs to certify a model.

An invstable operator is a :class:`deepinv.physics.LinearPhysics` (``A``, ``A_adjoint``, a noise model), so
it works inside deepinv, and any deepinv linear physics works in invstable. Our own operators add

- ``config()``: the registry name and JSON-serialisable parameters that rebuild the operator;
- ``norm_bound()``: an upper bound on the spectral norm ``||A||``, exact where known;
- ``measurement_shape(x_shape)`` and shape checks whose messages say what was expected.
"""

from __future__ import annotations

import torch
from deepinv.physics import LinearPhysics


def check_tensor(t: torch.Tensor, name: str) -> None:
    """Reject what cannot be a signal: a non-tensor, a non-float dtype, NaN or Inf."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}; convert it with torch.as_tensor")
    if not (t.is_floating_point() or t.is_complex()):
        raise TypeError(
            f"{name} has dtype {t.dtype}; pass floating-point values (for example {name}.float())"
        )
    if not bool(torch.isfinite(t).all()):
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

    def __repr__(self) -> str:
        try:
            params = self.config()["params"]
        except NotImplementedError:
            return f"{type(self).__name__}()"
        shown = {k: v for k, v in params.items() if not isinstance(v, list) or len(v) <= 8}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def state_version(module: torch.nn.Module) -> tuple:
    """A key that changes whenever a parameter or buffer of ``module`` is replaced or modified in place
    (``load_state_dict``, ``.to()``, ``mul_``): caches of derived quantities such as norms use it."""
    return tuple((name, t.data_ptr(), t._version, t.dtype, str(t.device))
                 for name, t in list(module.named_parameters()) + list(module.named_buffers())
                 if t.layout == torch.strided)
