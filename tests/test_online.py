"""The online training data path (pyspk.online): crop decoding, determinism, resume, views,
parity with the offline features, shards, and the errors. Tiny audio made here: 4 speakers x 3
utterances of 2.5-4.5 s (harmonic tones with pauses, 16-bit FLAC), a 3-room RIR pool."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest
import soundfile as sf
import torch

from pyspk.online import OnlineConfig, load_online_data
from pyspk.online.audio import Audio, AudioTable, EntryError

SR = 16000
CROP = 60


def tone(seconds: float, f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    x = 0.2 * x * (np.sin(2 * np.pi * 1.7 * t) > -0.3) + 0.003 * rng.standard_normal(n)
    return (np.round(np.clip(x, -1, 1) * 32767) / 32768).astype(np.float32)


def make_dir(root: Path, fmt: str = "flac", speakers: int = 4, per_spk: int = 3) -> Path:
    d = root / "data"
    (root / "wav").mkdir(parents=True, exist_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    wav, u2s = [], []
    for s in range(speakers):
        for u in range(per_spk):
            p = root / "wav" / f"s{s}_{u}.{fmt}"
            sf.write(p, tone(2.5 + u, 110 + 35 * s, 10 * s + u), SR, subtype="PCM_16")
            wav.append(f"s{s}-u{u} {p}\n")
            u2s.append(f"s{s}-u{u} s{s}\n")
    (d / "wav.scp").write_text("".join(wav))
    (d / "utt2spk").write_text("".join(u2s))
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    d = make_dir(root)
    aug = root / "augment.yaml"
    aug.write_text("num_rooms: 3\nspeed: false\n")
    aug_speed = root / "augment_speed.yaml"
    aug_speed.write_text("num_rooms: 3\nspeed: true\n")
    return NS(root=root, data=d, aug=aug, aug_speed=aug_speed, rirs=root / "rirs")


def config(
    corpus,
    source="audio",
    augment=True,
    workers=0,
    views=2,
    spec=True,
    vad=True,
    cmn=True,
    crop=CROP,
    speed=False,
    **data,
):
    dc = OnlineConfig(
        source=source,
        augment_config=str(corpus.aug_speed if speed else corpus.aug) if augment else None,
        rir_dir=str(corpus.rirs),
        **data,
    )
    return NS(
        data=dc,
        features=NS(
            cmn=cmn,
            cmn_window=None,
            vad=vad,
            crop_frames=crop,
            short_utts="pad",
            spec_augment=NS(enabled=spec, time_masks=1, time_width=10, freq_masks=1, freq_width=8),
        ),
        sampler=NS(kind="pk", speakers_per_batch=2, utts_per_speaker=2, views=views, batch_size=None),
        train=NS(num_workers=workers, steps_per_epoch=None),
    )


def epoch_batches(td, epoch=0):
    td.sampler.set_epoch(epoch)
    return [(f.clone(), l.clone()) for f, l in td.loader()]


def same(a, b):
    assert len(a) == len(b)
    for (fa, la), (fb, lb) in zip(a, b):
        assert torch.equal(la, lb)
        assert torch.equal(fa, fb)


# ---------------------------------------------------------------------- decoding
@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_crop_decode_equals_slice_of_full_decode(tmp_path, fmt):
    p = tmp_path / f"a.{fmt}"
    x = tone(3.3, 140, 1)
    sf.write(p, x, SR, subtype="PCM_16")
    full = sf.read(p, dtype="float32")[0]
    with Audio("a", str(p), "wav.scp:1", SR) as a:
        assert a.open() == full.shape[0]
        assert a._file is not None  # a seek, not a whole decode
        for start, n in [(0, 400), (12345, 16000), (full.shape[0] - 100, 500), (7, 1)]:
            np.testing.assert_array_equal(a.read(start, n), full[start : start + n])


def test_segments_and_pipes(tmp_path):
    from pyspk.features.audio import read_audio, slice_segment

    d = tmp_path / "data"
    d.mkdir()
    rec = tmp_path / "rec.flac"
    sf.write(rec, tone(9.0, 120, 2), SR, subtype="PCM_16")
    wavf = tmp_path / "w.wav"
    sf.write(wavf, tone(3.0, 200, 3), SR, subtype="PCM_16")
    (d / "wav.scp").write_text(f"p1 cat {wavf} |\nrecA {rec}\n")
    (d / "segments").write_text("a1 recA 0.5 3.25\na2 recA 3.0 -1\np1-s p1 0.2 2.5\n")
    t = AudioTable(d, SR)
    full = read_audio("recA", str(rec), SR)
    for utt, (s, e) in (("a1", (0.5, 3.25)), ("a2", (3.0, -1))):
        with t.audio(t.index[utt]) as a:
            want = slice_segment(utt, str(rec), full, SR, s, e)
            assert a.open() == want.shape[0] and a._file is not None
            np.testing.assert_array_equal(a.read(100, 8000), want[100:8100])
    with t.audio(t.index["p1-s"]) as a:  # a pipe: decoded whole, then sliced
        want = slice_segment("p1-s", "", read_audio("p1", str(wavf), SR), SR, 0.2, 2.5)
        assert a.open() == want.shape[0] and a._file is None
        np.testing.assert_array_equal(a.whole(), want)


def test_online_batches_from_segments_and_pipes(corpus, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    lines, segs, u2s = [], [], []
    for s in range(3):
        rec = tmp_path / f"r{s}.wav"
        sf.write(rec, tone(8.0, 100 + 40 * s, s), SR, subtype="PCM_16")
        lines.append(f"r{s} {'cat ' + str(rec) + ' |' if s == 1 else rec}\n")
        for k in range(2):
            segs.append(f"s{s}-{k} r{s} {3.5 * k:.1f} {3.5 * k + 3.0:.1f}\n")
            u2s.append(f"s{s}-{k} s{s}\n")
    (d / "wav.scp").write_text("".join(lines))
    (d / "segments").write_text("".join(segs))
    (d / "utt2spk").write_text("".join(u2s))
    td = load_online_data(d, config(corpus), seed=5)
    batches = epoch_batches(td)
    assert batches and all(f.shape == (8, CROP, 80) and torch.isfinite(f).all() for f, _ in batches)


def test_bad_entry_names_file_line_and_utterance(corpus, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    src = corpus.data / "wav.scp"
    lines = src.read_text().splitlines()
    lines[2] = lines[2].split()[0] + " /nonexistent/missing.flac"
    (d / "wav.scp").write_text("\n".join(lines) + "\n")
    (d / "utt2spk").write_text((corpus.data / "utt2spk").read_text())
    td = load_online_data(d, config(corpus, augment=False, views=1), seed=1)
    bad = lines[2].split()[0]
    i = td.sampler.utts.index(bad)
    with pytest.raises(EntryError) as e:
        td.dataset[(0, 0, (i,))]
    msg = str(e.value)
    assert f"{d / 'wav.scp'}:3" in msg and f"'{bad}'" in msg and "/nonexistent/missing.flac" in msg


# ---------------------------------------------------------------------- determinism
def test_batches_identical_with_0_1_2_workers(corpus):
    runs = [
        epoch_batches(load_online_data(corpus.data, config(corpus, workers=w), seed=7, work_dir=corpus.root))
        for w in (0, 1, 2)
    ]
    same(runs[0], runs[1])
    same(runs[0], runs[2])
    assert len(runs[0]) >= 2


def test_resume_at_batch_k_gives_the_same_batches(corpus):
    full = epoch_batches(load_online_data(corpus.data, config(corpus), seed=7), epoch=1)
    td = load_online_data(corpus.data, config(corpus, workers=1), seed=7)
    td.sampler.load_state_dict({"epoch": 1, "position": 2, "seed": 7})
    same(full[2:], epoch_batches(td, epoch=1))


def test_two_views_differ_and_share_the_label(corpus):
    td = load_online_data(corpus.data, config(corpus, spec=False), seed=3)
    f, l = epoch_batches(td)[0]
    assert torch.equal(l[0::2], l[1::2])
    for j in range(0, f.shape[0], 2):
        assert not torch.allclose(f[j], f[j + 1])


def test_speed_perturbation_as_new_speakers(corpus):
    td = load_online_data(corpus.data, config(corpus, speed=True), seed=3)
    assert len(td.speakers) == 3 * 4 and "sp0.9-s0" in td.speakers
    i = td.sampler.utts.index("sp1.1-s1-u2")
    f, l = td.dataset[(0, 0, (i, i))]
    assert f.shape == (2, CROP, 80) and torch.isfinite(f).all()
    assert td.speakers[int(l[0])] == "sp1.1-s1"


# ---------------------------------------------------------------------- parity with the offline features
def test_no_augmentation_equals_offline_features_of_the_same_crop(corpus):
    """scope crop: the window's fbank is the offline utterance fbank's frames [s, s + W)."""
    from pyspk.features.audio import read_audio
    from pyspk.features.fbank import compute_fbank_energy, load_config, num_frames

    fb = load_config("conf/fbank.yaml")
    td = load_online_data(
        corpus.data,
        config(corpus, augment=False, spec=False, vad=False, cmn=False, fbank_config="conf/fbank.yaml"),
        seed=11,
    )
    ds = td.dataset
    for k, utt in enumerate(["s0-u0", "s2-u1", "s3-u2"]):
        i = ds.utts.index(utt)
        got = ds[(3, k, (i,))][0][0].numpy()
        wave = read_audio(utt, ds.table.source(ds.table.index[utt]), SR)
        offline, _ = compute_fbank_energy(wave, SR, fb)
        rng = np.random.default_rng([11, 3, k, 0, 0])
        s = int(rng.integers(0, num_frames(wave.shape[0], fb) - CROP + 1))
        np.testing.assert_allclose(got, offline[s : s + CROP], rtol=1e-5, atol=1e-4)
    # the first and last frames of an utterance (reflected edges) too
    maker = ds.maker
    wave = read_audio("s1-u0", ds.table.source(ds.table.index["s1-u0"]), SR)
    offline, _ = compute_fbank_energy(wave, SR, fb)
    T = num_frames(wave.shape[0], fb)
    for s in (0, 1, T - CROP):

        class Fixed:
            def integers(self, lo, hi):
                return s if hi > 1 else 0

        a, b, m = maker.region(wave.shape[0], Fixed())
        feats, _ = compute_fbank_energy(wave[a:b], SR, fb)
        np.testing.assert_allclose(feats[m : m + CROP], offline[s : s + CROP], rtol=1e-5, atol=1e-4)


def test_utterance_scope_equals_offline_vad_cmn_crop(corpus):
    """scope utterance: VAD, CMN and the crop exactly as the offline reader of the ark path."""
    from pyspk.data.dataset import random_crop
    from pyspk.features.audio import read_audio
    from pyspk.features.fbank import compute_fbank_energy, load_config
    from pyspk.features.reader import load_features
    from pyspk.features.vad import vad_from_config

    fb = load_config("conf/fbank.yaml")
    td = load_online_data(
        corpus.data,
        config(corpus, augment=False, spec=False, scope="utterance", fbank_config="conf/fbank.yaml"),
        seed=2,
    )
    ds = td.dataset
    for utt in ("s0-u2", "s3-u0"):
        i = ds.utts.index(utt)
        got = ds[(0, 4, (i, i))][0][1].numpy()
        feats, energy = compute_fbank_energy(read_audio(utt, ds.table.source(ds.table.index[utt]), SR), SR, fb)
        ref = load_features(feats, cmn=True, vad=vad_from_config(energy, fb))
        want = random_crop(ref, CROP, np.random.default_rng([2, 0, 4, 0, 1]))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_reverb_of_the_crop_equals_the_crop_of_the_reverberant_utterance(corpus):
    from pyspk.augment.rir import reverberate

    maker = load_online_data(corpus.data, config(corpus), seed=1, work_dir=corpus.root).dataset.maker
    aug = maker.aug
    x = tone(3.0, 150, 4)
    r = {"kind": "reverb", "rir_pool": aug.context["rir_pool"], "index": 1}
    _, h, delay = aug.unit_rir(r)
    whole = reverberate(x, aug._pools[r["rir_pool"]][1])
    a, b = 16000, 24000
    pre, post = aug.margins(r)
    lo, hi = max(0, a - pre), min(x.shape[0], b + post)
    y = aug.reverb_region(x[lo:hi], lo, a, b, r)
    ref = whole[a:b]
    ref = ref * np.sqrt(np.mean(x[a:b].astype(np.float64) ** 2) / np.mean(ref.astype(np.float64) ** 2))
    np.testing.assert_allclose(y, ref, rtol=1e-3, atol=2e-5)


# ---------------------------------------------------------------------- the loader's fast paths
def test_fast_fbank_equals_the_offline_fbank():
    """pyspk.online.fbank: its buffers, framing and banded mel product give the offline features
    up to float32 summation order, and the same log energies, at every length and edge."""
    from pyspk.features.fbank import FbankConfig, compute_fbank_energy, load_config
    from pyspk.online.fbank import fbank_energy

    x = tone(9.0, 130, 5)
    x[20000:24000] = 0.0  # digital silence: the eps floor
    configs = [load_config("conf/fbank.yaml"), FbankConfig(num_mel_bins=40, vad=True), FbankConfig(preemph_coeff=0.0)]
    configs.append(FbankConfig(remove_dc_offset=False, vad=True, int16_scale=False))
    for cfg in configs:
        for start, n in [(0, 40240), (19000, 8000), (777, 401), (5, 560), (3000, 16159), (0, x.shape[0])]:
            wave = x[start : start + n]
            want, want_e = compute_fbank_energy(wave, SR, cfg)
            got, got_e = fbank_energy(wave, cfg)
            assert got.shape == want.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
            if cfg.vad:
                np.testing.assert_array_equal(got_e, want_e)
            else:
                assert got_e is None


def test_online_speed_and_vad_equal_the_reference_ones(corpus):
    """Speed: Lhotse's resampler kernel as one product; VAD: fewer array calls; the same values."""
    from lhotse.augmentation import Speed

    from pyspk.features.vad import vad_from_config

    maker = load_online_data(corpus.data, config(corpus), seed=1, work_dir=corpus.root).dataset.maker
    x = tone(3.1, 170, 6)
    for factor in (0.9, 1.1, 0.95):
        want = Speed(factor=factor)(x[None, :], SR)[0]
        got = maker.aug._speed("u", x, {"factor": factor})
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    g = np.random.default_rng(3)
    for frames in [1, 3, 4, 5, 6, 60, 250]:
        for _ in range(20):
            e = (g.standard_normal(frames) * 4 + g.uniform(0, 15)).astype(np.float32)
            want = np.flatnonzero(vad_from_config(e, maker.fbank) > 0.5)
            np.testing.assert_array_equal(maker._voiced(e), want)


