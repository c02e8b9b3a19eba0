"""Fbank features and the fbank stage: Kaldi agreement, ark/scp round trip, reuse,
resume after a kill, and every bad-input case."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from pyspk.data.kaldi_dir import read_table
from pyspk.features.ark import job_files
from pyspk.features.audio import AudioError, read_audio
from pyspk.features.fbank import FbankConfig, compute_fbank, compute_fbank_energy, num_frames
from pyspk.stages.fbank import StageError, job_signature, make_fbank, run_job, verify_job, write_splits

REPO = Path(__file__).resolve().parents[1]
RUN_PL = REPO / "utils" / "run.pl"


def speechlike(n: int, seed: int, sr: int = 16000) -> np.ndarray:
    """Amplitude-modulated harmonics plus noise, int16-representable (like PCM audio)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 250)
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12) if k * f0 < sr / 2)
    x = 0.2 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t)) + 0.01 * rng.standard_normal(n)
    return (np.round(x * 32767) / 32768).astype(np.float32)


def make_set(root: Path, n_spk: int = 2, n_utt: int = 3, seconds: float = 1.0) -> Path:
    """A small data dir of 16 kHz FLAC files (one entry as a ``cat file |`` pipe)."""
    data, wav = root / "data" / "s", root / "wav"
    data.mkdir(parents=True)
    wav.mkdir()
    scp, u2s = [], []
    for s in range(n_spk):
        for u in range(n_utt):
            utt = f"spk{s}-u{u}"
            p = wav / f"{utt}.flac"
            sf.write(p, speechlike(int(16000 * seconds), 10 * s + u), 16000)
            scp.append(f"{utt} cat {p} |\n" if (s, u) == (0, 1) else f"{utt} {p}\n")
            u2s.append(f"{utt} spk{s}\n")
    (data / "wav.scp").write_text("".join(scp))
    (data / "utt2spk").write_text("".join(u2s))
    return data


def knf_fbank(wave: np.ndarray, snip_edges: bool) -> np.ndarray:
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = snip_edges
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.window_type = "povey"
    opts.mel_opts.num_bins = 80
    opts.mel_opts.low_freq = 20
    opts.mel_opts.high_freq = 7600
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, (wave * 32768).tolist())
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


@pytest.mark.parametrize("snip_edges", [False, True])
def test_agrees_with_kaldi_native_fbank(snip_edges):
    # Tolerance 2e-3 (the target): both compute in float32 and their FFTs round
    # differently, a relative error on the energies that the log keeps as an absolute one
    # (the measured difference: bench_fbank's kaldi_native_fbank_max_abs_diff row, docs/testing.md).
    wave = speechlike(24000, 3)
    ours = compute_fbank(wave, 16000, FbankConfig(snip_edges=snip_edges))
    ref = knf_fbank(wave, snip_edges)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 2e-3


def test_shape_dtype_resample_and_frames():
    wave = speechlike(16000, 1)
    f = compute_fbank(wave, 16000)
    assert f.shape == (100, 80) and f.dtype == np.float32
    assert num_frames(16000) == 100
    f8 = compute_fbank(wave[::2].copy(), 8000)  # resampled to 16 kHz first
    assert f8.shape == (100, 80)
    # the 8 kHz copy has no energy above 4 kHz: the high mel bands are much lower
    assert f8[:, -10:].mean() < f[:, -10:].mean() - 3
    # first 60 bands (< ~3.5 kHz) carry the same content
    assert np.abs(f8[5:-5, :40] - f[5:-5, :40]).mean() < 0.5
    with pytest.raises(ValueError):
        compute_fbank(np.zeros((2, 100), np.float32), 16000)


def test_config_misspelled_key_names_nearest(tmp_path):
    (tmp_path / "f.yaml").write_text("fbank:\n  num_mel_bin: 80\n")
    with pytest.raises(ValueError, match="num_mel_bins"):
        FbankConfig.from_yaml(tmp_path / "f.yaml")
    (tmp_path / "g.yaml").write_text("vad:\n  enabled: true\n  energy_treshold: 5\n")
    with pytest.raises(ValueError, match="vad_energy_threshold"):
        FbankConfig.from_yaml(tmp_path / "g.yaml")
    cfg = FbankConfig.from_yaml(REPO / "conf" / "fbank.yaml")
    assert cfg.num_mel_bins == 80 and cfg.low_freq == 20 and cfg.high_freq == 7600 and cfg.dither == 0


