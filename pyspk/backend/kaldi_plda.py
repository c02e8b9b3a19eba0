"""Read a Kaldi ``Plda`` object (ivector-compute-plda's output, and pyspk's plda.kaldi).

Written from the layout of Kaldi's ``Plda::Read`` (ivector/plda.cc) and the binary
forms of kaldi-io / kaldi-vector / kaldi-matrix:

    "\\0B"                        binary-mode header
    "<Plda> "                    token, then one space
    mean       vector            "DV " (double) or "FV " (float), size, values
    transform  matrix            "DM " or "FM ", rows, cols, values row-major
    psi        vector
    "</Plda> "

where each size is Kaldi's ``WriteBasicType<int32>``: one byte holding sizeof(int32)
(4, positive for a signed type) followed by the little-endian int32.  A float object
is read into float64, as Kaldi converts on read.  Text-mode files are not read (they
would need Kaldi's text tokeniser); every error names the file and the byte offset.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


class KaldiFormatError(ValueError):
    """A file that does not follow the Kaldi binary layout; the message names file and offset."""


class _Reader:
    def __init__(self, path: Path):
        self.path, self.buf, self.pos = path, path.read_bytes(), 0

    def fail(self, what: str):
        raise KaldiFormatError(f"{self.path}: byte {self.pos}: {what}")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            self.fail(f"file ends after {len(self.buf)} bytes, {n} more needed")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def token(self) -> str:
        end = self.buf.find(b" ", self.pos)
        if end < 0:
            self.fail("expected a token ended by a space")
        tok = self.buf[self.pos : end].decode("latin-1")
        self.pos = end + 1
        return tok

    def expect(self, token: str) -> None:
        start = self.pos
        got = self.token()
        if got != token:
            self.pos = start
            self.fail(f"expected token {token!r}, got {got!r}")

    def int32(self) -> int:
        size = struct.unpack("<b", self.take(1))[0]
        if size != 4:
            self.fail(f"expected an int32 (size byte 4), got size byte {size}")
        return struct.unpack("<i", self.take(4))[0]

    def array(self, kind: str) -> np.ndarray:
        start = self.pos
        tok = self.token()
        if len(tok) != 2 or tok[0] not in "FD" or tok[1] != kind:
            self.pos = start
            self.fail(f"expected {'DV/FV' if kind == 'V' else 'DM/FM'}, got token {tok!r}")
        shape = (self.int32(),) if kind == "V" else (self.int32(), self.int32())
        if min(shape) < 0:
            self.fail(f"negative size {shape}")
        dtype = np.dtype("<f8" if tok[0] == "D" else "<f4")
        n = int(np.prod(shape))
        data = np.frombuffer(self.take(n * dtype.itemsize), dtype=dtype).reshape(shape)
        return data.astype(np.float64)


def read_kaldi_plda(path) -> dict:
    """``{"mean": (D,), "transform": (D, D), "psi": (D,)}`` of a binary Kaldi Plda file."""
    r = _Reader(Path(path))
    if r.take(2) != b"\0B":
        r.pos = 0
        r.fail("not a binary Kaldi object (no '\\0B' header); text-mode Plda files are not read")
    r.expect("<Plda>")
    mean = r.array("V")
    transform = r.array("M")
    psi = r.array("V")
    r.expect("</Plda>")
    if r.pos != len(r.buf):
        r.fail(f"{len(r.buf) - r.pos} bytes after </Plda>")
    d = mean.shape[0]
    if transform.shape != (d, d) or psi.shape != (d,):
        r.fail(f"inconsistent sizes: mean {mean.shape}, transform {transform.shape}, psi {psi.shape}")
    return {"mean": mean, "transform": transform, "psi": psi}
