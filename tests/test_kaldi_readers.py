"""The recipe's Kaldi files read back by Kaldi's own C++ readers (pydrobert-kaldi compiles
Kaldi's table I/O), and plda.kaldi by a reader written from Kaldi's Plda::Read layout.

The files are the real outputs of `pyspk fbank`, `pyspk extract` and `pyspk backend` on the
tiny SynthCeleb (bench/tiny_systems.py, shared with test_export.py).
"""

from __future__ import annotations

import struct

import kaldiio
import numpy as np
import pytest
from conftest import need

from pyspk.backend.kaldi_plda import KaldiFormatError, read_kaldi_plda
from pyspk.data.xvectors import read_num_utts

pytestmark = pytest.mark.slow


def kaldi_table(rspecifier: str, dtype: str) -> list:
    """(key, value) pairs in file order through Kaldi's SequentialTableReader."""
    kio = need("pydrobert.kaldi.io")
    with kio.open(rspecifier, dtype) as reader:
        return [(k, v) for k, v in reader.items()]


def assert_same_table(kaldi_pairs, kaldiio_table):
    assert [k for k, _ in kaldi_pairs] == list(kaldiio_table)
    for key, value in kaldi_pairs:
        ref = kaldiio_table[key]
        assert value.shape == ref.shape and value.dtype == ref.dtype, key
        assert np.array_equal(value, ref), key  # exactly, not approximately


def test_features_and_vad_read_by_kaldi(tiny_systems):
    for s in ("synth_train", "synth_test"):
        d = tiny_systems / "data" / s
        assert_same_table(kaldi_table(f"scp:{d / 'feats.scp'}", "bm"), dict(kaldiio.load_scp(str(d / "feats.scp"))))
        assert_same_table(kaldi_table(f"scp:{d / 'vad.scp'}", "bv"), dict(kaldiio.load_scp(str(d / "vad.scp"))))


def test_compressed_features_read_by_kaldi(tmp_path):
    """--compress-feats true: Kaldi's table reader decodes the CM (and, for <= 8 frames, CM2)
    matrices of an fbank job to exactly the values pyspk's reader gives; VAD stays float."""
    import soundfile as sf
    from test_fbank import make_set, speechlike

    from pyspk.data.arkread import ArkReader
    from pyspk.features.ark import job_files
    from pyspk.features.fbank import FbankConfig
    from pyspk.stages.fbank import run_job, write_splits

    data = make_set(tmp_path, n_spk=2, n_utt=2)
    sf.write(tmp_path / "wav" / "short.flac", speechlike(800, 9), 16000)  # 5 frames: CM2
    with open(data / "wav.scp", "a") as f:
        f.write(f"spk1-u9 {tmp_path / 'wav' / 'short.flac'}\n")
    with open(data / "utt2spk", "a") as f:
        f.write("spk1-u9 spk1\n")
    fb = tmp_path / "fb"
    write_splits(data, fb.resolve(), 1)
    run_job(data, fb, 1, FbankConfig(vad=True, compress=True))
    p = job_files(fb, 1)
    assert p["ark"].read_bytes().count(b"\0BCM ") == 4 and p["ark"].read_bytes().count(b"\0BCM2 ") == 1
    ours = ArkReader()
    specs = dict(ln.split() for ln in p["scp"].read_text().splitlines())
    kaldi = kaldi_table(f"scp:{p['scp']}", "bm")
    assert [k for k, _ in kaldi] == list(specs)
    for key, value in kaldi:
        assert value.dtype == np.float32
        assert np.array_equal(value, ours(specs[key], key)), key  # Kaldi's decoding, to the bit
    assert_same_table(kaldi_table(f"scp:{p['vad_scp']}", "bv"), dict(kaldiio.load_scp(str(p["vad_scp"]))))


def test_xvectors_and_counts_read_by_kaldi(tiny_systems):
    xv = tiny_systems / "exp" / "tdnn" / "xvectors_synth_test"
    for name in ("xvector.scp", "spk_xvector.scp"):
        pairs = kaldi_table(f"scp:{xv / name}", "bv")
        assert len(pairs) == (24 if name == "xvector.scp" else 4)
        assert_same_table(pairs, dict(kaldiio.load_scp(str(xv / name))))
    counts = kaldi_table(f"ark,t:{xv / 'num_utts.ark'}", "i")
    assert dict(counts) == read_num_utts(xv / "num_utts.ark") and len(counts) == 4
    assert all(isinstance(v, int) and v == 6 for _, v in counts)  # 4 speakers x 6 test utterances


def test_plda_kaldi_layout_and_invariants(tiny_systems):
    backend = tiny_systems / "exp" / "tdnn" / "backend"
    plda = read_kaldi_plda(backend / "plda.kaldi")
    with np.load(backend / "plda.npz") as z:
        ref = {k: z[k] for k in z.files}
    for key in ("mean", "transform", "psi"):
        assert np.array_equal(plda[key], ref[key]), key  # doubles written and read exactly
    # Kaldi's Plda: T simultaneously diagonalises the covariances, T Sw T' = I, T Sb T' = diag(psi)
    t = plda["transform"]
    dim = t.shape[0]
    np.testing.assert_allclose(t @ ref["sigma_w"] @ t.T, np.eye(dim), rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        t @ ref["sigma_b"] @ t.T, np.diag(plda["psi"]), rtol=0, atol=1e-10 * max(1.0, plda["psi"].max())
    )
    assert (plda["psi"] >= 0).all()  # between-class variances in the normalised space
    # and Kaldi's own basic-type readers parse the same object token by token
    kio = need("pydrobert.kaldi.io")
    with kio.open(str(backend / "plda.kaldi"), mode="r") as f:
        assert f.binary and f.read("t") == "<Plda>"
        mean, transform, psi = f.read("dv"), f.read("dm"), f.read("dv")
        assert f.read("t") == "</Plda>"
    assert np.array_equal(mean, plda["mean"]) and np.array_equal(transform, t) and np.array_equal(psi, plda["psi"])


def test_plda_reader_errors_name_file_and_offset(tmp_path):
    def vec(v, tok=b"DV "):
        return tok + struct.pack("<bi", 4, len(v)) + np.asarray(v, "<f8" if tok == b"DV " else "<f4").tobytes()

    good = (
        b"\0B<Plda> "
        + vec([1.0, 2.0])
        + b"DM "
        + struct.pack("<bibi", 4, 2, 4, 2)
        + np.eye(2).astype("<f8").tobytes()
        + vec([3.0, 0.5], b"FV ")
        + b"</Plda> "
    )
    p = tmp_path / "plda.kaldi"
    p.write_bytes(good)
    got = read_kaldi_plda(p)
    assert np.array_equal(got["psi"], [3.0, 0.5]) and got["mean"].dtype == np.float64  # FV read into float64
    for bad, msg in (
        (b"<Plda> [ 1 2 ]", "not a binary Kaldi object"),
        (good[:-12], "file ends"),
        (good.replace(b"<Plda>", b"<Pldb>"), "expected token '<Plda>'"),
        (good + b"x", "1 bytes after"),
        (good.replace(b"DM ", b"DV "), "expected DM/FM"),
    ):
        p.write_bytes(bad)
        with pytest.raises(KaldiFormatError, match=msg) as e:
            read_kaldi_plda(p)
        assert str(p) in str(e.value) and "byte " in str(e.value)