def test_reverb_convolution_of_a_span_equals_the_linear_convolution(corpus):
    from scipy.signal import fftconvolve

    from pyspk.online.augment import fft_size

    aug = load_online_data(corpus.data, config(corpus), seed=1, work_dir=corpus.root).dataset.maker.aug
    g = np.random.default_rng(4)
    for k in range(30):
        taps, n = int(g.integers(20, 5000)), int(g.integers(5000, 50000))
        x = g.standard_normal(n).astype(np.float32)
        h = (g.standard_normal(taps) * np.exp(-np.arange(taps) / 400)).astype(np.float32)
        want = fftconvolve(x.astype(np.float64), h.astype(np.float64))
        lo = int(g.integers(0, want.shape[0]))
        hi = int(g.integers(lo, want.shape[0] + 1))
        got = aug.convolve(x, f"h{k}", h, lo, hi)
        assert got.shape == (hi - lo,)
        np.testing.assert_allclose(got, want[lo:hi], rtol=0, atol=1e-5 * np.abs(want).max())
    for n in [1, 100, 4097, 45240, 50239, 65537]:
        m = fft_size(n)
        q = m // 256 if n > 4096 else m
        for p in (2, 3, 5):
            while q % p == 0:
                q //= p
        assert m >= n and q == 1


