"""Random access to the matrices of uncompressed Kaldi binary arks, fast.

``kaldiio.load_mat("ark:offset")`` opens the file, parses the header a few bytes at
a time and closes it again: about nine reads per matrix, which is most of what a
training step waits for when features are read on demand (bench/bench_train.py,
``train_real_loop_ratio_*``). :class:`ArkReader` keeps one descriptor per ark and
reads a matrix with two ``os.pread`` calls (header, then data), at no shared file
offset, so loader worker processes forked from it can read alongside each other.

Only the layouts pyspk's own stages write are read here: ``FM``/``DM`` (float/double
matrix) and ``FV``/``DV`` (vector), binary, at a byte offset. Anything else (compressed
``CM``, text, pipes, ``[range]`` slices) goes through ``kaldiio.load_mat`` unchanged.
"""

from __future__ import annotations

import os
import struct
from typing import Dict, Optional, Tuple

import kaldiio
import numpy as np

_DTYPES = {b"FM ": np.float32, b"DM ": np.float64, b"FV ": np.float32, b"DV ": np.float64}
HEADER_BYTES = 15   # enough for the longest header below (a matrix's)


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
        return kind, np.dtype(_DTYPES[kind]), (struct.unpack("<i", head[6:10])[0], struct.unpack("<i", head[11:15])[0]), 15
    return kind, np.dtype(_DTYPES[kind]), (struct.unpack("<i", head[6:10])[0],), 10


class ArkReader:
    """``reader(spec)`` -> the array at ``spec`` (``path:offset``, as feats.scp writes it)."""

    def __init__(self):
        self._fds: Dict[str, int] = {}

    def __call__(self, spec: str) -> np.ndarray:
        path, sep, offset = spec.rpartition(":")
        if not sep or not offset.isdigit() or path.endswith("|"):
            return kaldiio.load_mat(spec)
        fd = self._fds.get(path)
        if fd is None:                    # checked once per ark, not per matrix
            if not os.path.isfile(path):
                return kaldiio.load_mat(spec)
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        pos = int(offset)
        info = parse_header(os.pread(fd, HEADER_BYTES, pos))
        if info is None:
            return kaldiio.load_mat(spec)
        _, dtype, shape, header_len = info
        n = dtype.itemsize
        for d in shape:
            n *= d
        data = os.pread(fd, n, pos + header_len)
        if len(data) != n:
            raise ValueError(f"{path}: matrix at byte {offset} is truncated ({len(data)} of {n} bytes)")
        return np.frombuffer(data, dtype=dtype).reshape(shape)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