def test_job_ark_scp_round_trip(tmp_path):
    data = make_set(tmp_path)
    fb = tmp_path / "fbank"
    cfg = FbankConfig(vad=True)
    write_splits(data, fb.resolve(), 1)
    assert run_job(data, fb, 1, cfg) == {}
    p = job_files(fb, 1)
    feats = dict(kaldiio.load_scp(str(p["scp"])).items())
    vad = dict(kaldiio.load_scp(str(p["vad_scp"])).items())
    frames = read_table(p["frames"], check_sorted=False)
    assert list(feats) == list(read_table(data / "wav.scp"))
    for utt, source in read_table(data / "wav.scp").items():
        wave = read_audio(utt, source, 16000)
        want, energy = compute_fbank_energy(wave, 16000, cfg)
        np.testing.assert_array_equal(feats[utt], want)
        assert int(frames[utt]) == want.shape[0] == vad[utt].shape[0]
        assert set(np.unique(vad[utt])) <= {0.0, 1.0}


def run_stage(data, fb, cmd=None, **kw):
    return make_fbank(data, fb, str(REPO / "conf" / "fbank.yaml"), kw.pop("nj", 2), cmd or f"{RUN_PL}", **kw)


needs_run_pl = pytest.mark.skipif(not RUN_PL.is_file(), reason="utils/run.pl not in the checkout")


@pytest.mark.slow
@needs_run_pl
def test_stage_resume_after_kill_and_reuse(tmp_path):
    data = make_set(tmp_path)
    ref_data = tmp_path / "ref"
    shutil.copytree(data, ref_data)
    # uninterrupted reference run
    run_stage(ref_data, tmp_path / "fb_ref")
    ref_scp = (ref_data / "feats.scp").read_text()
    assert len(ref_scp.splitlines()) == 6
    assert (ref_data / "utt2num_frames").is_file() and (ref_data / "vad.scp").is_file()

    # a queue script that completes job 1, then kills job 2 midway (kill -9)
    killer = tmp_path / "killer.sh"
    killer.write_text(
        "#!/usr/bin/env bash\nlogp=$2; shift 2\n"
        "a=(); for x in \"$@\"; do a+=(\"${x//JOB/1}\"); done; \"${a[@]}\" > \"${logp//JOB/1}\" 2>&1\n"
        "b=(); for x in \"$@\"; do b+=(\"${x//JOB/2}\"); done; \"${b[@]}\" > \"${logp//JOB/2}\" 2>&1 &\n"
        "pid=$!; sleep 0.3; kill -9 $pid; exit 1\n"
    )
    killer.chmod(0o755)
    fb = tmp_path / "fb"
    with pytest.raises(StageError, match=r"fbank\.2\.log"):
        run_stage(data, fb, cmd=str(killer))
    assert job_files(fb, 1)["done"].is_file()
    assert not job_files(fb, 2)["done"].is_file()
    assert not job_files(fb, 2)["ark"].exists() and not job_files(fb, 2)["scp"].exists()
    assert not (data / "feats.scp").exists()
    ark1 = job_files(fb, 1)["ark"].stat()

    run_stage(data, fb)  # resume: job 1 reused, job 2 computed
    assert job_files(fb, 1)["ark"].stat().st_mtime_ns == ark1.st_mtime_ns
    scp = (data / "feats.scp").read_text()
    assert scp == ref_scp.replace(str((tmp_path / "fb_ref").resolve()), str(fb.resolve()))
    ours, ref = kaldiio.load_scp(str(data / "feats.scp")), kaldiio.load_scp(str(ref_data / "feats.scp"))
    for utt in ours:
        np.testing.assert_array_equal(ours[utt], ref[utt])

    # a second run reuses everything (no job is started)
    run_stage(data, fb, cmd="false")
    assert job_files(fb, 1)["ark"].stat().st_mtime_ns == ark1.st_mtime_ns
    assert (data / "feats.scp").read_text() == scp


