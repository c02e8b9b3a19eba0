"""Kaldi's compressed matrices (``CompressedMatrix``, ``copy-feats --compress=true``), both ways.

A compressed matrix is ``\\0B``, a token (``CM``, ``CM2`` or ``CM3``), a 16-byte global header
(min and range, float32; rows and cols, int32) and a body:

* ``CM`` (``kSpeechFeature``): per column, its 0th, 25th, 75th and 100th percentiles as 16-bit
  codes of the global range, then a byte per value, column after column: codes 0..64 cover
  p0..p25, 64..192 p25..p75, 192..255 p75..p100;
* ``CM2`` / ``CM3``: a 16-bit / 8-bit code of the global range per value, row after row.

:func:`compress` writes what Kaldi's automatic method (``kAutomaticMethod``, the default of
``copy-feats --compress=true``) writes: ``CM`` for more than 8 rows, else ``CM2``, with
Kaldi's arithmetic (``ComputeGlobalHeader``, ``ComputeColHeader``, ``FloatToChar``);
:func:`decompress` computes the values as ``CompressedMatrix::CopyToMat`` does, operation by
operation in the same precision, so that they equal Kaldi's to the bit
(``tests/test_kaldi_readers.py`` reads them through Kaldi's own reader). kaldiio reads and
writes the format too, with its own rounding and more slowly (docs/speed.md).
"""

from __future__ import annotations

import struct

import numpy as np

TOKENS = {"CM": b"CM ", "CM2": b"CM2 ", "CM3": b"CM3 "}
_U16_STEP = np.float32(1.52590218966964e-05)  # 1/65535, as Kaldi writes it (a float literal)
# the three ranges of a CM byte code c (percentiles 0-25, 25-75, 75-100): which codes, c minus
# the percentile's code (0, 64, 192), and the size of one step
_CM_RANGES = (
    (slice(0, 65), np.arange(0, 65, dtype=np.float32), 1 / 64.0),
    (slice(65, 193), np.arange(1, 129, dtype=np.float32), 1 / 128.0),
    (slice(193, 256), np.arange(1, 64, dtype=np.float32), 1 / 63.0),
)
_CM_STEPS = np.array([64, 128, 63], np.float32)  # codes per range
_CM_FIRST = np.array([0, 64, 192], np.float64)  # the first code of each range


def _to_uint16(values: np.ndarray, lo, span) -> np.ndarray:
    """Kaldi's FloatToUint16: ``(int)(clamp((v - min) / range, 0, 1) * 65535 + 0.499)``."""
    f = (values - lo) / span
    np.clip(f, 0, 1, out=f)
    return np.floor((f * np.float32(65535)).astype(np.float64) + 0.499).astype(np.int32)


def _from_uint16(codes: np.ndarray, lo, span) -> np.ndarray:
    """Kaldi's Uint16ToFloat: ``min + (range * 1/65535) * u``, in float32."""
    return lo + (span * _U16_STEP) * codes.astype(np.float32)


