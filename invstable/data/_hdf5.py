"""HDF5 storage of paired datasets: an atomic, resumable writer and a checking, lazy reader.

File layout (format ``invstable-paired``, version 1)::

    /x        float32 (N, C, H, W)    clean images, one chunk per sample, gzip + shuffle + fletcher32
    /y        float32 (N, *y_shape)   noisy measurements, same storage
    /sigma    float64 (N,)            noise standard deviation of each sample
    /digest   uint8   (N, 32)         sha256 of the little-endian bytes of x[i], y[i], sigma[i]
    attrs: meta (JSON: format, version, task, split, count, shapes, operator {name, params},
           noise {kind, level, relative}, noise_seed, fixed_noise, source config),
           checksum (sha256 hex of meta then every digest), complete, n_written, invstable_version

The content checksum covers the metadata and every sample but not the package version, so a
dataset made again by a later version with the same data has the same checksum. Nothing in a
file is executed: the metadata is JSON, the arrays are plain numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._files import publish
from ._paired import Noise, PairedDataset, operator_config
from ._phantoms import _check_index

FORMAT = "invstable-paired"
FORMAT_VERSION = 1
META_KEYS = ("format", "format_version", "task", "split", "count", "x_shape", "y_shape", "operator",
             "noise", "noise_seed", "fixed_noise", "source")
FIELDS = ("x", "y", "sigma", "digest")
BLOCK = 16  # samples written between two flushes of the progress counter


class DatasetFileError(ValueError):
    """A dataset file is missing, unreadable, incomplete, being written by another make, or does not match what
    it claims.

    The message starts with the file name; ``path`` and ``problem`` hold the two parts.
    """

    def __init__(self, path, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class MakeResult:
    """What :func:`make_dataset` wrote: the path, sample count, checksum and where it resumed."""

    path: Path
    count: int
    checksum: str
    resumed_from: int


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _sample_digest(x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(y, dtype="<f4").tobytes())
    h.update(np.asarray(sigma, dtype="<f8").tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _content_checksum(meta: dict, digests: np.ndarray) -> str:
    h = hashlib.sha256(_canonical(meta))
    h.update(np.ascontiguousarray(digests, dtype=np.uint8).tobytes())
    return h.hexdigest()


def partial_path(out) -> Path:
    """The temporary name :func:`make_dataset` writes to before renaming to ``out``."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def lock_path(out) -> Path:
    """The lock file a :func:`make_dataset` to ``out`` holds while it writes (``.<name>.lock`` beside it)."""
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def _writer_lock(out: Path):
    """Hold the exclusive lock of the writer of ``out``, or raise :class:`DatasetFileError` naming its holder.

    The lock is an ``fcntl.flock`` on :func:`lock_path`, so the kernel releases it when its holder dies (a killed
    make leaves no stale lock). The file is removed on release; a taker checks that the file it locked is still the
    one at the path, so a lock file removed in between is never taken by two writers.
    """
    import fcntl

    path = lock_path(out)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            raise DatasetFileError(
                out, f"another make is writing this file now (process {holder or '?'}, lock {path.name}); wait for "
                     "it to finish, or write to another --out") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the previous holder removed it between our open and our lock
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _warn_if_disk_is_short(out: Path, meta: dict, remaining: int) -> None:
    """Warn, before writing, if the samples still to write would not fit uncompressed on the disk of ``out``."""
    import shutil
    import warnings

    per_sample = 4 * (int(np.prod(meta["x_shape"])) + int(np.prod(meta["y_shape"]))) + 8 + 32
    try:
        free = shutil.disk_usage(out.parent).free
    except OSError:
        return
    if remaining * per_sample > free:
        from ._memory import format_bytes

        warnings.warn(f"{out}: {remaining} pairs take up to {format_bytes(remaining * per_sample)} before "
                      f"compression and {format_bytes(free)} are free there; if the disk fills, the make stops "
                      "and can be resumed once there is room", stacklevel=3)


