"""Extraction round trip with a tiny real encoder: ark/scp, speaker means, resume, errors."""

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from pyspk.data.xvectors import read_num_utts, read_vectors
from pyspk.embed.extractor import ChunkConfig, Embedder, chunk_starts
from pyspk.features.reader import load_features
from pyspk.models import build_encoder, save_encoder
from pyspk.stages.extract import ExtractError, extract, job_files

REPO = Path(__file__).resolve().parents[1]
RUN_PL = str(REPO / "utils" / "run.pl")
FEAT_DIM = 10
KW = {"feat_dim": FEAT_DIM, "channels": 8, "stats_channels": 16, "embed_dim": 6}


def tiny_model(path, cmn_window=None):
    torch.manual_seed(0)
    model = build_encoder("tdnn", **KW)
    extra = {"features": {"cmn": True, "cmn_window": cmn_window, "vad": False}}
    save_encoder(path, model, "tdnn", KW, extra)
    return path


def tiny_data(d, n_spk=3, n_utt=3, seed=0, nan_utt=None):
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    feats, utt2spk = {}, {}
    for s in range(n_spk):
        for u in range(n_utt):
            utt = f"s{s}-u{u}"
            feats[utt] = rng.normal(size=(int(rng.integers(40, 90)), FEAT_DIM)).astype(np.float32)
            utt2spk[utt] = f"s{s}"
    if nan_utt:
        feats[nan_utt][3, 2] = np.nan
    kaldiio.save_ark(str(d / "feats.ark"), dict(sorted(feats.items())), scp=str(d / "feats.scp"))
    (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in sorted(utt2spk.items())))
    return feats, utt2spk


@pytest.mark.slow
def test_round_trip_means_and_resume(tmp_path):
    model_path = tiny_model(tmp_path / "final.pt")
    feats, utt2spk = tiny_data(tmp_path / "data")
    out = tmp_path / "xv"
    res = extract(model_path, tmp_path / "data", out, nj=2, cmd=RUN_PL, device="cpu")
    assert res["jobs_run"] == [1, 2] and res["num_utts"] == 9
    xv = read_vectors(out / "xvector.scp")
    assert sorted(xv) == sorted(feats) and all(v.shape == (6,) for v in xv.values())
    # equal to a direct forward pass of the encoder on the CMN'd features
    model = build_encoder("tdnn", **KW)
    model.load_state_dict(torch.load(model_path)["state_dict"])
    model.eval()
    x = torch.from_numpy(load_features(feats["s1-u2"], cmn=True))[None]
    with torch.no_grad():
        np.testing.assert_allclose(xv["s1-u2"], model(x)[0].numpy(), rtol=1e-4, atol=1e-5)
    spk = dict(kaldiio.load_scp(str(out / "spk_xvector.scp")))
    for s in ("s0", "s1", "s2"):
        want = np.mean([xv[u] for u in xv if utt2spk[u] == s], axis=0)
        np.testing.assert_allclose(spk[s], want, rtol=1e-5, atol=1e-6)
    assert read_num_utts(out / "num_utts.ark") == {"s0": 3, "s1": 3, "s2": 3}
    for j in (1, 2):
        assert job_files(out, j)["done"].is_file()
    # resume: nothing to redo; a removed stamp redoes only that job
    stamp_time = job_files(out, 1)["done"].stat().st_mtime_ns
    assert extract(model_path, tmp_path / "data", out, nj=2, cmd=RUN_PL, device="cpu")["jobs_run"] == []
    job_files(out, 2)["done"].unlink()
    assert extract(model_path, tmp_path / "data", out, nj=2, cmd=RUN_PL, device="cpu")["jobs_run"] == [2]
    assert job_files(out, 1)["done"].stat().st_mtime_ns == stamp_time
    # a new model invalidates every job
    tiny_model(model_path, cmn_window=20)
    assert extract(model_path, tmp_path / "data", out, nj=2, cmd=RUN_PL, device="cpu")["jobs_run"] == [1, 2]


def test_failed_job_names_log_and_utterance(tmp_path):
    model_path = tiny_model(tmp_path / "final.pt")
    tiny_data(tmp_path / "data", nan_utt="s2-u1")
    out = tmp_path / "xv"
    with pytest.raises(ExtractError, match=r"extract\.2\.log"):
        extract(model_path, tmp_path / "data", out, nj=2, cmd=RUN_PL, device="cpu")
    assert "s2-u1" in (out / "log" / "extract.2.log").read_text()
    assert job_files(out, 1)["done"].is_file() and not job_files(out, 2)["done"].is_file()
    assert not (out / "xvector.scp").exists()


