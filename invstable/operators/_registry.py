"""Named operators: built-ins and those other packages register through the ``invstable.operators``
entry-point group. The CLI and saved models rebuild their operator through this registry."""

from __future__ import annotations

import dataclasses
from importlib.metadata import entry_points
from typing import Callable

from ._blur import Blur, gaussian_kernel
from ._ct import ParallelBeamCT
from ._fan import FanBeamCT
from ._gradient import Gradient

ENTRY_POINT_GROUP = "invstable.operators"


@dataclasses.dataclass(frozen=True)
class _Entry:
    factory: Callable
    #: keyword arguments of a small instance and the shape of one of its images, for contract tests
    example: dict | None
    example_in_shape: tuple | None


_REGISTRY: dict[str, _Entry] = {}
_entry_points_loaded = False


def register_operator(name: str, factory: Callable, *, example: dict | None = None,
                      example_in_shape: tuple | None = None, overwrite: bool = False) -> None:
    """Register ``factory(**params)`` under ``name``.

    ``example`` (keyword arguments of a small instance) and ``example_in_shape`` (the shape of one of its
    images) let the contract tests check every registered operator.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an operator name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"an operator named {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = _Entry(factory, example, None if example_in_shape is None else tuple(example_in_shape))


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        try:
            target = ep.load()
        except Exception as err:  # noqa: BLE001 (a broken plugin must not break invstable)
            def target(*_, _err=err, _ep=ep, **__):
                raise ImportError(f"operator {_ep.name!r} from entry point {_ep.value!r} failed to load: {_err}")
        example = getattr(target, "invstable_example", None)
        in_shape = getattr(target, "invstable_example_in_shape", None)
        register_operator(ep.name, target, example=example, example_in_shape=in_shape)


def available_operators() -> list[str]:
    """Names of the registered operators, plugins included."""
    _load_entry_points()
    return sorted(_REGISTRY)


def operator_example(name: str) -> tuple[dict, tuple] | None:
    """The small instance a registered operator declared for tests: ``(params, in_shape)`` or ``None``."""
    _load_entry_points()
    entry = _REGISTRY[name]
    if entry.example is None or entry.example_in_shape is None:
        return None
    return dict(entry.example), entry.example_in_shape


def make_operator(name: str, /, **params):
    """Build the registered operator ``name`` with ``params``.

    Examples
    --------
    >>> op = make_operator("ct", image_size=32, angles=10)
    >>> tuple(op.A(__import__("torch").zeros(1, 1, 32, 32)).shape)
    (1, 1, 46, 10)
    """
    _load_entry_points()
    if name not in _REGISTRY:
        raise ValueError(f"unknown operator {name!r}; registered operators are {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name].factory(**params)


def operator_from_config(config: dict):
    """Rebuild an operator from ``op.config()`` (``{"name": ..., "params": {...}}``), e.g. read from a file."""
    if not isinstance(config, dict) or not isinstance(config.get("name"), str) or not isinstance(
            config.get("params", {}), dict):
        raise ValueError(f"an operator configuration is {{'name': str, 'params': dict}}, got {config!r}")
    return make_operator(config["name"], **config.get("params", {}))


def config_summary(config: dict) -> str:
    """A one-line, readable form of an operator configuration: long or nested lists shown by their shape."""
    import numpy as np  # noqa: PLC0415

    params = {
        k: (f"<array of shape {np.shape(v)}>" if isinstance(v, list) and (len(v) > 8 or any(isinstance(e, list) for e in v))
            else v)
        for k, v in sorted(config.get("params", {}).items())
    }
    return f"{config.get('name')!s}({', '.join(f'{k}={v}' for k, v in params.items())})"


def _blur(*, image_size, kernel=None, sigma=None, kernel_size=None, boundary="circular"):
    if (kernel is None) == (sigma is None):
        raise ValueError("the 'blur' operator needs exactly one of kernel= (2-D array) and sigma= (Gaussian)")
    if kernel is None:
        kernel = gaussian_kernel(sigma, kernel_size)
    return Blur(kernel, image_size, boundary=boundary)


def _ct(*, image_size, angles, detectors=None, normalize=True):
    return ParallelBeamCT(image_size, angles, detectors=detectors, normalize=normalize)


def _fan(*, image_size, angles, source_distance=None, detector_distance=None, detectors=None, detector_spacing=None,
         normalize=True):
    return FanBeamCT(image_size, angles, source_distance=source_distance, detector_distance=detector_distance,
                     detectors=detectors, detector_spacing=detector_spacing, normalize=normalize)


def _gradient(*, boundary="circular"):
    return Gradient(boundary=boundary)


register_operator("ct", _ct, example={"image_size": 16, "angles": 7}, example_in_shape=(1, 16, 16))
register_operator("fan", _fan, example={"image_size": 12, "angles": 9}, example_in_shape=(1, 12, 12))
register_operator("blur", _blur, example={"image_size": [12, 10], "sigma": 1.0}, example_in_shape=(2, 12, 10))
register_operator("gradient", _gradient, example={"boundary": "neumann"}, example_in_shape=(1, 9, 8))