def _input_files(config) -> list[Path]:
    """The files a source reads, from its ``config()`` (the ``path`` of every part)."""
    found = []
    if isinstance(config, dict):
        params = config.get("params", {})
        if isinstance(params, dict):
            if isinstance(params.get("path"), str):
                found.append(Path(params["path"]))
            for part in params.get("parts", []) or []:
                found += _input_files(part)
    return found


def _meta_for(pairs: PairedDataset, count: int, task, split) -> dict:
    if not hasattr(pairs.source, "config"):
        raise TypeError(f"the source must be an invstable source with config(), got {type(pairs.source).__name__}")
    x, y, _ = pairs.sample(0)
    return json.loads(_canonical({
        "format": FORMAT, "format_version": FORMAT_VERSION, "task": task, "split": split, "count": count,
        "x_shape": list(x.shape), "y_shape": list(y.shape), "operator": operator_config(pairs.operator),
        "noise": pairs.noise.config(), "noise_seed": pairs.seed, "fixed_noise": pairs.fixed_noise,
        "source": pairs.source.config(),
    }))


def _create(path: Path, meta: dict):
    import h5py

    f = h5py.File(path, "w")
    n = meta["count"]
    opts = dict(compression="gzip", compression_opts=4, shuffle=True, fletcher32=True)
    f.create_dataset("x", shape=(n, *meta["x_shape"]), dtype="<f4", chunks=(1, *meta["x_shape"]), **opts)
    f.create_dataset("y", shape=(n, *meta["y_shape"]), dtype="<f4", chunks=(1, *meta["y_shape"]), **opts)
    f.create_dataset("sigma", shape=(n,), dtype="<f8")
    f.create_dataset("digest", shape=(n, 32), dtype="u1")
    f.attrs["meta"] = _canonical(meta).decode()
    f.attrs["complete"] = False
    f.attrs["n_written"] = 0
    f.flush()
    return f


def _try_resume(path: Path, meta: dict):
    """Open a partial file for appending; return (file, first index to write) or (None, reason)."""
    import h5py

    try:
        f = h5py.File(path, "r+")
    except OSError as error:
        return None, f"unreadable ({error})"
    try:
        if json.loads(f.attrs["meta"]) != meta:
            f.close()
            return None, "it was started with other settings"
        done = int(f.attrs["n_written"])
        digests = f["digest"][:done]
        for i in range(done):  # keep only the prefix whose stored bytes still match their digests
            if not np.array_equal(_sample_digest(f["x"][i], f["y"][i], f["sigma"][i]), digests[i]):
                return f, i
        return f, done
    except Exception as error:  # anything odd in a partial file: start over
        f.close()
        return None, f"damaged ({type(error).__name__}: {error})"