def compress(mat: np.ndarray) -> bytes:
    """The bytes of ``mat`` (rows, cols) as a Kaldi compressed matrix, from ``\\0B`` on: ``CM``
    for more than 8 rows, else ``CM2`` (Kaldi's automatic method). Its values must be finite."""
    mat = np.asarray(mat, dtype=np.float32)
    rows, cols = mat.shape
    if rows == 0 or cols == 0:
        return b"\0B" + TOKENS["CM"] + struct.pack("<ffii", 0.0, 0.0, 0, 0)  # Kaldi's empty matrix
    lo, hi = mat.min(), mat.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("cannot compress a matrix with NaN or inf")
    if lo == hi:  # a constant matrix still gets a positive range
        hi = np.float32(np.float64(lo) + (1.0 + abs(np.float64(lo))))
    span = np.float32(hi - lo)
    header = struct.pack("<ffii", lo, span, rows, cols)
    if rows <= 8:
        return b"\0B" + TOKENS["CM2"] + header + _to_uint16(mat, lo, span).astype("<u2").tobytes()
    x = np.ascontiguousarray(mat.T)  # column after column
    q = rows // 4
    u = _to_uint16(np.sort(x, axis=1)[:, [0, q, 3 * q, rows - 1]], lo, span)
    # strictly increasing codes, each leaving room for the ones above it
    u[:, 0] = np.minimum(u[:, 0], 65532)
    u[:, 1] = np.minimum(np.maximum(u[:, 1], u[:, 0] + 1), 65533)
    u[:, 2] = np.minimum(np.maximum(u[:, 2], u[:, 1] + 1), 65534)
    u[:, 3] = np.maximum(u[:, 3], u[:, 2] + 1)
    pct = _from_uint16(u, lo, span)  # (cols, 4) as a reader sees them
    # FloatToChar: the range (v < p25, v < p75, else), then (int)((v - start) / width * steps + 0.5)
    # clamped to the range's codes; the product in float32, the + 0.5 in float64
    part = (x >= pct[:, 1:2]).view(np.uint8) + (x >= pct[:, 2:3]).view(np.uint8)
    index = part + np.arange(0, 3 * cols, 3, dtype=np.uint16)[:, None]
    start = pct[:, :3].ravel().take(index)
    width = (pct[:, 1:] - pct[:, :3]).ravel().take(index)
    steps = _CM_STEPS.take(part)
    code = ((x - start) / width * steps).astype(np.float64)
    code += 0.5
    np.floor(code, out=code)
    np.clip(code, 0, steps, out=code)
    code += _CM_FIRST.take(part)
    return b"\0B" + TOKENS["CM"] + header + u.astype("<u2").tobytes() + code.astype(np.uint8).tobytes()


def decompress(kind: str, header: bytes, body: bytes) -> np.ndarray:
    """The float32 matrix of a compressed matrix: ``kind`` ``'CM'``, ``'CM2'`` or ``'CM3'``,
    ``header`` its 16-byte global header, ``body`` the bytes after it. As Kaldi computes them:

    * a 16-bit code ``u`` of the global range is ``min + (range * (1/65535)f) * u``;
    * ``CM``: a byte ``c`` of a column with percentiles p0 < p25 < p75 < p100 is
      ``p0 + (p25 - p0) c / 64`` for c <= 64, ``p25 + (p75 - p25)(c - 64) / 128`` for c <= 192,
      ``p75 + (p100 - p75)(c - 192) / 63`` above (the product in float32, the scaling and the
      sum in float64, as Kaldi's ``CharToFloat``);
    * ``CM2`` / ``CM3``: ``min + u * (range / 65535)`` / ``min + u * (range / 255)``.
    """
    lo, span = np.frombuffer(header, "<f4", 2, 0)
    rows, cols = (int(x) for x in np.frombuffer(header, "<i4", 2, 8))
    if kind != "CM":
        levels = 65535.0 if kind == "CM2" else 255.0
        codes = np.frombuffer(body, "<u2" if kind == "CM2" else "u1", rows * cols).reshape(rows, cols)
        step = np.float32(np.float64(span) * (1.0 / levels))
        return lo + codes.astype(np.float32) * step
    pct = _from_uint16(np.frombuffer(body, "<u2", 4 * cols).reshape(cols, 4), lo, span)  # p0 p25 p75 p100
    # the 256 values of each column's byte codes as a table, then one gather
    table = np.empty((cols, 256), np.float32)
    width = pct[:, 1:] - pct[:, :-1]
    for i, (part, steps, scale) in enumerate(_CM_RANGES):
        value = (width[:, i : i + 1] * steps).astype(np.float64)
        value *= scale
        value += pct[:, i : i + 1]
        table[:, part] = value
    codes = np.frombuffer(body, "u1", rows * cols, 8 * cols).reshape(cols, rows)
    # each column's first entry in the flat table; in 16 bits where they fit, a cheaper sum
    first = np.arange(0, 256 * cols, 256, dtype=np.uint16 if cols <= 256 else np.intp)
    return table.ravel().take(np.add(codes.T, first, order="C"))  # (rows, cols)
