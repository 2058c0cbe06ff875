"""Refuse an allocation that cannot fit, before making it, with the figure (instead of a raw MemoryError or the
kernel's out-of-memory kill)."""

from __future__ import annotations

import os


class InsufficientMemoryError(MemoryError, ValueError):
    """The memory a step needs (estimated before allocating) exceeds what this machine has available.

    ``needed`` and ``available`` are in bytes. It is a ``ValueError`` too, so commands report it as one line.
    """

    def __init__(self, message: str, *, needed: int, available: int):
        self.needed, self.available = int(needed), int(available)
        super().__init__(message)


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``; binary units, three significant digits."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _cgroup_room() -> int | None:
    """Bytes this process may still take under its cgroup (v2 or v1) limit, if it has one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as fh:
                limit = fh.read().strip()
            with open(usage_file) as fh:
                usage = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2 ** 60:
            return max(0, int(limit) - usage)
    return None


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``, capped by a cgroup limit), or ``None``
    where it cannot be told."""
    found = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            found = None
    room = _cgroup_room()
    if room is not None:
        found = room if found is None else min(found, room)
    return found


def check_memory(needed: float, what: str, *, hint: str) -> None:
    """Raise :class:`InsufficientMemoryError` if ``needed`` bytes exceed the available memory.

    Parameters
    ----------
    needed : float
        Estimated peak bytes of the step.
    what : str
        The step, as the message's subject ("a 30000 x 30000 ellipse phantom").
    hint : str
        What to do instead ("use a smaller size").

    Notes
    -----
    Nothing is refused where the available memory cannot be told (then the allocation itself decides).
    """
    available = available_memory()
    if available is not None and needed > available:
        raise InsufficientMemoryError(
            f"{what} needs about {format_bytes(needed)} of memory, but only {format_bytes(available)} is available "
            f"here; {hint}", needed=needed, available=available)
