"""The registry of image sources: every source has ``config()`` and ``make_source`` rebuilds it."""

from __future__ import annotations

import torch

from ._folder import HDF5Images, ImageFolder
from ._images import ImageCrops
from ._params import check_parameters
from ._phantoms import EllipsePhantoms, SheppLogan, _check_index


class Concat(torch.utils.data.Dataset):
    """Sources one after the other (a source), e.g. 100 phantoms then Shepp-Logan."""

    def __init__(self, *parts):
        if not parts:
            raise ValueError("Concat needs at least one source")
        for p in parts:
            if not hasattr(p, "config"):
                raise TypeError(f"every part must be an invstable source with config(), got {type(p).__name__}")
        self.parts = tuple(parts)
        self._lengths = [len(p) for p in parts]

    def __len__(self) -> int:
        return sum(self._lengths)

    def __getitem__(self, index: int) -> torch.Tensor:
        index = _check_index(index, len(self), type(self).__name__)
        for part, n in zip(self.parts, self._lengths):
            if index < n:
                return part[index]
            index -= n
        raise AssertionError("unreachable")  # pragma: no cover

    def config(self) -> dict:
        """JSON description from which :func:`make_source` rebuilds this source."""
        return {"name": "concat", "params": {"parts": [p.config() for p in self.parts]}}

    def __repr__(self) -> str:
        return "Concat(" + ", ".join(map(repr, self.parts)) + ")"


SOURCES = {
    "ellipses": EllipsePhantoms,
    "shepp-logan": SheppLogan,
    "crops": ImageCrops,
    "folder": ImageFolder,
    "hdf5-images": HDF5Images,
    "concat": None,  # built from its parts below
}


def make_source(config: dict, *, flag: str | None = None):
    """Rebuild a source from its ``config()`` dictionary ``{"name": ..., "params": {...}}``.

    ``flag`` names where the parameters came from in error messages (``--source-param`` on the command line).

    Raises
    ------
    ValueError
        If the name is not a registered source (the message lists the valid names), or a parameter is
        unknown or missing (the message lists the parameters the source takes).
    """
    if not isinstance(config, dict) or "name" not in config or "params" not in config:
        raise ValueError(f"a source config is a dict with keys 'name' and 'params', got {config!r}")
    name, params = config["name"], dict(config["params"])
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; valid names are {sorted(SOURCES)}")
    if name == "concat":
        return Concat(*(make_source(p, flag=flag) for p in params["parts"]))
    check_parameters(f"source {name!r}", params, SOURCES[name], flag=flag)
    positional = {"ellipses": "size", "shepp-logan": "size", "crops": "images", "folder": "root", "hdf5-images": "path"}[name]
    first = params.pop(positional)
    return SOURCES[name](first, **params)
