"""Random access to the matrices of Kaldi binary arks, fast.

``kaldiio.load_mat("ark:offset")`` opens the file, parses the header a few bytes at
a time and closes it again: about nine reads per matrix, which is most of what a
training step waits for when features are read on demand (bench/bench_train.py,
``train_real_loop_ratio_*``). :class:`ArkReader` keeps one descriptor per ark and
reads a matrix with two ``os.pread`` calls (header, then data), at no shared file
offset, so loader worker processes forked from it can read alongside each other.

Only the layouts pyspk's own stages write are read here: ``FM``/``DM`` (float/double
matrix), ``FV``/``DV`` (vector) and Kaldi's compressed matrices ``CM``/``CM2``/``CM3``
(``--compress-feats true``; decoded by :func:`pyspk.data.compressed.decompress` to Kaldi's
values, to the bit), binary, at a byte offset. Anything else (text, pipes, ``[range]``
slices) goes through ``kaldiio.load_mat``.

Whichever way an object is read, a failure (a missing ark, an offset past its end, a
truncated header or body, bytes that are not a Kaldi object) is an :class:`ArkError`
naming the ark, the byte offset and, when the caller gives it, the key: kaldiio's own
errors (a bare ``AssertionError`` on a truncated ark) name none of them.
:func:`object_extent` tells from a header alone how many bytes an object spans, so a
validator can check that an entry lies inside its ark without reading the data.
"""

from __future__ import annotations

import os
import struct
from typing import Dict, Optional, Tuple

import kaldiio
import numpy as np

from pyspk.data.compressed import decompress

_DTYPES = {b"FM ": np.float32, b"DM ": np.float64, b"FV ": np.float32, b"DV ": np.float64}
HEADER_BYTES = 15  # enough for the longest header below (a matrix's)
EXTENT_BYTES = 22  # enough for every header object_extent knows (``\0BCM2 `` + 16-byte global header)


class ArkError(ValueError):
    """A Kaldi object that cannot be read; the message names the ark, the offset and the key."""


def _where(path: str, offset, key: Optional[str]) -> str:
    return f"{path}: " + (f"key '{key}' " if key is not None else "") + f"at byte {offset}"


def parse_header(head: bytes) -> Optional[Tuple[bytes, np.dtype, Tuple[int, ...], int]]:
    """``(kind, dtype, shape, header length)`` of the binary Kaldi object that ``head`` (its
    first bytes, at least the header's) starts: ``\0B`` then ``FM ``/``DM `` with two
    ``\4``-sized int32 dimensions, or ``FV ``/``DV `` with one. None for anything else."""
    kind = head[2:5]
    if head[:2] != b"\0B" or kind not in _DTYPES or len(head) < 10 or head[5] != 4:
        return None
    if kind.endswith(b"M "):
        if len(head) < 15 or head[10] != 4:
            return None
        shape: Tuple[int, ...] = (struct.unpack("<i", head[6:10])[0], struct.unpack("<i", head[11:15])[0])
        size = 15
    else:
        shape, size = (struct.unpack("<i", head[6:10])[0],), 10
    if min(shape) < 0:  # a corrupt header: no layout has a negative dimension
        return None
    return kind, np.dtype(_DTYPES[kind]), shape, size


def object_extent(head: bytes):
    """``(kind, shape, bytes)`` of the binary Kaldi object that ``head`` (its first
    :data:`EXTENT_BYTES` bytes, or fewer at the end of a file) starts: kind ``'FM'``,
    ``'DM'``, ``'FV'``, ``'DV'``, ``'CM'``, ``'CM2'`` or ``'CM3'``, and the number of
    bytes from the ``\0B`` to the end of its data. A string saying what is wrong when
    ``head`` starts no such object (or is cut short inside its header)."""
    if len(head) < 2:
        return "no Kaldi object here: the file ends" + (" after 1 byte" if head else "")
    if head[:2] != b"\0B":
        return f"not a binary Kaldi object (starts with {head[:8]!r}, not '\\0B')"
    for token in (b"CM ", b"CM2 ", b"CM3 "):
        if head[2 : 2 + len(token)] == token:
            start = 2 + len(token)
            if len(head) < start + 16:
                return f"{token.decode().strip()} header cut short: the file ends inside it"
            rows, cols = struct.unpack("<ii", head[start + 8 : start + 16])
            if rows < 0 or cols < 0:
                return f"corrupt {token.decode().strip()} header: {rows} x {cols}"
            body = {b"CM ": cols * 8 + rows * cols, b"CM2 ": 2 * rows * cols, b"CM3 ": rows * cols}[token]
            return token.decode().strip(), (rows, cols), start + 16 + body
    info = parse_header(head)
    if info is None:
        kind = head[2:5]
        if kind in _DTYPES and len(head) < (15 if kind.endswith(b"M ") else 10):
            return f"{kind.decode().strip()} header cut short: the file ends inside it"
        return f"not a binary Kaldi matrix or vector (header {head[:15]!r})"
    kind, dtype, shape, header_len = info
    n = dtype.itemsize
    for d in shape:
        n *= d
    return kind.decode().strip(), shape, header_len + n