def test_views_of_one_utterance_decode_once_and_equal_views_made_alone(corpus):
    """begin_views reads the union of the views' regions; each view is what begin makes alone."""
    maker = load_online_data(corpus.data, config(corpus, speed=True), seed=1, work_dir=corpus.root).dataset.maker
    table = AudioTable(corpus.data, SR)
    row = table.index["s2-u2"]
    speeds = [None, None, 1.1, None, 0.9, None]

    def rng(k):
        return np.random.default_rng([5, k])

    together = maker.begin_views("s2-u2", table.audio(row), [rng(k) for k in range(6)], speeds, [None] * 6)
    for k, v in enumerate(together):
        alone = maker.begin("s2-u2", table.audio(row), rng(k), speeds[k])
        assert (v.base, v.a, v.b, v.m, v.recipe) == (alone.base, alone.a, alone.b, alone.m, alone.recipe)
        np.testing.assert_array_equal(v.x, alone.x)
        np.testing.assert_array_equal(v.src, alone.src)


def test_wav_bytes_are_read_in_place_only_when_plain(tmp_path):
    import io

    from pyspk.online.audio import wav_pcm16

    x = tone(1.0, 200, 7)

    def wav(data, rate=SR, subtype="PCM_16"):
        buf = io.BytesIO()
        sf.write(buf, data, rate, format="WAV", subtype=subtype)
        return buf.getvalue()

    got = wav_pcm16(wav(x), SR)
    np.testing.assert_array_equal(got.astype(np.float32) / 32768, sf.read(io.BytesIO(wav(x)), dtype="float32")[0])
    assert wav_pcm16(wav(x), 8000) is None  # another rate: libsndfile, then the rate check
    assert wav_pcm16(wav(np.stack([x, x], 1)), SR) is None  # stereo: the stereo policy
    assert wav_pcm16(wav(x, subtype="FLOAT"), SR) is None
    assert wav_pcm16(b"RIFF\0\0\0\0WAVEjunk", SR) is None


