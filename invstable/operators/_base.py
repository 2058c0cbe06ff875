"""The operator contract: deepinv's ``LinearPhysics``, plus what invstable needs to certify a model.

An invstable operator is a :class:`deepinv.physics.LinearPhysics` (``A``, ``A_adjoint``, a noise model), so
it works inside deepinv, and any deepinv linear physics works in invstable. :class:`Operator` declares what our
own operators add, every member with a default, so that callers use them directly (a foreign deepinv physics is
told apart with ``isinstance(op, Operator)``, never by probing for attributes):

- ``image_shape``: the trailing image axes the operator fixes, always a tuple (or ``None``);
- ``measurement_shape(x_shape)`` and ``measurement_ndim``: the shape of ``A x``;
- ``check_image(x)`` and ``check_measurement(y)``: shape checks whose messages say what was expected;
- ``config()``: the registry name and JSON-serialisable parameters that rebuild the operator;
- ``norm_bound()``: an upper bound on the spectral norm ``||A||``, exact where known.

What is measured on an operator (a norm, an adjoint verdict) is remembered beside it, by :func:`memo`, never
written into it: a user's object is not touched.
"""

from __future__ import annotations

import hashlib
import weakref

import numpy as np
import torch
from deepinv.physics import LinearPhysics

from ._sparse import SparseProduct


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


def shape_tuple(value, what: str = "in_shape") -> tuple[int, ...]:
    """``value`` (an int or a sequence of ints) as a non-empty tuple of positive ints, or a clear error."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),)
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a tuple of positive ints (one sample, no batch axis), got {value!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"{what} must be a non-empty tuple of positive ints (one sample, no batch axis), got {shape}")
    return shape


def require_operator(op, name: str = "op") -> None:
    """Refuse what is not a linear operator, saying what was received and what to pass instead."""
    if callable(getattr(op, "A", None)) and callable(getattr(op, "A_adjoint", None)):
        return
    if isinstance(op, (tuple, list)) and len(op) == 2 and all(callable(f) for f in op):
        got = "a (forward, adjoint) pair of callables"
    elif callable(op):
        kind = "function" if hasattr(op, "__code__") else "callable"
        got = f"the {kind} {getattr(op, '__qualname__', type(op).__name__)!r}"
    else:
        got = f"a {type(op).__name__}"
    raise TypeError(
        f"{name} must be a linear operator with A and A_adjoint (a deepinv LinearPhysics), got {got}; make one with "
        f"invstable.as_operator((forward, adjoint), in_shape=...) from a function and its adjoint, or "
        f"invstable.as_operator(matrix, in_shape=...) from a matrix"
    )


def device_of(op) -> torch.device:
    """The device of an operator's first parameter or buffer (the CPU for one without tensors)."""
    if isinstance(op, torch.nn.Module):
        for t in list(op.parameters()) + list(op.buffers()):
            return t.device
    return torch.device("cpu")


class Operator(LinearPhysics):
    """Base class of invstable's linear operators (a deepinv ``LinearPhysics``).

    Subclasses implement ``A`` and ``A_adjoint``, and set or override the members below where their defaults
    do not fit.

    Attributes
    ----------
    image_shape : tuple of int or None
        The trailing axes of an image that the operator fixes, always a tuple: ``(H, W)`` for an operator that
        acts on every channel alike (:class:`ParallelBeamCT`, :class:`Blur`), which takes ``(B, *image_shape)``
        and ``(B, C, *image_shape)``; the whole shape of one sample for an operator on flattened samples
        (:class:`MatrixOperator`, :class:`CallableOperator`), which takes ``(B, *image_shape)``; ``None`` for an
        operator that takes images of any size (:class:`Gradient`). In every case
        ``op.measurement_shape((1, *op.image_shape))`` is the shape of one batched measurement.
    measurement_ndim : int or None
        Number of axes of a batched measurement when it is fixed (``None`` otherwise); numpy measurements
        without their batch and channel axes are padded to it.
    """

    #: registry name, set by subclasses that can be rebuilt from ``config()``
    name: str | None = None

    #: the trailing image axes the operator fixes (see the class docstring); ``None``: any size
    image_shape: tuple[int, ...] | None = None

    #: number of axes of a batched measurement (``None`` when it is not fixed)
    measurement_ndim: int | None = None

    def config(self) -> dict:
        """Registry name and parameters that rebuild this operator with ``make_operator``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be rebuilt from a configuration")

    def norm_bound(self) -> float:
        """Upper bound on the spectral norm ``||A||_2``."""
        raise NotImplementedError(f"{type(self).__name__} has no norm_bound(); use invstable.operators.norm_bound("
                                  f"op, in_shape) to estimate one by power iteration")

    def measurement_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``A x`` for an ``x`` of shape ``x_shape`` (batch axis included).

        The default applies ``A`` to one zero image of that shape; subclasses that know it say it directly.
        """
        x_shape = tuple(int(n) for n in x_shape)
        with torch.no_grad():
            y = self.A(torch.zeros((1, *x_shape[1:]), device=device_of(self)))
        return (x_shape[0], *y.shape[1:])

    @staticmethod
    def _expected(shape: tuple[int, ...]) -> str:
        return f"(B, {', '.join(map(str, shape))})"

    def check_image(self, x: torch.Tensor, name: str = "x") -> None:
        """Refuse what cannot be an image of this operator: a bad tensor, or trailing axes other than
        ``image_shape``."""
        check_tensor(x, name)
        shape = self.image_shape
        if shape is not None and (x.ndim <= len(shape) or tuple(x.shape[-len(shape):]) != tuple(shape)):
            raise ValueError(f"{name} has shape {tuple(x.shape)} but {type(self).__name__} takes images of shape "
                             f"{self._expected(shape)}")

    def check_measurement(self, y: torch.Tensor, name: str = "y") -> None:
        """Refuse what cannot be a measurement of this operator: a bad tensor, or trailing axes other than those
        of ``measurement_shape((1, *image_shape))``."""
        check_tensor(y, name)
        if self.image_shape is None:
            return
        expected = tuple(self.measurement_shape((1, *self.image_shape))[1:])
        if y.ndim <= len(expected) or tuple(y.shape[-len(expected):]) != expected:
            raise ValueError(f"{name} has shape {tuple(y.shape)} but {type(self).__name__} produces measurements of "
                             f"shape {self._expected(expected)}; pass a measurement of this operator")

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


