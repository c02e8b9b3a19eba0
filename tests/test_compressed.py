"""Kaldi's compressed matrices (pyspk.data.compressed, --compress-feats true): what pyspk writes
is what kaldiio writes up to Kaldi's own rounding, it decodes within half a quantisation step,
and the ark writer's arks and scps are kaldiio's. Kaldi's own reader decodes them to pyspk's
values to the bit: tests/test_kaldi_readers.py."""

from __future__ import annotations

import io
import struct

import kaldiio
import numpy as np
import pytest

from pyspk.data.arkread import ArkReader
from pyspk.data.compressed import compress, decompress
from pyspk.features.ark import CompressedArkWriter


def _parts(blob: bytes):
    """(kind, global header, body) of a compressed matrix's bytes from \\0B on."""
    kind = blob[2 : blob.index(b" ", 2)].decode()
    start = 2 + len(kind) + 1
    return kind, blob[start : start + 16], blob[start + 16 :]


def _matrices(rng, n):
    for _ in range(n):
        rows = int(rng.integers(1, 700))
        yield (rng.standard_normal((rows, 80)) * rng.uniform(0.1, 5) + rng.uniform(-20, 20)).astype(np.float32)


def test_compress_writes_what_kaldiio_writes_up_to_kaldis_rounding():
    """Same layout, sizes and headers as kaldiio's writer (compression method 1, Kaldi's
    automatic one); a byte code differs only where kaldiio's float32 ``+ 0.499``/``+ 0.5``
    rounds a value sitting on a code boundary the other way than Kaldi's float64 sum."""
    rng = np.random.default_rng(0)
    differ = total = 0
    for m in _matrices(rng, 60):
        f = io.BytesIO()
        kaldiio.save_mat(f, m, compression_method=1)
        theirs, ours = f.getvalue(), compress(m)
        kind, head, _ = _parts(ours)
        assert len(ours) == len(theirs) and _parts(theirs)[:2] == (kind, head)
        assert kind == ("CM" if m.shape[0] > 8 else "CM2")
        a, b = np.frombuffer(ours, np.uint8), np.frombuffer(theirs, np.uint8)
        differ, total = differ + int((a != b).sum()), total + a.size
    assert differ <= 1e-4 * total


@pytest.mark.parametrize("rows", [1, 8, 9, 57, 600])
def test_decompress_of_compress_is_within_half_a_step(rows):
    rng = np.random.default_rng(rows)
    m = (rng.standard_normal((rows, 40)) * 3 + 10).astype(np.float32)
    m[:, 3] = 7.0  # a constant column
    kind, head, body = _parts(compress(m))
    got = decompress(kind, head, body)
    assert got.shape == m.shape and got.dtype == np.float32
    if kind == "CM2":  # 16 bits of the global range
        assert np.abs(got - m).max() <= (m.max() - m.min()) / 65535 + 1e-5
    else:  # a byte between the column's percentiles
        assert (np.abs(got - m) <= (m.max(0) - m.min(0)) / 126 + 2 * (m.max() - m.min()) / 65535 + 1e-5).all()
    from kaldiio.matio import read_matrix_or_vector

    np.testing.assert_allclose(read_matrix_or_vector(io.BytesIO(compress(m))), got, atol=1e-5)  # kaldiio reads it


def test_compress_edge_cases():
    kind, head, body = _parts(compress(np.zeros((0, 0), np.float32)))
    assert kind == "CM" and struct.unpack("<ffii", head) == (0.0, 0.0, 0, 0) and body == b""
    const = np.full((20, 3), -2.5, np.float32)
    np.testing.assert_allclose(decompress(*_parts(compress(const))), const, atol=1e-4)
    bad = np.ones((20, 3), np.float32)
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        compress(bad)


def test_compressed_ark_writer_writes_kaldiios_ark_and_scp(tmp_path):
    rng = np.random.default_rng(1)
    mats = {f"utt{i}": m for i, m in enumerate(_matrices(rng, 5))}
    with CompressedArkWriter(tmp_path / "a.ark", tmp_path / "a.scp") as w:
        for k, m in mats.items():
            w(k, m)
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'b.ark'},{tmp_path / 'b.scp'}", compression_method=1) as w:
        for k, m in mats.items():
            w(k, m)
    assert (tmp_path / "a.scp").read_text() == (tmp_path / "b.scp").read_text().replace("b.ark", "a.ark")
    assert (tmp_path / "a.ark").stat().st_size == (tmp_path / "b.ark").stat().st_size
    reader, theirs = ArkReader(), kaldiio.load_scp(str(tmp_path / "a.scp"))
    for line in (tmp_path / "a.scp").read_text().splitlines():
        key, spec = line.split()
        np.testing.assert_allclose(reader(spec, key), theirs[key], atol=1e-5)