def make_dataset(out, pairs: PairedDataset, *, count: int | None = None, task: str | None = None,
                 split: str | None = None, resume: bool = True, overwrite: bool = False,
                 progress: bool = True) -> MakeResult:
    """Write the first ``count`` pairs of ``pairs`` to the HDF5 file ``out``, atomically.

    Parameters
    ----------
    out : str or os.PathLike
        Target file (``.h5``). It appears only once complete.
    pairs : PairedDataset
        The pairs to store; its source and operator must have ``config()``.
    count : int, optional
        Number of pairs (default: all of ``pairs``).
    task, split : str, optional
        Labels stored in the metadata (e.g. ``"ct-30"``, ``"train"``).
    resume : bool
        Continue an interrupted make of the same settings from its temporary file
        (``.<name>.partial`` next to ``out``) instead of starting over.
    overwrite : bool
        Replace an existing ``out``; otherwise an existing ``out`` is an error.
    progress : bool
        Show a tqdm progress bar (on stderr).

    Returns
    -------
    MakeResult

    Raises
    ------
    FileExistsError
        If ``out`` exists and ``overwrite`` is false.
    FileNotFoundError
        If the folder of ``out`` does not exist.
    DatasetFileError
        If another make is writing ``out`` now (it holds the lock), or writing fails (a full disk: the
        partial file is kept for a resume).
    ValueError
        If ``count`` is out of range, the operator / source cannot be described,
        ``pairs.fixed_noise`` is false (a file holds one noise draw per pair), or ``out`` is a file the
        source reads.

    Notes
    -----
    One make at a time writes to ``out``: it holds an exclusive lock (``fcntl.flock`` on ``.<name>.lock``
    beside ``out``, released by the kernel if the make is killed) from before it looks at ``out`` until after
    the rename, and a second make to the same ``out`` is refused at once. Before the rename the finished file
    is read back and its checksum verified, so a returned result always describes a complete file.

    Samples are written to the temporary file in blocks; after each block the number of
    samples written is stored. The file is renamed to ``out`` (``os.replace``) only after the
    content checksum is stored and the data are flushed to disk, so a killed make never leaves
    a file under ``out``. Because every sample depends on its index only, a resumed make gives
    the same bytes as an uninterrupted one.
    """
    from tqdm.auto import tqdm

    from .._version import __version__

    out = Path(out)
    if not isinstance(pairs, PairedDataset):
        raise TypeError(f"pairs must be an invstable.data.PairedDataset, got {type(pairs).__name__}")
    if not pairs.fixed_noise:
        raise ValueError("a dataset file holds one noise draw per pair; pass a PairedDataset with fixed_noise=True")
    count = len(pairs) if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(pairs):
        raise ValueError(f"count must be an int in [1, {len(pairs)}] (the size of the source), got {count!r}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: folder does not exist; create it first")
    source_config = pairs.source.config() if hasattr(pairs.source, "config") else None
    for read in _input_files(source_config):
        if read.resolve() == out.resolve() or (read.exists() and out.exists() and os.path.samefile(read, out)):
            raise ValueError(f"{out}: is the file the source reads ({read}); write the dataset to another file")
    with _writer_lock(out):
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out}: already exists; pass overwrite=True (--overwrite) to replace it")
        meta = _meta_for(pairs, count, task, split)
        tmp = partial_path(out)
        f, start = None, 0
        if tmp.exists() and resume:
            f, start = _try_resume(tmp, meta)
            if f is None:
                import warnings

                warnings.warn(f"{tmp}: cannot resume, {start}; starting over", stacklevel=2)
                start = 0
        if f is None:
            tmp.unlink(missing_ok=True)
            f = _create(tmp, meta)
        resumed_from = start
        _warn_if_disk_is_short(out, meta, count - start)
        try:
            with tqdm(total=count, initial=start, disable=not progress, desc=out.name, unit="pair") as bar:
                for lo in range(start, count, BLOCK):
                    hi = min(lo + BLOCK, count)
                    for i in range(lo, hi):
                        x, y, sigma = pairs.sample(i)
                        x, y, sigma = x.numpy(), y.numpy(), float(sigma)
                        if list(x.shape) != meta["x_shape"] or list(y.shape) != meta["y_shape"]:
                            raise ValueError(f"sample {i} has shapes {x.shape}, {y.shape}, not those of sample 0 "
                                             f"{meta['x_shape']}, {meta['y_shape']}; give a source of equal-size "
                                             "images")
                        f["x"][i], f["y"][i], f["sigma"][i] = x, y, sigma
                        f["digest"][i] = _sample_digest(x, y, sigma)
                    f.attrs["n_written"] = hi
                    f.flush()
                    bar.update(hi - lo)
            checksum = _content_checksum(meta, f["digest"][:])
            f.attrs["checksum"] = checksum
            f.attrs["invstable_version"] = __version__
            f.attrs["complete"] = True
            f.flush()
        except OSError as error:  # a full disk, a removed folder: the partial file stays for a resume
            raise DatasetFileError(out, f"the make stopped ({type(error).__name__}: {error}); the samples written "
                                        f"so far are kept in {tmp.name}: fix the cause and run the same make "
                                        "again to resume") from None
        finally:
            f.close()
        checked, _ = _open_checked(tmp)  # what is renamed is complete and matches its checksum, as read back
        checked.close()
        publish(tmp, out)  # flushed to disk, renamed over out, the folder flushed
    return MakeResult(path=out, count=count, checksum=checksum, resumed_from=resumed_from)