# ---------------------------------------------------------------------- shards
@pytest.fixture(scope="module")
def shards(corpus):
    from pyspk.online.shards import write_shards

    out = corpus.root / "shards"
    write_shards(corpus.data, out, shard_size=2, seed=4)
    return out


@pytest.fixture(scope="module")
def wav_shards(corpus):
    from pyspk.online.shards import write_shards

    out = corpus.root / "shards_wav"
    write_shards(corpus.data, out, shard_size=2, seed=4, fmt="wav")
    return out


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_shards_round_trip(corpus, shards, wav_shards, fmt):
    from pyspk.online.shards import iter_shard, read_index

    shards = shards if fmt == "flac" else wav_shards
    index = read_index(shards)
    assert index["audio_format"] == fmt
    got = {}
    for entry in index["shards"]:
        for item in iter_shard(shards, entry):
            assert item.utt not in got
            got[item.utt] = item
    utt2spk = dict(line.split() for line in (corpus.data / "utt2spk").read_text().splitlines())
    wav = dict(line.split() for line in (corpus.data / "wav.scp").read_text().splitlines())
    assert set(got) == set(utt2spk) and index["num_utts"] == len(utt2spk) == 12 and len(index["shards"]) == 6
    for utt, item in got.items():
        assert item.spk == utt2spk[utt] and item.ext == fmt
        audio = sf.read(__import__("io").BytesIO(item.data), dtype="float32")[0]
        np.testing.assert_array_equal(audio, sf.read(wav[utt], dtype="float32")[0])
        assert item.num_samples == audio.shape[0]
        with Audio(utt, f"{item.shard}:{utt}.{fmt}", item.shard, SR, data=item.data) as a:  # the loader's read
            np.testing.assert_array_equal(a.whole(), audio)
            np.testing.assert_array_equal(a.read(1000, 3000), audio[1000:4000])
            assert (a._pcm is not None) == (fmt == "wav")  # WAV in place, FLAC through libsndfile
    from lhotse import CutSet  # Lhotse reads them too (no torchaudio)

    cuts = list(CutSet.from_shar(in_dir=shards / "shar"))
    assert sorted(c.id for c in cuts) == sorted(utt2spk)
    c = cuts[0]
    np.testing.assert_array_equal(c.load_audio()[0], sf.read(wav[c.id], dtype="float32")[0])


