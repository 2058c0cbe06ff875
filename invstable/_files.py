"""Writing files so that a reader never sees half of one: the one place invstable writes files atomically.

A file is written under a temporary name in its destination folder, flushed to disk, and renamed over the
destination (``os.replace``, atomic on POSIX and Windows); the folder is flushed too, so the new name survives a
crash. An interrupted write leaves the destination as it was, and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "fsync_file", "fsync_folder", "publish"]


def fsync_file(path: str | os.PathLike) -> None:
    """Flush the contents of the file at ``path`` to disk."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the filesystem allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make the complete file ``tmp`` (in the folder of ``path``) appear as ``path``: flushed, renamed over it,
    the folder flushed."""
    path = Path(path)
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_folder(path.parent)
    return path


def _temporary_beside(path: Path, suffix: str) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions a plain open would
    return tmp


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], *, overwrite: bool = True) -> Path:
    """Write a file through ``write(tmp)`` on a temporary file beside ``path``, then make it appear as ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; missing folders are created.
    write : callable
        Called with the temporary file's name (a ``str``); it writes the whole file there.
    overwrite : bool, default True
        Replace an existing ``path``. With ``False`` the file appears only where none is, atomically (a hard
        link, which never replaces): :class:`FileExistsError` if ``path`` exists or appears meanwhile.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError
        With ``overwrite=False``, when ``path`` exists.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> atomic_write(out, lambda tmp: pathlib.Path(tmp).write_text("done")).read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it")
    tmp = _temporary_beside(path, ".tmp")
    try:
        write(tmp)
        if overwrite:
            return publish(tmp, path)
        fsync_file(tmp)
        try:
            os.link(tmp, path)  # atomic, and never replaces: fails if a file appeared at `path` meanwhile
        except FileExistsError:
            raise FileExistsError(f"{str(path)!r} appeared while it was being written (another process wrote "
                                  "it); pass overwrite=True to replace it") from None
        except OSError:  # a filesystem without hard links
            if path.exists():
                raise FileExistsError(f"{str(path)!r} appeared while it was being written; pass overwrite=True "
                                      "to replace it") from None
            os.replace(tmp, path)
        fsync_folder(path.parent)
        return path
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