def _open_checked(path: Path):
    """Open ``path`` and check structure, fields and checksum; return (h5py file, meta)."""
    import h5py

    if not path.exists():
        partial = partial_path(path)
        hint = f" (an unfinished make left {partial.name}; run the make again to resume it)" if partial.exists() else ""
        raise DatasetFileError(path, f"no such file{hint}")
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise DatasetFileError(path, f"not a readable HDF5 file, truncated or corrupted ({error})") from None
    try:
        if "meta" not in f.attrs:
            raise DatasetFileError(path, "missing field 'meta' (not an invstable dataset file)")
        try:
            meta = json.loads(f.attrs["meta"])
        except (TypeError, ValueError) as error:
            raise DatasetFileError(path, f"field 'meta' is not valid JSON ({error})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DatasetFileError(path, f"not an {FORMAT} file (format {meta.get('format') if isinstance(meta, dict) else None!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetFileError(path, f"format version {meta.get('format_version')!r}; this invstable reads version {FORMAT_VERSION}")
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise DatasetFileError(path, f"missing metadata field(s) {missing}")
        if not bool(f.attrs.get("complete", False)):
            raise DatasetFileError(path, f"incomplete: {int(f.attrs.get('n_written', 0))} of {meta['count']} samples written (interrupted make?)")
        if "checksum" not in f.attrs:
            raise DatasetFileError(path, "missing field 'checksum'")
        n = meta["count"]
        expected = {"x": (n, *meta["x_shape"]), "y": (n, *meta["y_shape"]), "sigma": (n,), "digest": (n, 32)}
        for name, shape in expected.items():
            if name not in f:
                raise DatasetFileError(path, f"missing field {name!r}")
            if tuple(f[name].shape) != shape:
                raise DatasetFileError(path, f"field {name!r} has shape {tuple(f[name].shape)}, expected {shape}")
        try:
            digests = f["digest"][:]
        except OSError as error:
            raise DatasetFileError(path, f"field 'digest' cannot be read, corrupted ({error})") from None
        stored = f.attrs["checksum"]
        stored = stored.decode() if isinstance(stored, bytes) else str(stored)
        actual = _content_checksum(meta, digests)
        if actual != stored:
            raise DatasetFileError(path, f"checksum mismatch: stored {stored[:16]}..., content gives {actual[:16]}... (file altered or corrupted)")
    except BaseException:
        f.close()
        raise
    return f, meta


def _read_sample(f, path: Path, index: int):
    try:
        x, y, sigma = f["x"][index], f["y"][index], f["sigma"][index]
        digest = f["digest"][index]
    except OSError as error:
        raise DatasetFileError(path, f"sample {index} cannot be read, corrupted ({error})") from None
    if not np.array_equal(_sample_digest(x, y, sigma), digest):
        raise DatasetFileError(path, f"sample {index} does not match its digest (file altered or corrupted)")
    return x, y, sigma


class HDF5PairedDataset(torch.utils.data.Dataset):
    """Pairs (x, y) read lazily from a file written by :func:`make_dataset`.

    Parameters
    ----------
    path : str or os.PathLike
        The dataset file.
    operator : deepinv.physics.LinearPhysics, optional
        The operator a model expects; if given, the file's operator must have the same
        ``config()``, otherwise :class:`DatasetFileError` is raised.

    Raises
    ------
    DatasetFileError
        On opening, if the file is missing, not HDF5 (truncated, corrupted), incomplete, lacks a
        field, has a checksum mismatch or another operator; on reading an item, if that sample
        does not match its stored sha256 digest.

    Notes
    -----
    Opening checks the structure and the content checksum over the per-sample digests; each
    item read is checked against its digest, so all that is read is checked. The file is
    reopened in every process, so the dataset works with several DataLoader workers.

    Examples
    --------
    >>> from invstable.data import HDF5PairedDataset  # doctest: +SKIP
    >>> pairs = HDF5PairedDataset("ct30_train.h5")  # doctest: +SKIP
    >>> x, y = pairs[0]  # doctest: +SKIP
    """

    def __init__(self, path, *, operator=None):
        self.path = Path(path)
        f, self.meta = _open_checked(self.path)
        f.close()
        self._file, self._pid = None, None
        if operator is not None:
            self.check_operator(operator)

    @property
    def operator_config(self) -> dict:
        """The stored operator ``{"name", "params"}``."""
        return self.meta["operator"]

    @property
    def noise(self) -> Noise:
        """The stored noise rule."""
        return Noise(**self.meta["noise"])

    @property
    def checksum(self) -> str:
        """The content checksum verified on opening."""
        import h5py

        with h5py.File(self.path, "r") as f:
            value = f.attrs["checksum"]
        return value.decode() if isinstance(value, bytes) else str(value)

    def check_operator(self, operator) -> None:
        """Raise :class:`DatasetFileError` unless ``operator`` has the configuration stored in the file."""
        expected = operator_config(operator)
        stored = self.meta["operator"]
        if expected != stored:
            from ..operators import config_summary

            differ = sorted(k for k in set(expected.get("params", {})) | set(stored.get("params", {}))
                            if expected.get("params", {}).get(k) != stored.get("params", {}).get(k))
            raise DatasetFileError(
                self.path,
                f"made with operator {config_summary(stored)} but the model expects {config_summary(expected)}"
                f"{' (they differ in ' + ', '.join(differ) + ')' if stored.get('name') == expected.get('name') else ''}; "
                f"make the dataset again with that operator",
            )

    def operator(self):
        """Rebuild the stored operator with ``invstable.operators.make_operator``."""
        from ..operators import make_operator

        return make_operator(self.meta["operator"]["name"], **self.meta["operator"]["params"])

    def __len__(self) -> int:
        return self.meta["count"]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None
        return state

    def __del__(self):
        if getattr(self, "_file", None) is not None and self._pid == os.getpid():
            try:
                self._file.close()
            except Exception:
                pass

    def sample(self, index: int):
        """``(x, y, sigma)`` of item ``index``, checked against its digest."""
        import h5py

        index = _check_index(index, len(self), type(self).__name__)
        if self._file is None or self._pid != os.getpid():
            try:
                self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
            except OSError as error:
                raise DatasetFileError(self.path, f"cannot be reopened ({error})") from None
        x, y, sigma = _read_sample(self._file, self.path, index)
        return torch.from_numpy(x), torch.from_numpy(y), torch.tensor(float(sigma))

    def __getitem__(self, index: int):
        x, y, _ = self.sample(index)
        return x, y


def check_dataset(path) -> dict:
    """Verify a dataset file completely: structure, fields, checksum and every sample.

    Returns
    -------
    dict
        The file's metadata plus ``checksum`` and ``invstable_version``.

    Raises
    ------
    DatasetFileError
        Naming the file and the first problem found.
    """
    return _info(Path(path), read_every_pair=True)


def dataset_info(path) -> dict:
    """The metadata of a dataset file after the quick checks (structure, fields, checksum)."""
    return _info(Path(path), read_every_pair=False)


def _info(path: Path, *, read_every_pair: bool) -> dict:
    f, meta = _open_checked(path)
    try:
        if read_every_pair:
            for i in range(meta["count"]):
                _read_sample(f, path, i)
        info = dict(meta)
        for key in ("checksum", "invstable_version"):
            value = f.attrs.get(key, "")
            info[key] = value.decode() if isinstance(value, bytes) else str(value)
    finally:
        f.close()
    info["file_bytes"] = path.stat().st_size
    return info