def test_shard_writer_reruns_skip_finished_shards(corpus, tmp_path):
    from pyspk.bin.shards import main
    from pyspk.online.shards import INDEX, shard_files

    out = tmp_path / "sh"
    assert main(["--shard-size", "5", "--seed", "1", "--nj", "2", str(corpus.data), str(out)]) == 0
    first = json.loads((out / INDEX).read_text())
    assert [s["num_utts"] for s in first["shards"]] == [5, 5, 2]
    done = out / shard_files(0)[1]
    mtime = done.stat().st_mtime_ns
    (out / shard_files(1)[1]).unlink()  # as if killed while writing shard 1
    (out / INDEX).unlink()
    assert main(["--shard-size", "5", "--seed", "1", str(corpus.data), str(out)]) == 0
    assert done.stat().st_mtime_ns == mtime and (out / shard_files(1)[1]).is_file()
    assert json.loads((out / INDEX).read_text())["shards"] == first["shards"]
    assert not [p for p in (out / "shar").iterdir() if p.name.startswith(".")]


def test_shard_batches_identical_with_0_and_2_workers_and_after_resume(corpus, shards):
    def load(workers):
        return load_online_data(
            shards,
            config(corpus, source="shards", workers=workers, streams=2, shuffle_buffer=3),
            seed=9,
            work_dir=corpus.root,
        )

    a = epoch_batches(load(0))
    same(a, epoch_batches(load(2)))
    same(a, epoch_batches(load(1)))
    assert len(a) == 3 and all(f.shape == (8, CROP, 80) for f, _ in a)
    td = load(2)
    td.sampler.load_state_dict({"epoch": 0, "position": 1, "seed": 9})
    same(a[1:], epoch_batches(td))
    assert not torch.equal(a[0][0], epoch_batches(load(0), epoch=1)[0][0])  # epochs differ