def test_verify_job_detects_truncation_and_changed_input(tmp_path):
    data = make_set(tmp_path, n_spk=1, n_utt=2)
    fb = tmp_path / "fb"
    cfg = FbankConfig(vad=True)
    text = write_splits(data, fb.resolve(), 1)[0]
    run_job(data, fb, 1, cfg)
    sig = job_signature(text, "", cfg)
    assert verify_job(fb, 1, sig, vad=True) == ""
    assert "changed" in verify_job(fb, 1, job_signature(text, "", FbankConfig(vad=True, low_freq=40)), vad=True)
    ark = job_files(fb, 1)["ark"]
    with open(ark, "r+b") as f:
        f.truncate(ark.stat().st_size - 100)
    assert "truncated" in verify_job(fb, 1, sig, vad=True)
    job_files(fb, 1)["vad_ark"].write_bytes(b"")
    run_job(data, fb, 1, cfg)
    assert verify_job(fb, 1, sig, vad=True) == ""
    job_files(fb, 1)["vad_ark"].write_bytes(b"junk")
    assert verify_job(fb, 1, sig, vad=True) != ""


# ---- bad input: each case fails naming utterance and file, or is skipped with --skip-bad


def _write_bad(kind: str, path: Path) -> str:
    good = speechlike(8000, 5)
    if kind == "missing":
        return str(path.with_suffix(".flac"))
    if kind == "corrupt":
        path.with_suffix(".wav").write_bytes(b"RIFF\x00\x01garbage-not-audio" * 10)
        return str(path.with_suffix(".wav"))
    if kind == "empty":
        sf.write(path.with_suffix(".wav"), np.zeros(0, np.float32), 16000)
    elif kind == "short":
        sf.write(path.with_suffix(".wav"), good[:160], 16000)  # 10 ms
    elif kind == "nan":
        x = good.copy()
        x[100] = np.nan
        sf.write(path.with_suffix(".wav"), x, 16000, subtype="FLOAT")
    elif kind == "inf":
        x = good.copy()
        x[100] = np.inf
        sf.write(path.with_suffix(".wav"), x, 16000, subtype="FLOAT")
    elif kind == "rate":
        sf.write(path.with_suffix(".wav"), good, 12345)
    elif kind == "stereo":
        sf.write(path.with_suffix(".wav"), np.stack([good, -good[::-1]], 1), 16000)
    return str(path.with_suffix(".wav"))