def test_chunk_starts():
    c = ChunkConfig(max_frames=100, chunk_frames=40, chunk_hop=30)
    assert chunk_starts(100, c) == ([0], 100)  # not longer than max_frames: whole
    assert chunk_starts(130, c) == ([0, 30, 60, 90], 40)
    assert chunk_starts(125, c) == ([0, 30, 60, 85], 40)  # last window ends at the end
    assert chunk_starts(10_000, ChunkConfig(max_frames=0)) == ([0], 10_000)


def test_chunked_embedding_is_window_mean(tmp_path):
    model, ckpt = None, None
    from pyspk.models import load_encoder

    model, ckpt = load_encoder(tiny_model(tmp_path / "m.pt"))
    feats = np.random.default_rng(3).normal(size=(130, FEAT_DIM)).astype(np.float32)
    emb = Embedder(model, ckpt["extra"]["features"], ChunkConfig(100, 40, 30), "cpu")
    got = emb.embed(feats)
    x = load_features(feats, cmn=True)
    with torch.no_grad():
        want = np.mean([model(torch.from_numpy(x[s : s + 40])[None])[0].numpy() for s in (0, 30, 60, 90)], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_nan_embedding_names_utterance():
    class NaNModel(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), float("nan"))

    emb = Embedder(NaNModel(), {"cmn": False}, device="cpu")
    with pytest.raises(ValueError, match="utterance 'bad-utt': embedding contains NaN"):
        emb.embed(np.zeros((20, 4), np.float32), utt="bad-utt")