def test_wav_shards_give_the_batches_of_flac_shards(corpus, shards, wav_shards):
    def load(d):
        return load_online_data(
            d, config(corpus, source="shards", streams=2, shuffle_buffer=3), seed=9, work_dir=corpus.root
        )

    same(epoch_batches(load(shards)), epoch_batches(load(wav_shards)))


def test_shard_babble_sources_after_resume(corpus, shards):
    """Babble mixes the regions of utterances that left the stream earlier; a resumed epoch
    rebuilds those it skipped from their random draws, so its batches are unchanged."""
    babble = {"clean": 0.0, "reverb": 0.0, "noise": 0.0, "music": 0.0, "babble": 1.0}

    def load(workers):
        return load_online_data(
            shards,
            config(corpus, source="shards", workers=workers, streams=1, shuffle_buffer=2, kind_weights=babble),
            seed=2,
            work_dir=corpus.root,
        )

    a = epoch_batches(load(0))
    td = load(1)
    td.sampler.load_state_dict({"epoch": 0, "position": 2, "seed": 2})
    same(a[2:], epoch_batches(td))


def test_shards_two_ranks_two_workers_each_shard_read_once(corpus, shards):
    """2 ranks x 2 workers: every shard read by exactly one (rank, worker), every utterance once."""
    readers, drawn = {}, []
    for rank in (0, 1):
        td = load_online_data(
            shards,
            config(corpus, source="shards", workers=2, streams=2, shuffle_buffer=2, views=1, augment=False),
            seed=3,
            rank=rank,
            world_size=2,
        )
        for item in td.dataset.items(epoch=0):
            readers.setdefault(item["shard"], set()).add((rank, item["worker"]))
            drawn.append(item["utt"])
    assert len(readers) == 6 and all(len(r) == 1 for r in readers.values())
    assert sorted(drawn) == sorted(line.split()[0] for line in (corpus.data / "utt2spk").read_text().splitlines())
    assert len({r for rs in readers.values() for r in rs}) == 4