BAD = {
    "missing": "cannot read",
    "corrupt": "cannot read",
    "empty": "zero-length",
    "short": "too short",
    "nan": "NaN or inf",
    "inf": "NaN or inf",
    "rate": "unsupported sample rate",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_fails_naming_utt_and_file(tmp_path, kind):
    data = make_set(tmp_path, n_spk=1, n_utt=2)
    src = _write_bad(kind, tmp_path / "wav" / "bad")
    with open(data / "wav.scp", "a") as f:
        f.write(f"spk0-zbad {src}\n")
    with open(data / "utt2spk", "a") as f:
        f.write("spk0-zbad spk0\n")
    fb = tmp_path / "fb"
    write_splits(data, fb.resolve(), 1)
    with pytest.raises(AudioError, match=BAD[kind]) as e:
        run_job(data, fb, 1, FbankConfig())
    assert "spk0-zbad" in str(e.value) and src in str(e.value)
    p = job_files(fb, 1)
    assert not p["ark"].exists() and not p["scp"].exists() and not p["done"].exists()
    assert not list(fb.glob(".*tmp*"))
    # --skip-bad: listed with the reason, the rest written
    bad = run_job(data, fb, 1, FbankConfig(), skip_bad=True)
    assert list(bad) == ["spk0-zbad"] and BAD[kind] in bad["spk0-zbad"]
    assert list(kaldiio.load_scp(str(p["scp"]))) == ["spk0-u0", "spk0-u1"]


def test_stereo_takes_channel_0_with_warning(tmp_path, caplog):
    src = _write_bad("stereo", tmp_path / "st")
    wave = read_audio("u", src, 16000)
    np.testing.assert_allclose(wave, speechlike(8000, 5), atol=1e-4)
    assert "channels, taking channel 0" in caplog.text
    with pytest.raises(AudioError, match="only mono"):
        read_audio("u", src, 16000, stereo="error")


def test_pipe_failure_names_utterance(tmp_path):
    with pytest.raises(AudioError, match="'u1'.*pipe exited"):
        read_audio("u1", "false |", 16000)


@pytest.mark.slow
@needs_run_pl
def test_cli_skip_bad_fixes_data_dir_and_force_recomputes(tmp_path):
    data = make_set(tmp_path, n_spk=1, n_utt=2)
    with open(data / "wav.scp", "a") as f:
        f.write(f"spk0-zbad {tmp_path / 'nope.wav'}\n")
    with open(data / "utt2spk", "a") as f:
        f.write("spk0-zbad spk0\n")
    fb = tmp_path / "fb"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "pyspk.bin.fbank", "--nj", "1", "--cmd", str(RUN_PL), "--skip-bad", str(data), str(fb)]
    r = subprocess.run(cli, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert list(read_table(data / "feats.scp")) == ["spk0-u0", "spk0-u1"]
    assert list(read_table(data / "utt2spk")) == ["spk0-u0", "spk0-u1"]
    assert read_table(data / "spk2utt")["spk0"] == "spk0-u0 spk0-u1"
    assert "spk0-zbad" in (data / "bad_utts").read_text()
    # --force recomputes a verified job
    mtime = job_files(fb, 1)["ark"].stat().st_mtime_ns
    r = subprocess.run(cli[:3] + ["--force"] + cli[3:], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert job_files(fb, 1)["ark"].stat().st_mtime_ns != mtime


def test_reader_matches_lhotse_kaldi_import(tmp_path):
    # Lhotse's Kaldi import (lhotse.kaldi.load_kaldi_data_dir) reads plain-file entries the
    # same way; it refuses 'cmd |' entries without kaldi_native_io, one reason the jobs
    # decode wav.scp with soundfile themselves.
    lk = pytest.importorskip("lhotse.kaldi")
    data = make_set(tmp_path, n_spk=1, n_utt=1)
    recordings = lk.load_kaldi_data_dir(data, sampling_rate=16000)[0]
    for rec in recordings:
        source = read_table(data / "wav.scp")[rec.id]
        np.testing.assert_allclose(read_audio(rec.id, source, 16000), rec.load_audio()[0], atol=1e-6)


def test_segments(tmp_path):
    data = make_set(tmp_path, n_spk=1, n_utt=2, seconds=2.0)
    wav = read_table(data / "wav.scp")
    (data / "wav.scp").write_text("".join(f"rec{i} {v}\n" for i, v in enumerate(wav.values())))
    (data / "segments").write_text("a-0 rec0 0.00 0.80\na-1 rec0 0.80 -1\na-2 rec1 0.25 1.50\n")
    (data / "utt2spk").write_text("a-0 a\na-1 a\na-2 a\n")
    fb = tmp_path / "fb"
    assert len(write_splits(data, fb.resolve(), 2)) == 2
    for job in (1, 2):
        run_job(data, fb, job, FbankConfig())
    feats = {**kaldiio.load_scp(str(job_files(fb, 1)["scp"])), **kaldiio.load_scp(str(job_files(fb, 2)["scp"]))}
    rec0 = read_audio("r", list(wav.values())[0], 16000)
    rec1 = read_audio("r", list(wav.values())[1], 16000)
    np.testing.assert_array_equal(feats["a-0"], compute_fbank(rec0[:12800], 16000))
    np.testing.assert_array_equal(feats["a-1"], compute_fbank(rec0[12800:], 16000))
    np.testing.assert_array_equal(feats["a-2"], compute_fbank(rec1[4000:24000], 16000))
    (data / "segments").write_text("a-0 rec0 0.00 0.80\na-1 rec0 0.80 0.81\na-2 rec1 0.25 1.50\n")
    write_splits(data, fb.resolve(), 1)
    with pytest.raises(AudioError, match="'a-1'.*segment 0.8-0.81 s"):
        run_job(data, fb, 1, FbankConfig())


@pytest.mark.parametrize("vad", [False, True])
def test_blockwise_equals_lhotse_stock_module(monkeypatch, vad):
    import torch

    from pyspk.features import fbank as fbank_mod

    cfg = FbankConfig(vad=vad)
    wave = speechlike(16000 + 123, 4)
    full = compute_fbank_energy(wave, 16000, cfg)
    monkeypatch.setattr(fbank_mod, "BLOCK_FRAMES", 7)  # 101 frames in 15 blocks
    blocks = compute_fbank_energy(wave, 16000, cfg)
    np.testing.assert_allclose(full[0], blocks[0], atol=1e-5)  # FFT/matmul batch sizes: last-bit rounding
    stock = fbank_mod._extractor(cfg, True).extractor  # Lhotse's own Wav2LogFilterBank
    with torch.inference_mode():
        ref = stock(torch.from_numpy(wave * 32768.0)[None])[0].numpy()
    np.testing.assert_allclose(full[0], ref[:, 1:] if vad else ref, atol=1e-4)
    if vad:
        np.testing.assert_allclose(full[1], ref[:, 0], atol=1e-5)
        np.testing.assert_allclose(full[1], blocks[1], atol=1e-5)


@pytest.mark.slow
@needs_run_pl
def test_cli_skip_bad_that_would_empty_the_data_dir_changes_nothing(tmp_path):
    """--skip-bad edits the data dir in place; when every utterance is bad the result is
    no data dir, and the originals must stay as they were (issue 12)."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "wav.scp").write_text(f"spk0-a {tmp_path / 'no1.wav'}\nspk0-b {tmp_path / 'no2.wav'}\n")
    (data / "utt2spk").write_text("spk0-a spk0\nspk0-b spk0\n")
    (data / "spk2utt").write_text("spk0 spk0-a spk0-b\n")
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyspk.bin.fbank",
            "--nj",
            "1",
            "--cmd",
            str(RUN_PL),
            "--skip-bad",
            str(data),
            str(tmp_path / "fb"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 1 and "would not be a valid data dir; nothing was changed" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".d.")]


@pytest.mark.slow
def test_cli_runs_from_another_directory_and_a_queue_that_cannot_start_is_named(tmp_path):
    """Issue 12, failure 5: the default --cmd was the relative path utils/run.pl."""
    data = make_set(tmp_path, n_spk=1, n_utt=2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "pyspk.bin.fbank", "--nj", "1"]
    r = subprocess.run(cli + [str(data), str(tmp_path / "fb")], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert len(read_table(data / "feats.scp")) == 2
    r = subprocess.run(
        cli + ["--force", "--cmd", "no/such/queue.pl", str(data), str(tmp_path / "fb2")],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 1
    assert "never started: the queue command exited 127 before writing any log" in r.stderr, r.stderr
    assert "no/such/queue.pl: not found" in r.stderr and "fbank.1.log" not in r.stderr.split("never started")[1]


def test_upsampled_audio_is_warned_about_once(tmp_path, caplog):
    from pyspk.features import audio

    audio._UPSAMPLED.discard(8000)
    sf.write(tmp_path / "a.wav", speechlike(16000, 5)[::2], 8000)
    for _ in range(3):
        read_audio("u8k", str(tmp_path / "a.wav"), 16000)
    msgs = [r.getMessage() for r in caplog.records if "resampled up" in r.getMessage()]
    assert len(msgs) == 1 and "8000 Hz audio resampled up to 16000 Hz; mel bins above 4000 Hz are empty" in msgs[0]


# ---- compressed features (conf/fbank.yaml compress, --compress-feats)


def _kind(spec: str) -> str:
    from pyspk.data.arkread import EXTENT_BYTES, object_extent

    ark, off = spec.rsplit(":", 1)
    with open(ark, "rb") as f:
        f.seek(int(off))
        return object_extent(f.read(EXTENT_BYTES))[0]


def test_compressed_job_writes_kaldi_compressed_feats_and_float_vad(tmp_path):
    """compress: true writes CM matrices (CM2 for <= 8 frames, Kaldi's automatic method) that
    decode close to the float features, a quarter of the bytes; VAD stays float; the job's
    signature covers the option, and a job written before it existed still verifies."""
    import json

    from pyspk.data.arkread import ArkReader
    from pyspk.jobs import signature

    data = make_set(tmp_path, n_spk=1, n_utt=2)
    sf.write(tmp_path / "wav" / "short.flac", speechlike(960, 9), 16000)  # 60 ms: 6 frames
    with open(data / "wav.scp", "a") as f:
        f.write(f"spk0-u9 {tmp_path / 'wav' / 'short.flac'}\n")
    with open(data / "utt2spk", "a") as f:
        f.write("spk0-u9 spk0\n")
    plain, packed = FbankConfig(vad=True), FbankConfig(vad=True, compress=True)
    arks = {}
    for name, cfg in (("float", plain), ("cm", packed)):
        fb = tmp_path / name
        text = write_splits(data, fb.resolve(), 1)[0]
        assert run_job(data, fb, 1, cfg) == {}
        arks[name] = job_files(fb, 1)
    scp = {n: read_table(arks[n]["scp"], check_sorted=False) for n in arks}
    vad = {n: read_table(arks[n]["vad_scp"], check_sorted=False) for n in arks}
    assert [_kind(s) for s in scp["float"].values()] == ["FM"] * 3
    assert [_kind(s) for s in scp["cm"].values()] == ["CM", "CM", "CM2"]
    assert [_kind(s) for s in vad["cm"].values()] == ["FV"] * 3
    reader = ArkReader()
    for utt in scp["float"]:
        want, got = reader(scp["float"][utt], utt), reader(scp["cm"][utt], utt)
        assert got.shape == want.shape and got.dtype == np.float32
        # a byte per value between the column's percentiles: within half a step of the widest of the
        # three ranges (at most a column's whole range over 63 codes); the mean is bounded apart
        # (its measured value: docs/recipe.md, compressed features)
        assert (np.abs(got - want) <= (want.max(0) - want.min(0)) / 120 + 1e-4).all(), utt
        assert np.abs(got - want).mean() < 0.02, utt
        np.testing.assert_array_equal(reader(vad["cm"][utt]), reader(vad["float"][utt]))
    reader.close()
    assert arks["cm"]["ark"].stat().st_size < 0.3 * arks["float"]["ark"].stat().st_size
    sig = job_signature(text, "", packed)
    assert verify_job(tmp_path / "cm", 1, sig, vad=True) == ""
    assert "changed" in verify_job(tmp_path / "cm", 1, job_signature(text, "", plain), vad=True)
    before = {k: v for k, v in plain.__dict__.items() if k != "compress"}  # the settings before the option
    assert job_signature(text, "", plain) == signature(text, "", json.dumps(before, sort_keys=True))


def test_compress_key_and_flag_are_checked(tmp_path):
    from pyspk.bin.fbank import main

    (tmp_path / "f.yaml").write_text("fbank:\n  compress: yes please\n")
    with pytest.raises(ValueError, match="compress must be true or false"):
        FbankConfig.from_yaml(tmp_path / "f.yaml")
    (tmp_path / "g.yaml").write_text("fbank:\n  compress: true\n")
    assert FbankConfig.from_yaml(tmp_path / "g.yaml").compress is True
    with pytest.raises(SystemExit) as e:
        main(["--compress-feats", "yes", str(tmp_path), str(tmp_path / "fb")])
    assert e.value.code == 2


@pytest.mark.slow
@needs_run_pl
def test_stage_compress_feats_reaches_the_jobs_and_a_change_recomputes(tmp_path):
    """make_fbank(compress=True) over a config without it: the queue jobs write CM (the flag is
    passed to them), a rerun reuses them, and turning it off recomputes them as float."""
    data = make_set(tmp_path, n_spk=1, n_utt=2)
    fb = tmp_path / "fb"
    run_stage(data, fb, nj=1, compress=True)
    first = (data / "feats.scp").read_text()
    assert {_kind(s) for s in read_table(data / "feats.scp").values()} == {"CM"}
    run_stage(data, fb, cmd="false", nj=1, compress=True)  # every job verifies: none started
    assert (data / "feats.scp").read_text() == first
    run_stage(data, fb, nj=1, compress=False)
    assert {_kind(s) for s in read_table(data / "feats.scp").values()} == {"FM"}
