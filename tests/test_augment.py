"""Augmentation: signals at the intended SNR, reverberation, recipes (ids, utt2orig,
determinism), MUSAN through Lhotse, and the whole stage with its combined directory."""

from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from pyspk.augment.apply import RecipeApplier, read_recipes
from pyspk.augment.config import AugmentConfig
from pyspk.augment.recipes import make_context, write_copy
from pyspk.augment.rir import load_pool, reverberate, simulate_pool
from pyspk.augment.signals import coloured_noise, mix_at_snr, power, synth_music
from pyspk.data.kaldi_dir import read_table, validate_data_dir
from pyspk.features.audio import read_audio
from pyspk.features.fbank import FbankConfig, compute_fbank

REPO = Path(__file__).resolve().parents[1]


def tone(n=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def make_set(root: Path, n_spk=3, n_utt=2) -> Path:
    data = root / "data" / "tr"
    (root / "wav").mkdir(parents=True)
    data.mkdir(parents=True)
    scp, u2s, lang = [], [], []
    for s in range(n_spk):
        for u in range(n_utt):
            utt = f"spk{s}-u{u}"
            p = root / "wav" / f"{utt}.flac"
            sf.write(p, tone(12000, 10 * s + u), 16000)
            scp.append(f"{utt} {p}\n")
            u2s.append(f"{utt} spk{s}\n")
            lang.append(f"{utt} en\n")
    (data / "wav.scp").write_text("".join(scp))
    (data / "utt2spk").write_text("".join(u2s))
    (data / "utt2lang").write_text("".join(lang))
    (data / "utt2dur").write_text("".join(f"{ln.split()[0]} 0.75\n" for ln in u2s))
    return data


def snr_db(clean, mixed):
    return 10 * np.log10(power(clean) / power(mixed - clean))


@pytest.mark.parametrize("snr", [0.0, 5.0, 13.0])
def test_mix_at_snr_is_exact(snr):
    x = tone()
    y = mix_at_snr(x, coloured_noise(x.shape[0], 1.0, np.random.default_rng(0)), snr)
    assert abs(snr_db(x, y) - snr) < 0.01


def test_coloured_noise_and_music():
    rng = np.random.default_rng(0)
    white, brown = coloured_noise(32000, 0.0, rng), coloured_noise(32000, 2.0, rng)
    assert abs(power(white) - 1) < 1e-3 and abs(power(brown) - 1) < 1e-3
    low = lambda x: np.sum(np.abs(np.fft.rfft(x))[:1000] ** 2) / np.sum(np.abs(np.fft.rfft(x)) ** 2)  # noqa
    assert low(brown) > 0.9 > 0.2 > low(white)
    m = synth_music(16000, 16000, np.random.default_rng(1))
    assert m.shape == (16000,) and abs(power(m) - 1) < 1e-3
    np.testing.assert_array_equal(m, synth_music(16000, 16000, np.random.default_rng(1)))


def test_reverb(tmp_path):
    x = tone()
    delta = np.zeros(100, np.float32)
    delta[30] = 0.5
    np.testing.assert_allclose(reverberate(x, delta), x, atol=1e-5)  # direct path only: unchanged
    pool = simulate_pool(tmp_path / "p.npz", 2, 16000, seed=3)
    rirs = load_pool(pool)
    assert len(rirs) == 2 and all(r.ndim == 1 and r.size > 100 for r in rirs)
    np.testing.assert_array_equal(rirs[1], load_pool(simulate_pool(tmp_path / "q.npz", 2, 16000, seed=3))[1])
    y = reverberate(x, rirs[0])
    assert y.shape == x.shape and abs(power(y) / power(x) - 1) < 1e-3
    assert np.corrcoef(x, y)[0, 1] < 0.99  # the signal is changed


def test_recipes_ids_utt2orig_and_determinism(tmp_path):
    data = make_set(tmp_path)
    cfg = AugmentConfig(num_rooms=2, speed=True, speed_factors=[0.9])
    ctx = make_context(data, cfg, 7, tmp_path / "rirs", 16000)
    for kind in cfg.kinds():
        out = write_copy(data, tmp_path / f"tr_{kind}", kind, cfg, 7, ctx)
        validate_data_dir(out)
        u2o, u2s = read_table(out / "utt2orig"), read_table(out / "utt2spk")
        orig_u2s = read_table(data / "utt2spk")
        assert set(u2o.values()) == set(orig_u2s)
        for u, o in u2o.items():
            if kind == "sp0.9":
                assert u == f"sp0.9-{o}" and u2s[u] == f"sp0.9-{orig_u2s[o]}"
            else:
                assert u == f"{o}-{kind}" and u2s[u] == orig_u2s[o]
        assert read_table(out / "utt2lang")[next(iter(u2o))] == "en"
        recipes, _ = read_recipes(out, list(u2o))
        assert {r["kind"] for r in recipes.values()} == {"speed" if kind == "sp0.9" else kind}
        if kind == "babble":
            for u, r in recipes.items():  # other speakers only, 3..min(7, available), own SNRs
                assert 3 <= len(r["background"]) <= 4
                assert all(f"/{orig_u2s[u2o[u]]}-" not in b["source"] for b in r["background"])
                assert all(b["snr"] in cfg.babble_snrs for b in r["background"])
        if kind == "noise":  # 0.75 s utterances: the first noise covers the start, the next would start too late
            for r in recipes.values():
                assert r["events"][0]["start_s"] == 0.0 and r["events"][0]["snr"] in cfg.noise_snrs
    again = write_copy(data, tmp_path / "again", "noise", cfg, 7, ctx)
    assert (again / "aug.scp").read_text() == (tmp_path / "tr_noise" / "aug.scp").read_text()
    other = write_copy(data, tmp_path / "other", "noise", cfg, 8, ctx)
    assert (other / "aug.scp").read_text() != (tmp_path / "tr_noise" / "aug.scp").read_text()


def test_foreground_noise_plan_follows_kaldi(tmp_path):
    """Kaldi --fg-interval: noises one after another from 0 s, 1 s apart, until the utterance ends."""
    data = make_set(tmp_path, n_spk=2, n_utt=3)
    (data / "utt2dur").write_text("".join(f"{u} {7.0 + i}\n" for i, u in enumerate(read_table(data / "utt2spk"))))
    cfg = AugmentConfig(reverb=False, noise_event_s=[0.5, 2.0])
    out = write_copy(data, tmp_path / "tr_noise", "noise", cfg, 4, make_context(data, cfg, 4, tmp_path / "r", 16000))
    durs = {u: float(d) for u, d in read_table(data / "utt2dur").items()}
    kinds, snrs = set(), set()
    for u, r in read_recipes(out, list(read_table(out / "utt2spk")))[0].items():
        ev = r["events"]
        assert ev[0]["start_s"] == 0.0 and len(ev) >= 3  # 7-12 s of audio, noises of 0.5-2 s + 1 s gaps
        for a, b in zip(ev, ev[1:]):
            assert b["start_s"] == pytest.approx(a["start_s"] + a["synth"]["dur_s"] + 1.0, abs=2e-3)
        assert ev[-1]["start_s"] < durs[u[: -len("-noise")]]
        assert ev[-1]["start_s"] + ev[-1]["synth"]["dur_s"] + 1.0 >= durs[u[: -len("-noise")]]
        assert all(0.5 <= e["synth"]["dur_s"] <= 2.0 for e in ev)
        kinds |= {e["synth"]["beta"] for e in ev}
        snrs |= {e["snr"] for e in ev}
    assert snrs == set(cfg.noise_snrs) and kinds == set(cfg.noise_betas)  # drawn per noise, not per utterance


def test_noise_copy_needs_durations(tmp_path):
    data = make_set(tmp_path)
    (data / "utt2dur").unlink()
    cfg = AugmentConfig(reverb=False)
    with pytest.raises(ValueError, match="utt2dur nor utt2num_frames"):
        write_copy(data, tmp_path / "tr_noise", "noise", cfg, 1, make_context(data, cfg, 1, tmp_path / "r", 16000))


def test_applier_hits_the_recipe_snr_and_speed(tmp_path):
    data = make_set(tmp_path)
    x = tone(3 * 16000, 2)
    app = RecipeApplier(16000)
    r = {"kind": "music", "snr": 5.0, "synth": {"seed": 3}}
    y = app("u", x, r)
    assert abs(snr_db(x, y) - 5.0) < 0.01
    np.testing.assert_array_equal(y, app("u", x, r))  # deterministic
    # foreground noises: each at its own SNR over its own span, nothing added in the gaps,
    # the last one cut at the end of the utterance
    events = [
        {"start_s": 0.0, "snr": 0.0, "synth": {"beta": 0.0, "seed": 1, "dur_s": 0.5}},
        {"start_s": 1.5, "snr": 10.0, "synth": {"beta": 2.0, "seed": 2, "dur_s": 0.5}},
        {"start_s": 2.8, "snr": 5.0, "synth": {"beta": 1.0, "seed": 3, "dur_s": 1.0}},
        {"start_s": 3.5, "snr": 5.0, "synth": {"beta": 1.0, "seed": 4, "dur_s": 1.0}},
    ]
    y = app("u", x, {"kind": "noise", "events": events})
    assert y.shape == x.shape
    d = (y - x).astype(np.float64)
    for a, b, snr in ((0, 8000, 0.0), (24000, 32000, 10.0), (44800, 48000, 5.0)):  # the last one cut
        assert abs(10 * np.log10(power(x) / power(d[a:b])) - snr) < 0.01
    assert np.all(d[8000:24000] == 0) and np.all(d[32000:44800] == 0) and np.any(d[44800:] != 0)
    # babble: every background speaker scaled on its own, the mix is their sum
    wav = read_table(data / "wav.scp")
    bg = [{"source": wav["spk1-u0"], "snr": 13.0}, {"source": wav["spk2-u1"], "snr": 20.0}]
    y = app("u", x, {"kind": "babble", "background": bg})
    one = [app("u", x, {"kind": "babble", "background": [b]}) for b in bg]
    assert abs(snr_db(x, one[0]) - 13.0) < 0.01 and abs(snr_db(x, one[1]) - 20.0) < 0.01
    np.testing.assert_allclose(y - x, (one[0] - x) + (one[1] - x), atol=1e-6)
    sp = app("u", x, {"kind": "speed", "factor": 0.9})
    assert abs(sp.shape[0] - x.shape[0] / 0.9) <= 2
    with pytest.raises(ValueError, match="unknown augmentation kind"):
        app("u", x, {"kind": "chorus"})


def test_musan_through_lhotse(tmp_path):
    pytest.importorskip("lhotse")
    musan = tmp_path / "musan"
    for part in ("noise", "music", "speech"):
        (musan / part / "x").mkdir(parents=True)
        sf.write(musan / part / "x" / f"{part}-0001.wav", tone(24000, 5), 16000)
    (musan / "music" / "x" / "ANNOTATIONS").write_text("music-0001 classical N someone\n")  # as in MUSAN
    data = make_set(tmp_path / "d")
    cfg = AugmentConfig(reverb=False)
    ctx = make_context(data, cfg, 1, tmp_path / "rirs", 16000, musan_root=str(musan))
    out = write_copy(data, tmp_path / "tr_music", "music", cfg, 1, ctx)
    recipes, _ = read_recipes(out, list(read_table(out / "utt2spk")))
    r = next(iter(recipes.values()))
    assert r["files"][0]["path"].endswith("music-0001.wav")
    x = tone(40000, 9)  # longer than the noise file: it is looped
    y = RecipeApplier(16000)("u", x, r)
    assert abs(snr_db(x, y) - r["snr"]) < 0.01
    # foreground MUSAN noises keep their own length (1.5 s) and follow each other 1 s apart
    (data / "utt2dur").write_text("".join(f"{u} 5.0\n" for u in read_table(data / "utt2spk")))
    ctx = make_context(data, cfg, 1, tmp_path / "rirs", 16000, musan_root=str(musan))
    out = write_copy(data, tmp_path / "tr_noise", "noise", cfg, 1, ctx)
    r = next(iter(read_recipes(out, list(read_table(out / "utt2spk")))[0].values()))
    assert [e["start_s"] for e in r["events"]] == [0.0, 2.5]
    assert all(e["path"].endswith("noise-0001.wav") for e in r["events"])
    d = RecipeApplier(16000)("u", x, r) - x
    assert abs(10 * np.log10(power(x) / power(d[:24000])) - r["events"][0]["snr"]) < 0.01
    assert np.all(d[24000:40000] == 0)


@pytest.mark.slow
def test_augment_stage_end_to_end(tmp_path):
    run_pl = REPO / "utils" / "run.pl"
    if not run_pl.is_file():
        pytest.skip("utils/run.pl not in the checkout")
    from pyspk.stages.augment import make_augmented
    from pyspk.stages.fbank import make_fbank

    data = make_set(tmp_path)
    fbank_conf = str(REPO / "conf" / "fbank.yaml")
    make_fbank(data, tmp_path / "fbank" / "tr", fbank_conf, 1, str(run_pl))
    cfg = AugmentConfig(num_rooms=3)
    combined = tmp_path / "data" / "tr_combined"
    counts = make_augmented(data, tmp_path / "fbank", combined, cfg, fbank_conf, 1, str(run_pl), seed=5)
    assert counts == {"utts": 30, "speakers": 3, "trials": 0}
    validate_data_dir(combined, need_feats=True)
    u2o = read_table(combined / "utt2orig")
    feats = kaldiio.load_scp(str(combined / "feats.scp"))
    assert set(feats) == set(u2o) == set(read_table(combined / "utt2num_frames"))
    assert read_table(combined / "utt2lang")["spk1-u1-babble"] == "en"
    for u, o in u2o.items():
        assert read_table(combined / "utt2spk")[u] == read_table(data / "utt2spk")[o]
        assert feats[u].shape == feats[o].shape
        if u != o:
            assert np.abs(feats[u] - feats[o]).mean() > 0.05  # augmentation changed the features
    # features of a copy equal recomputing its recipe on the original audio
    recipe = json.loads((tmp_path / "data" / "tr_noise" / "aug.scp").read_text().splitlines()[0].split(" ", 1)[1])
    x = read_audio("u", read_table(data / "wav.scp")["spk0-u0"], 16000)
    want = compute_fbank(RecipeApplier(16000)("u", x, recipe), 16000, FbankConfig.from_yaml(fbank_conf))
    np.testing.assert_allclose(feats["spk0-u0-noise"], want, atol=1e-5)
    # rerun: every job is reused (a queue script that always fails proves none is started)
    assert make_augmented(data, tmp_path / "fbank", combined, cfg, fbank_conf, 1, "false", seed=5) == counts


def test_copies_of_a_segmented_dir(tmp_path):
    data = make_set(tmp_path)
    wav = read_table(data / "wav.scp")
    (data / "wav.scp").write_text("".join(f"{u}-rec {v}\n" for u, v in wav.items()))
    (data / "segments").write_text("".join(f"{u} {u}-rec 0.1 0.6\n" for u in wav))
    cfg = AugmentConfig(reverb=False)
    ctx = make_context(data, cfg, 3, tmp_path / "rirs", 16000)
    out = write_copy(data, tmp_path / "tr_babble", "babble", cfg, 3, ctx)
    validate_data_dir(out)
    seg = read_table(out / "segments")
    assert seg["spk0-u0-babble"] == "spk0-u0-rec 0.1 0.6"
    assert read_table(out / "wav.scp") == read_table(data / "wav.scp")
    r = read_recipes(out, ["spk0-u0-babble"])[0]["spk0-u0-babble"]
    assert all(b["source"] in wav.values() for b in r["background"])


def test_rirs_noises_folder(tmp_path):
    root = tmp_path / "RIRS_NOISES"
    for room in ("smallroom", "mediumroom", "largeroom"):
        d = root / "simulated_rirs" / room / "Room001"
        d.mkdir(parents=True)
        h = np.zeros(800, np.float32)
        h[10], h[200], h[500] = 1.0, 0.5, 0.25
        sf.write(d / "Room001-00001.wav", h, 16000)
    data = make_set(tmp_path / "d")
    cfg = AugmentConfig(noise=False, music=False, babble=False)
    ctx = make_context(data, cfg, 1, tmp_path / "rirs", 16000, rirs_root=str(root))
    assert len(ctx["rirs"]) == 2 and all("largeroom" not in r for r in ctx["rirs"])  # Kaldi v2: small + medium
    out = write_copy(data, tmp_path / "tr_reverb", "reverb", cfg, 1, ctx)
    r = read_recipes(out, ["spk0-u0-reverb"])[0]["spk0-u0-reverb"]
    x = tone()
    y = RecipeApplier(16000)("u", x, r)
    h = np.zeros(800)
    h[10], h[200], h[500] = 1.0, 0.5, 0.25
    want = reverberate(x, h)
    np.testing.assert_allclose(y, want, atol=1e-4)
    assert np.abs(y - x).mean() > 0.01


def _music_by_sines(num_samples, sample_rate, rng):
    """The textbook sine-per-harmonic melody that synth_music computes by complex powers."""
    out = np.zeros(num_samples)
    for _ in range(int(rng.integers(1, 4))):
        pos = 0
        while pos < num_samples:
            dur = int(rng.uniform(0.15, 0.6) * sample_rate)
            n = min(dur, num_samples - pos)
            t = np.arange(n) / sample_rate
            f0 = 440.0 * 2.0 ** (rng.integers(-24, 13) / 12.0)
            decay = rng.uniform(0.3, 0.8)
            note = sum(
                decay**k * np.sin(2 * np.pi * (k + 1) * f0 * t + rng.uniform(0, 2 * np.pi))
                for k in range(int(rng.integers(3, 9)))
                if (k + 1) * f0 < sample_rate / 2
            )
            env = np.minimum(1.0, t / 0.01) * np.exp(-t * rng.uniform(1.0, 6.0))
            out[pos : pos + n] += env * note
            pos += dur
    out -= out.mean()
    return (out / max(np.sqrt(np.mean(out**2)), 1e-12)).astype(np.float32)


def test_music_equals_the_sine_sum():
    for seed, sr in ((1, 16000), (2, 8000), (3, 16000)):
        want = _music_by_sines(3 * sr, sr, np.random.default_rng(seed))
        np.testing.assert_allclose(synth_music(3 * sr, sr, np.random.default_rng(seed)), want, atol=1e-5)


# ---- --subset N: the clean set plus N augmented utterances drawn over every copy (Kaldi v2)


def test_draw_subset_is_uniform_over_every_copy_and_fixed_by_the_seed():
    from pyspk.augment.combine import draw_subset

    copies = {
        "reverb": [f"r{i}" for i in range(30)],
        "noise": [f"n{i}" for i in range(30)],
        "sp0.9": [f"s{i}" for i in range(60)],
    }
    one = draw_subset(copies, 24, seed=3)
    assert sum(map(len, one.values())) == 24 and all(one[k] <= set(copies[k]) for k in copies)
    assert one == draw_subset(copies, 24, seed=3) and one != draw_subset(copies, 24, seed=4)
    assert draw_subset(copies, 0, 3) == draw_subset(copies, 500, 3) == {k: set(v) for k, v in copies.items()}
    # uniform over the 120 utterances, not over the copies: the speed copy, half of them, gets half
    hits = {u: 0 for v in copies.values() for u in v}
    for seed in range(400):
        for drawn in draw_subset(copies, 24, seed).values():
            for u in drawn:
                hits[u] += 1
    share = sum(hits[u] for u in copies["sp0.9"]) / (400 * 24)
    assert abs(share - 0.5) < 0.02
    assert min(hits.values()) > 0.5 * 400 * 24 / 120  # every utterance drawn about 80 times


def test_a_subset_copy_has_the_recipes_of_the_whole_copy(tmp_path):
    from pyspk.augment.recipes import copy_utts

    data = make_set(tmp_path, n_spk=3, n_utt=3)
    cfg = AugmentConfig(num_rooms=2)
    ctx = make_context(data, cfg, 7, tmp_path / "rirs", 16000)
    whole = write_copy(data, tmp_path / "whole", "babble", cfg, 7, ctx)
    keep = {"spk0-u2-babble", "spk2-u0-babble"}
    assert keep <= set(copy_utts(data, "babble", cfg)) and len(copy_utts(data, "babble", cfg)) == 9
    ctx = make_context(data, cfg, 7, tmp_path / "rirs", 16000)  # a new run: a fresh babble pool
    part = write_copy(data, tmp_path / "part", "babble", cfg, 7, ctx, keep=keep)
    validate_data_dir(part)
    assert set(read_table(part / "utt2spk")) == set(read_table(part / "utt2orig")) == keep
    assert read_table(part / "utt2orig") == {u: o for u, o in read_table(whole / "utt2orig").items() if u in keep}
    lines = set((whole / "aug.scp").read_text().splitlines())
    assert set((part / "aug.scp").read_text().splitlines()) <= lines  # the same recipes, byte for byte


@pytest.mark.slow
def test_augment_stage_subset_computes_features_of_the_drawn_utterances_only(tmp_path):
    run_pl = REPO / "utils" / "run.pl"
    if not run_pl.is_file():
        pytest.skip("utils/run.pl not in the checkout")
    from pyspk.augment.combine import draw_subset
    from pyspk.augment.recipes import copy_utts
    from pyspk.stages.augment import make_augmented
    from pyspk.stages.fbank import make_fbank

    data = make_set(tmp_path)
    fbank_conf = str(REPO / "conf" / "fbank.yaml")
    make_fbank(data, tmp_path / "fbank" / "tr", fbank_conf, 1, str(run_pl))
    clean = {n: (data / n).read_text() for n in ("feats.scp", "utt2spk", "utt2num_frames", "vad.scp")}
    cfg = AugmentConfig(num_rooms=3)
    combined = tmp_path / "data" / "tr_combined"
    counts = make_augmented(data, tmp_path / "fbank", combined, cfg, fbank_conf, 1, str(run_pl), seed=5, subset=7)
    assert counts == {"utts": 6 + 7, "speakers": 3, "trials": 0}
    validate_data_dir(combined, need_feats=True)
    u2o = read_table(combined / "utt2orig")
    augmented = {u for u, o in u2o.items() if u != o}
    want = draw_subset({k: copy_utts(data, k, cfg) for k in cfg.kinds()}, 7, 5)
    assert augmented == set().union(*want.values())  # the seed's draw
    assert {u for u, o in u2o.items() if u == o} == set(read_table(data / "utt2spk"))  # the clean set, whole
    assert {n: (data / n).read_text() for n in clean} == clean
    # features were computed for the drawn utterances only
    computed = set()
    for k in cfg.kinds():
        for scp in (tmp_path / "fbank" / f"tr_{k}").glob("feats.*.scp"):
            computed |= set(read_table(scp, check_sorted=False))
    assert computed == augmented
    feats = kaldiio.load_scp(str(combined / "feats.scp"))
    assert set(feats) == set(u2o) == set(read_table(combined / "utt2num_frames"))
    # the same seed again: the same subset, every job reused (a queue that always fails starts none)
    assert make_augmented(data, tmp_path / "fbank", combined, cfg, fbank_conf, 1, "false", seed=5, subset=7) == counts
    assert {u for u, o in read_table(combined / "utt2orig").items() if u != o} == augmented