def config_of(op) -> dict | None:
    """The registry configuration of ``op`` (``{"name": ..., "params": {...}}``), or ``None`` for an operator that
    cannot be rebuilt from one: an invstable operator that has none (a matrix, a pair of callables) or a deepinv
    physics without ``config()``. A plugin's physics defines ``config()`` as invstable's operators do."""
    own = op.config if isinstance(op, Operator) else getattr(op, "config", None)
    if not callable(own):
        return None
    try:
        return own()
    except NotImplementedError:
        return None


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


# What is measured on an operator (its norm, the verdict on its adjoint) is remembered here, beside the object and
# dropped with it: never written into it, so a user's operator is not touched.
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def memo(op, slot: str) -> dict | None:
    """The dictionary in which ``slot`` (e.g. ``"norm"``) of what is measured on ``op`` is remembered, or ``None``
    for an object that cannot be weakly referenced (then nothing is remembered). Keys should include
    :func:`state_version` of the operator, so that a changed parameter or buffer is measured again."""
    try:
        return _MEMO.setdefault(op, {}).setdefault(slot, {})
    except TypeError:
        return None


def remember(op, slot: str, key, compute):
    """``compute()`` for ``op`` in the state ``key``, measured once and remembered (one entry per slot: the
    value for the operator's current state)."""
    entries = memo(op, slot)
    if entries is None:
        return compute()
    if key not in entries:
        value = compute()
        entries.clear()
        entries[key] = value
    return entries[key]


class SinogramOperator(Operator):
    """Base of :class:`ParallelBeamCT` and :class:`FanBeamCT`: images ``(B, C, n, n)``, sinograms
    ``(B, C, detectors, angles)``, ``A`` and ``A^T`` as products with stored sparse matrices (``_matrix``), and the
    angles saved with the state only to refuse a state made with other angles. Subclasses set ``image_size``,
    ``detectors``, ``n_angles``, ``angles``, ``scale`` and ``_cache``, and name themselves in
    :meth:`_measurement_origin`."""

    def _measurement_origin(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        # the angles travel with the state (they are not state), so that loading a state made with other angles
        # is refused instead of silently keeping these
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "angles"] = self.angles

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "angles"
        if key in state_dict:
            theirs = state_dict[key]
            if not isinstance(theirs, torch.Tensor) or not theirs.is_floating_point() or theirs.shape != (
                    self.n_angles,) or not torch.equal(theirs.detach().cpu(), self.angles.to(theirs.dtype)):
                count = theirs.numel() if isinstance(theirs, torch.Tensor) else "?"
                error_msgs.append(
                    f"{key}: the state holds other angles ({count} of them) than this {type(self).__name__} "
                    f"({self.n_angles}); the geometry is configuration, not state: build the operator with "
                    f"operator_from_config(config) instead"
                )
                return
            state_dict = {k: v for k, v in state_dict.items() if k != key}  # checked: not a tensor to load
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _apply(self, fn, *args, **kwargs):
        self._cache = {}  # moved or cast: rebuild the torch matrices lazily on the new device
        return super()._apply(fn, *args, **kwargs)

    def _product(self, which: str, t: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        compute = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
        lead = t.shape[:-2]
        flat = t.reshape(-1, t.shape[-2] * t.shape[-1]).to(compute).T
        out = SparseProduct.apply(flat, self, which)
        return out.T.reshape(*lead, *out_hw).to(t.dtype)

    def check_image(self, x: torch.Tensor, name: str = "x") -> None:
        check_tensor(x, name)
        if x.ndim < 3 or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} but {type(self).__name__}(image_size={self.image_size}) takes images "
                f"of shape (B, C, {self.image_size}, {self.image_size})"
            )

    def check_measurement(self, y: torch.Tensor, name: str = "y") -> None:
        check_tensor(y, name)
        expected = (self.detectors, self.n_angles)
        if y.ndim < 3 or tuple(y.shape[-2:]) != expected:
            raise ValueError(
                f"{name} has shape {tuple(y.shape)} but the operator produces (B, C, {expected[0]}, {expected[1]}); "
                f"pass a sinogram from {self._measurement_origin()} "
                f"with detectors on axis -2 and angles on axis -1"
            )

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        self.check_image(x)
        y = self._product("projector", x, (self.detectors, self.n_angles))
        return y * self.scale if self.scale != 1.0 else y

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        self.check_measurement(y)
        x = self._product("adjoint", y, (self.image_size, self.image_size))
        return x * self.scale if self.scale != 1.0 else x
