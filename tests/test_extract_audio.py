"""pyspk extract --fbank-config: x-vectors from audio (features made in memory, the online
recipe's training set) equal those extracted from the fbank stage's arks, with VAD, with
``segments``, and split over jobs: the same features to the bit, the embeddings up to the float
rounding of batched products (which utterances share a batch depends on the split and on the
length order, which an audio job learns only as it decodes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_online import make_dir

from pyspk.data.xvectors import read_vectors
from pyspk.models import build_encoder, save_encoder
from pyspk.stages.extract import extract
from pyspk.stages.fbank import make_fbank

REPO = Path(__file__).resolve().parents[1]
RUN_PL = str(REPO / "utils" / "run.pl")
FBANK = str(REPO / "conf" / "fbank.yaml")
KW = {"feat_dim": 80, "channels": 8, "stats_channels": 16, "embed_dim": 6}


def model(path: Path) -> Path:
    torch.manual_seed(0)
    enc = build_encoder("tdnn", **KW)
    save_encoder(path, enc, "tdnn", KW, {"features": {"cmn": True, "cmn_window": None, "vad": True}})
    return path


def with_segments(d: Path) -> None:
    """Cut each recording of ``d`` into two segments (the utterances become segment ids)."""
    wav = [ln.split() for ln in (d / "wav.scp").read_text().splitlines()]
    seg, u2s = [], []
    for rec, _ in wav:
        spk = rec.split("-")[0]
        seg += [f"{rec}-a {rec} 0.0 1.2\n", f"{rec}-b {rec} 1.1 -1\n"]
        u2s += [f"{rec}-a {spk}\n", f"{rec}-b {spk}\n"]
    (d / "segments").write_text("".join(seg))
    (d / "utt2spk").write_text("".join(u2s))


def test_audio_features_are_the_fbank_stages_to_the_bit(tmp_path):
    import kaldiio

    from pyspk.features.fbank import load_config
    from pyspk.stages.extract import audio_features

    d = make_dir(tmp_path, speakers=2, per_spk=2)
    make_fbank(d, tmp_path / "fbank", FBANK, 1, RUN_PL)
    feats = dict(kaldiio.load_scp(str(d / "feats.scp")))
    vads = dict(kaldiio.load_scp(str(d / "vad.scp")))
    seen = 0
    for utt, x, vad in audio_features(d, d / "wav.scp", load_config(FBANK)):
        np.testing.assert_array_equal(x, feats[utt])
        np.testing.assert_array_equal(vad.astype(np.float32), vads[utt].astype(np.float32))
        seen += 1
    assert seen == 4


@pytest.mark.slow
@pytest.mark.parametrize("segments", [False, True])
def test_extraction_from_audio_equals_extraction_from_the_fbank_arks(tmp_path, segments):
    d = make_dir(tmp_path, speakers=3, per_spk=2)
    if segments:
        with_segments(d)
    spk2utt = {}
    for ln in (d / "utt2spk").read_text().splitlines():
        u, s = ln.split()
        spk2utt.setdefault(s, []).append(u)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
    audio_only = tmp_path / "audio_only"
    shutil.copytree(d, audio_only)  # no feats.scp ever written here
    make_fbank(d, tmp_path / "fbank", FBANK, 2, RUN_PL)
    m = model(tmp_path / "final.pt")
    extract(m, d, tmp_path / "xv_feats", nj=2, cmd=RUN_PL)
    extract(m, audio_only, tmp_path / "xv_audio", nj=3, cmd=RUN_PL, fbank_config=FBANK)
    assert not (audio_only / "feats.scp").exists()
    a = read_vectors(tmp_path / "xv_feats" / "xvector.scp")
    b = read_vectors(tmp_path / "xv_audio" / "xvector.scp")
    assert a.keys() == b.keys() and len(a) == (12 if segments else 6)
    for u in a:
        np.testing.assert_allclose(a[u], b[u], rtol=1e-5, atol=1e-7)
    again = extract(m, audio_only, tmp_path / "xv_audio", nj=3, cmd=RUN_PL, fbank_config=FBANK)
    assert again["jobs_run"] == []  # finished jobs are reused


def test_extraction_from_audio_names_a_missing_wav_scp(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "utt2spk").write_text("u s\n")
    with pytest.raises(FileNotFoundError, match="wav.scp not found"):
        extract(model(tmp_path / "m.pt"), d, tmp_path / "xv", fbank_config=FBANK)