def test_embed_and_verify_cli(tmp_path, capsys):
    import json

    import soundfile as sf

    from pyspk.bin import embed as embed_bin
    from pyspk.bin import verify as verify_bin

    torch.manual_seed(0)
    kw = {"channels": 8, "stats_channels": 16, "embed_dim": 5}
    save_encoder(
        tmp_path / "m.pt",
        build_encoder("tdnn", **kw),
        "tdnn",
        kw,
        {"features": {"cmn": True, "cmn_window": None, "vad": False}},
    )
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.wav", (0.1 * rng.normal(size=24000)).astype(np.float32), 16000)
    a, b = str(tmp_path / "a.wav"), str(tmp_path / "b.wav")
    assert embed_bin.main(["--model", str(tmp_path / "m.pt"), "--device", "cpu", a, b]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith(a) and len(out[0].split("[")[1].split()) == 5 + 1
    assert (
        verify_bin.main(["--model", str(tmp_path / "m.pt"), "--device", "cpu", "--json", "--threshold", "0.99", a, a])
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["score"] == pytest.approx(1.0, abs=1e-5) and res["decision"] == "same"
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "thresholds.json").write_text(json.dumps({"trials": "trials", "cosine": 1.5}))
    assert (
        verify_bin.main(
            [
                "--model",
                str(tmp_path / "m.pt"),
                "--device",
                "cpu",
                "--json",
                "--scores-dir",
                str(tmp_path / "scores"),
                a,
                b,
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["threshold"] == 1.5 and res["decision"] == "different"
    assert verify_bin.main(["--model", str(tmp_path / "m.pt"), a, str(tmp_path / "missing.wav")]) == 1


def test_verify_with_backend_dir_plda(tmp_path, capsys):
    import json

    import soundfile as sf

    from pyspk.backend.config import BackendConfig
    from pyspk.backend.model import Backend
    from pyspk.bin import verify as verify_bin

    torch.manual_seed(0)
    kw = {"channels": 8, "stats_channels": 16, "embed_dim": 5}
    save_encoder(
        tmp_path / "m.pt",
        build_encoder("tdnn", **kw),
        "tdnn",
        kw,
        {"features": {"cmn": True, "cmn_window": None, "vad": False}},
    )
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 5))
    Backend.fit(X, [f"s{i % 6}" for i in range(60)], BackendConfig(lda_dim=0, asnorm_top_n=3)).save(
        tmp_path / "backend"
    )
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "thresholds.json").write_text(json.dumps({"trials": "trials", "cosine": 0.3, "plda": -1e9}))
    sf.write(tmp_path / "a.wav", (0.1 * rng.normal(size=24000)).astype(np.float32), 16000)
    a = str(tmp_path / "a.wav")
    assert (
        verify_bin.main(
            [
                "--model",
                str(tmp_path / "m.pt"),
                "--device",
                "cpu",
                "--json",
                "--backend",
                "plda",
                "--backend-dir",
                str(tmp_path / "backend"),
                a,
                a,
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["threshold"] == -1e9 and res["decision"] == "same" and np.isfinite(res["score"])


def test_vad_frames_are_selected(tmp_path):
    model_path = tmp_path / "m.pt"
    torch.manual_seed(0)
    model = build_encoder("tdnn", **KW)
    save_encoder(model_path, model, "tdnn", KW, {"features": {"cmn": True, "cmn_window": None, "vad": True}})
    feats, _ = tiny_data(tmp_path / "data", n_spk=2, n_utt=1)
    vad = {u: (np.arange(len(f)) % 3 != 0).astype(np.float32) for u, f in feats.items()}
    kaldiio.save_ark(str(tmp_path / "data" / "vad.ark"), vad, scp=str(tmp_path / "data" / "vad.scp"))
    extract(model_path, tmp_path / "data", tmp_path / "xv", nj=1, cmd=RUN_PL, device="cpu")
    xv = read_vectors(tmp_path / "xv" / "xvector.scp")
    model.eval()
    x = torch.from_numpy(load_features(feats["s1-u0"], cmn=True, vad=vad["s1-u0"]))[None]
    with torch.no_grad():
        np.testing.assert_allclose(xv["s1-u0"], model(x)[0].numpy(), rtol=1e-4, atol=1e-5)
    (tmp_path / "data" / "vad.scp").unlink()
    with pytest.raises(ExtractError):
        extract(model_path, tmp_path / "data", tmp_path / "xv2", nj=1, cmd=RUN_PL, device="cpu")
    assert "vad.scp does not exist" in (tmp_path / "xv2" / "log" / "extract.1.log").read_text()


def test_verify_knows_its_limits(tmp_path, capsys):
    """Issue 12, failure 4: a 0.1 s clip is refused (or, with --allow-short, warned
    about), 8 kHz against 16 kHz audio and upsampling are warned about, and several
    enrolment files make one enrolment side."""
    import json

    import soundfile as sf

    from pyspk.bin import embed as embed_bin
    from pyspk.bin import verify as verify_bin

    torch.manual_seed(0)
    kw = {"channels": 8, "stats_channels": 16, "embed_dim": 5}
    m = str(tmp_path / "m.pt")
    save_encoder(
        m, build_encoder("tdnn", **kw), "tdnn", kw, {"features": {"cmn": True, "cmn_window": None, "vad": False}}
    )
    rng = np.random.default_rng(0)
    long = (0.1 * rng.normal(size=32000)).astype(np.float32)
    sf.write(tmp_path / "a.wav", long, 16000)
    t = np.arange(32000) / 16000
    sf.write(tmp_path / "a2.wav", (0.3 * np.sin(2 * np.pi * 220 * t * (1 + t))).astype(np.float32), 16000)
    sf.write(tmp_path / "short.wav", long[:1600], 16000)  # 0.1 s
    sf.write(tmp_path / "a8k.wav", long[::2], 8000)
    a, a2, short, a8k = (str(tmp_path / f) for f in ("a.wav", "a2.wav", "short.wav", "a8k.wav"))
    base = ["--model", m, "--device", "cpu", "--json", "--threshold", "0.5"]
    assert verify_bin.main(base + [a, short]) == 1
    err = capsys.readouterr().err
    assert f"{short}: 0.10 s of speech after VAD, less than the minimum 1 s" in err, err
    assert embed_bin.main(["--model", m, "--device", "cpu", short]) == 1
    capsys.readouterr()
    assert verify_bin.main(base + ["--allow-short", a, short]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and json.loads(captured.out)["warnings"]
    assert verify_bin.main(base + ["--min-speech", "0.05", a, short]) == 0
    assert not json.loads(capsys.readouterr().out)["warnings"]
    assert verify_bin.main(base + [a, a8k]) == 0
    captured = capsys.readouterr()
    assert "8000 Hz audio resampled up to the model's 16000 Hz" in captured.err
    assert "different sample rates" in captured.err
    assert verify_bin.main(base + ["--enroll", a2, a, a]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["enroll"] == [a, a2]
    from pyspk.embed.single import embed_file

    emb = Embedder.from_checkpoint(m, device="cpu")
    ea, ea2 = embed_file(emb, a), embed_file(emb, a2)
    mean = (ea + ea2) / 2  # the enrolment side: the mean of both
    cos = float(mean @ ea / np.linalg.norm(mean) / np.linalg.norm(ea))
    assert res["score"] == pytest.approx(cos, abs=1e-5)
