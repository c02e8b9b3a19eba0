"""Atomic file writing: every writer in pyspk goes through here.

A file is written under a temporary name in the same directory and renamed over
the final name only once it is complete, so a killed process never leaves a
half-written file that a rerun could mistake for a finished one.

A write that fails for want of space is reported as one line,
``cannot write PATH: no space left on device (N MB free, about M MB needed)``
(:class:`DiskFullError`), whatever the writer: Python's own ``OSError(ENOSPC)`` or
the ``basic_ios::clear: iostream error`` that ``torch.save`` raises, which says
nothing about space. :func:`write_error` makes that line; :func:`payload_nbytes`
estimates what a ``torch.save`` of a state needs, which a writer hands to
:func:`atomic_path` so the line says it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Union

PathLike = Union[str, os.PathLike]


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()

MB = 2**20
# what torch's C++ writers (torch.save, PyTorchStreamWriter) say when a write fails: nothing on why
_TORCH_WRITE_FAILURES = ("iostream error", "file write failed", "PytorchStreamWriter failed", "unexpected pos")


class WriteError(OSError):
    """A file could not be written; the message is one line naming the file."""

    def __init__(self, message: str, code: int = errno.EIO):
        super().__init__(message)
        self.errno = code


class DiskFullError(WriteError):
    """A file could not be written for want of space on its device."""


def payload_nbytes(obj: Any) -> int:
    """Bytes of the tensors and arrays in ``obj`` (nested dicts, lists, tuples): about what
    ``torch.save(obj)`` writes, which is those bytes plus a small header per tensor."""
    if isinstance(obj, dict):
        return sum(payload_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_nbytes(v) for v in obj)
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):  # torch.Tensor, without importing torch
        return int(obj.numel()) * int(obj.element_size())
    nbytes = getattr(obj, "nbytes", None)  # numpy arrays
    return int(nbytes) if isinstance(nbytes, int) else 0


def _is_write_failure(exc: BaseException) -> bool:
    if isinstance(exc, WriteError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # errors only a write gives
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILURES)


def _mb(nbytes: int) -> str:
    return f"{nbytes / MB:.1f} MB" if nbytes < 10 * MB else f"{nbytes / MB:,.0f} MB"


def write_error(
    path: PathLike, exc: BaseException, needed: Optional[int] = None, written: int = 0
) -> Optional[WriteError]:
    """The one-line :class:`WriteError` for ``exc`` raised while writing ``path``, or None when
    ``exc`` is not a failed write (a bug the caller should let through as it is).

    It is a :class:`DiskFullError` when the OS said so (ENOSPC, EDQUOT), or when the device
    holding ``path`` has less room than the write still needed: ``needed`` bytes in all (an
    estimate, :func:`payload_nbytes`), of which ``written`` were already on disk when it
    failed (a partial file not yet removed). With ``needed`` unknown, ``written`` is a lower
    bound on it. An ``exc`` that is already a :class:`WriteError` is returned as it is.
    """
    if not _is_write_failure(exc):
        return None
    if isinstance(exc, WriteError):
        return exc
    path = Path(path)
    try:
        free = shutil.disk_usage(path.parent if path.parent.is_dir() else Path.cwd()).free
    except OSError:
        free = None
    nospace = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if free is not None and not nospace:
        nospace = free < max((needed or 0) - written, 0) + MB
    if needed:
        want = f", about {_mb(needed)} needed"
    elif written:
        want = f", at least {_mb(written)} needed"
    else:
        want = ""
    have = f"{_mb(free)} free" if free is not None else "free space unknown"
    if nospace:
        return DiskFullError(f"cannot write {path}: no space left on device ({have}{want})", errno.ENOSPC)
    lines = str(exc).strip().splitlines()
    why = getattr(exc, "strerror", None) or (lines[-1] if lines else type(exc).__name__)
    return WriteError(f"cannot write {path}: {why} ({have}{want})", getattr(exc, "errno", None) or errno.EIO)


@contextlib.contextmanager
def atomic_path(path: PathLike, needed: Optional[int] = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    The temporary name keeps the final suffix (``x.tmp1234.ark``) so tools that
    look at the extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as e:
        err = write_error(path, e)
        if err is None:
            raise
        raise err from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files; give the final file the mode open() would have.
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException as e:
        # measured before the partial file goes: its blocks would make the device look roomy
        err = write_error(path, e, needed, _size(tmp_path)) if isinstance(e, (OSError, RuntimeError)) else None
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if err is not None and err is not e:
            raise err from e
        raise


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a file for writing atomically (text by default; ``mode='wb'`` for bytes)."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def touch_done(path: PathLike, content: str = "") -> None:
    """Write a completion stamp (last thing a stage or job does)."""
    atomic_write_text(path, content)


def file_digest(path: PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (read in blocks by hashlib.file_digest)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()