DDP_SCRIPT = r"""
import json, sys
from types import SimpleNamespace as NS
import torch.distributed as dist
from pyspk.online import OnlineConfig, load_online_data

shards, init, out, rank = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
r, w = dist.get_rank(), dist.get_world_size()
cfg = NS(data=OnlineConfig(source="shards", streams=2, shuffle_buffer=2),
         features=NS(cmn=True, cmn_window=None, vad=True, crop_frames=40, short_utts="pad",
                     spec_augment=NS(enabled=False)),
         sampler=NS(kind="shuffle", speakers_per_batch=2, utts_per_speaker=1, views=2, batch_size=2),
         train=NS(num_workers=2, steps_per_epoch=None))
td = load_online_data(shards, cfg, seed=3, rank=r, world_size=w)
td.sampler.set_epoch(0)
steps = sum(1 for _ in td.loader())
items = [(it["shard"], it["worker"], it["utt"]) for it in td.dataset.items(0)]
got = [None, None]
dist.all_gather_object(got, {"rank": r, "steps": steps, "items": items})
if r == 0:
    json.dump(got, open(out, "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_shards_under_two_gloo_processes(corpus, shards, tmp_path):
    """A real 2-process gloo group, 2 loader workers each: the same number of steps on both
    ranks, every shard read by one (rank, worker), every utterance once."""
    import subprocess
    import sys

    out = tmp_path / "got.json"
    init = f"file://{tmp_path / 'pg'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DDP_SCRIPT, str(shards), init, str(out), str(r)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-3000:]
    got = json.loads(out.read_text())
    assert got[0]["steps"] == got[1]["steps"] == 3
    readers: dict = {}
    for g in got:
        for shard, worker, _ in g["items"]:
            readers.setdefault(shard, set()).add((g["rank"], worker))
    assert len(readers) == 6 and all(len(r) == 1 for r in readers.values())
    assert sorted(u for g in got for _, _, u in g["items"]) == sorted(
        line.split()[0] for line in (corpus.data / "utt2spk").read_text().splitlines()
    )


def test_online_config_nests_in_the_training_config_parser(corpus):
    """The ``data`` section is a plain dataclass the trainer's parser validates as it is; the
    checks that need the augmentation config name the key."""
    from pyspk.augment.config import AugmentConfig
    from pyspk.online.config import check_online_config
    from pyspk.train import config as C

    dc = C._build(OnlineConfig, {"source": "audio", "kind_weights": {"clean": 2.0}, "streams": 8}, "data.", "x.yaml")
    assert dc.source == "audio" and dc.kind_weights == {"clean": 2.0}
    with pytest.raises(C.ConfigError, match="did you mean 'data.source'"):
        C._build(OnlineConfig, {"sorce": "audio"}, "data.", "x.yaml")
    with pytest.raises(C.ConfigError, match="not one of features, audio, shards"):
        C._build(OnlineConfig, {"source": "wav"}, "data.", "x.yaml")
    probs = check_online_config(dc, AugmentConfig(), "x.yaml")
    assert probs == pytest.approx([2 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6])
    with pytest.raises(ValueError, match="'revreb' is not a kind .*did you mean 'reverb'"):
        check_online_config(OnlineConfig(kind_weights={"revreb": 1.0}), AugmentConfig(), "x.yaml")


def test_shards_cli_writes_wav_members_when_asked(corpus, tmp_path):
    import subprocess
    import sys
    import tarfile

    out = tmp_path / "wav_shards"
    p = subprocess.run(
        [sys.executable, "-m", "pyspk.bin.shards", "--shard-size", "6", "--format", "wav", str(corpus.data), str(out)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    names = [m for t in sorted((out / "shar").glob("recording.*.tar")) for m in tarfile.open(t).getnames()]
    audio = [n for n in names if not n.endswith(".json")]
    assert len(audio) == 12 and all(n.endswith(".wav") for n in audio), names[:4]