class ArkReader:
    """``reader(spec, key=None)`` -> the array at ``spec`` (``path:offset``, as feats.scp
    writes it); an :class:`ArkError` naming the ark, the offset and ``key`` when it cannot."""

    def __init__(self):
        self._fds: Dict[str, int] = {}

    def __call__(self, spec: str, key: Optional[str] = None) -> np.ndarray:
        path, sep, offset = spec.rpartition(":")
        if not sep or not offset.isdigit() or path.endswith("|"):
            return _kaldiio_load(spec, key)
        fd = self._fds.get(path)
        if fd is None:  # checked once per ark, not per matrix
            if not os.path.isfile(path):
                if os.path.exists(path) or os.path.isfile(spec):
                    return _kaldiio_load(spec, key)
                raise ArkError(f"{_where(path, offset, key)}: the ark does not exist")
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        pos = int(offset)
        head = os.pread(fd, EXTENT_BYTES, pos)
        info = parse_header(head)
        if info is None:
            if head[2:4] == b"CM":
                return self._compressed(fd, head, pos, path, offset, key)
            if len(head) < HEADER_BYTES:
                ext = object_extent(head)  # the file ends within a header's length: say how
                if isinstance(ext, str):
                    raise ArkError(f"{_where(path, offset, key)}: {ext} (the ark has {os.fstat(fd).st_size} bytes)")
            return _kaldiio_load(spec, key)
        _, dtype, shape, header_len = info
        n = dtype.itemsize
        for d in shape:
            n *= d
        data = os.pread(fd, n, pos + header_len)
        if len(data) != n:
            raise ArkError(
                f"{_where(path, offset, key)}: truncated: the {'x'.join(map(str, shape))} "
                f"{dtype.name} object needs {n} bytes after its header, the ark ends "
                f"{len(data)} bytes after it"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape)

    def _compressed(self, fd: int, head: bytes, pos: int, path: str, offset: str, key: Optional[str]) -> np.ndarray:
        """The compressed matrix whose first bytes are ``head``: one more read for its body."""
        ext = object_extent(head)
        if isinstance(ext, str):
            raise ArkError(f"{_where(path, offset, key)}: {ext} (the ark has {os.fstat(fd).st_size} bytes)")
        kind, shape, nbytes = ext
        start = 2 + len(kind) + 1 + 16  # \0B, the token and its space, the global header
        body = os.pread(fd, nbytes - start, pos + start)
        if len(body) != nbytes - start:
            raise ArkError(
                f"{_where(path, offset, key)}: truncated: the {'x'.join(map(str, shape))} {kind} "
                f"object needs {nbytes - start} bytes after its header, the ark ends "
                f"{len(body)} bytes after it"
            )
        return decompress(kind, head[start - 16 : start], body)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _kaldiio_load(spec: str, key: Optional[str]) -> np.ndarray:
    """kaldiio.load_mat, its errors turned into an ArkError naming ``spec`` and ``key``."""
    try:
        return kaldiio.load_mat(spec)
    except Exception as e:
        path, sep, offset = spec.rpartition(":")
        where = (
            _where(path, offset, key)
            if sep and offset.isdigit()
            else (f"{spec}: key '{key}'" if key is not None else spec)
        )
        raise ArkError(f"{where}: cannot read: {type(e).__name__}: {e}".rstrip(": ")) from e
