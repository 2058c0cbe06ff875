"""Parameters given by name (a command's KEY=VALUE options, a stored configuration) checked against the function
they are for, so that a typo names the parameters it could have meant instead of a Python TypeError."""

from __future__ import annotations

import inspect


def accepted_parameters(factory) -> tuple[list[str], list[str]] | None:
    """The keyword parameters ``factory`` takes, as (required, optional); ``None`` if it takes any (``**kwargs``)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(signature.parameters.values())
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    required = [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]
    optional = [p.name for p in params if p.kind in kinds and p.default is not inspect.Parameter.empty]
    return required, optional


def check_parameters(what: str, given: dict, factory, *, flag: str | None = None) -> None:
    """Raise ``ValueError`` naming the parameters ``what`` takes if ``given`` has an unknown or lacks a required one.

    ``flag`` is the command-line option the parameters come from (``--param``), named in the message.
    Nothing is checked for a factory that takes ``**kwargs`` or whose signature cannot be read.
    """
    taken = accepted_parameters(factory)
    if taken is None:
        return
    required, optional = taken
    unknown = [k for k in given if k not in required + optional]
    missing = [k for k in required if k not in given]
    if not unknown and not missing:
        return
    problem = (f"has no parameter {', '.join(map(repr, unknown))}" if unknown
               else f"needs {', '.join(map(repr, missing))}")
    takes = ", ".join(required) + (" (required)" if required else "")
    takes += ("; " if required and optional else "") + (", ".join(optional) + " (optional)" if optional else "")
    where = f", given as {flag} KEY=VALUE" if flag else ""
    raise ValueError(f"{what} {problem}; it takes {takes or 'no parameters'}{where}")
