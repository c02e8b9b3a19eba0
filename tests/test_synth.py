"""SynthCeleb (synth/make_synth.py): a tiny corpus is valid, deterministic for any --nj,
balanced, resumable, and bad knobs fail before any audio is written, naming the flag."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "synth"))

import make_synth  # noqa: E402
from synthceleb.config import SynthConfigError, load_config  # noqa: E402
from synthceleb.trials import make_trials  # noqa: E402
from synthceleb.voices import draw_voice  # noqa: E402

from pyspk.data.kaldi_dir import read_table, read_trials, validate_data_dir  # noqa: E402

CONF = ROOT / "conf" / "synth.yaml"
SMALL = ["--num-train-spk", "2", "--num-test-spk", "2", "--utts-per-lang", "2"]


def _make(out: Path, *extra: str, nj: int = 1, seed: int = 7) -> int:
    return make_synth.main(
        ["--out-dir", str(out), "--size", "tiny", "--seed", str(seed), "--nj", str(nj), "--config", str(CONF), *extra]
    )


def _fingerprint(out: Path) -> dict:
    """sha256 of every flac and list file, keyed by path relative to ``out`` (paths in lists made relative)."""
    fp = {}
    for f in sorted((out / "synth_audio").rglob("*.flac")):
        fp[str(f.relative_to(out))] = hashlib.sha256(f.read_bytes()).hexdigest()
    for d in ("synth_train", "synth_test"):
        for f in sorted((out / d).iterdir()):
            fp[f"{d}/{f.name}"] = f.read_text().replace(str(out), "OUT")
    return fp


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    assert _make(out, nj=2) == 0
    return out


def test_tiny_corpus_is_a_valid_kaldi_corpus(tiny):
    cfg = load_config(CONF, "tiny", {})
    train, test = tiny / "synth_train", tiny / "synth_test"
    assert validate_data_dir(train)["speakers"] == cfg.num_train_spk
    counts = validate_data_dir(test)
    assert counts["speakers"] == cfg.num_test_spk
    assert counts["utts"] == cfg.num_test_spk * 2 * cfg.utts_per_lang
    assert (tiny / "synth_audio" / ".done").is_file()
    for d in (train, test):
        utt2spk, utt2lang = read_table(d / "utt2spk"), read_table(d / "utt2lang")
        assert set(read_table(d / "spk2gender").values()) <= {"m", "f"}
        for utt, spk in utt2spk.items():
            assert utt.startswith(spk + "-")
        for spk in set(utt2spk.values()):
            assert {utt2lang[u] for u in utt2spk if utt2spk[u] == spk} == {"en", "cmn"}
    assert not set(read_table(train / "utt2spk").values()) & set(read_table(test / "utt2spk").values())
    for path in list(read_table(test / "wav.scp").values())[:6]:
        x, sr = sf.read(path, dtype="int16")
        info = sf.info(path)
        assert sr == 16000 and info.format == "FLAC" and x.ndim == 1
        assert cfg.min_dur - 1e-3 <= len(x) / sr <= cfg.max_dur + 1e-3
        assert np.abs(x).max() > 1000  # not silent


def test_trial_lists_balanced_and_right_languages(tiny):
    test = tiny / "synth_test"
    utt2spk, utt2lang = read_table(test / "utt2spk"), read_table(test / "utt2lang")
    langs = {"trials_en": ("en", "en"), "trials_cmn": ("cmn", "cmn"), "trials_cross": ("en", "cmn")}
    for name, (le, lt) in langs.items():
        trials = read_trials(test / name, known_enroll=utt2spk, known_test=utt2spk)
        n_target = sum(t.target for t in trials)
        assert n_target > 0 and n_target == len(trials) - n_target
        for t in trials:
            assert (utt2lang[t.enroll], utt2lang[t.test]) == (le, lt)
            assert t.target == (utt2spk[t.enroll] == utt2spk[t.test])
            assert t.enroll != t.test


def test_same_seed_same_bytes_for_any_nj(tiny, tmp_path):
    other = tmp_path / "data"
    assert _make(other, nj=1) == 0
    assert _fingerprint(other) == _fingerprint(tiny)


def test_rerun_after_kill_gives_the_same_corpus(tmp_path):
    out = tmp_path / "data"
    assert _make(out, *SMALL) == 0
    before = _fingerprint(out)
    mtime = (out / "synth_train" / "wav.scp").stat().st_mtime_ns
    assert _make(out, *SMALL) == 0  # up to date: nothing rewritten
    assert (out / "synth_train" / "wav.scp").stat().st_mtime_ns == mtime
    spk_dir = out / "synth_audio" / "tr0001"
    # what a kill leaves: no stamps, some utterances missing, a temp file, no lists
    (out / "synth_audio" / ".done").unlink()
    (spk_dir / ".done").unlink()
    flacs = sorted(spk_dir.glob("*.flac"))
    for f in flacs[1:]:
        f.unlink()
    (spk_dir / ".tr0001-en-001.tmp1234.flac").write_bytes(b"partial")
    (out / "synth_train" / "wav.scp").unlink()
    assert _make(out, *SMALL) == 0
    assert _fingerprint(out) == before
    # a rerun with another seed in the same place remakes the audio
    assert _make(out, *SMALL, seed=8) == 0
    assert _fingerprint(out)[f"synth_audio/tr0001/{flacs[0].name}"] != before[f"synth_audio/tr0001/{flacs[0].name}"]


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--num-train-spk", "0"], "--num-train-spk"),
        (["--num-test-spk", "0"], "--num-test-spk"),
        (["--snr-db", "20,0"], "--snr-db"),
        (["--languages", "en,fr"], "--languages"),
        (["--utts-per-lang", "-1"], "--utts-per-lang"),
        (["--difficulty", "-1"], "--difficulty"),
        (["--rt60", "0.9,0.2"], "--rt60"),
        (["--nj", "0"], "--nj"),
    ],
)
def test_bad_knobs_fail_before_any_audio_naming_the_flag(tmp_path, capsys, args, flag):
    out = tmp_path / "data"
    assert _make(out, *args) == 2
    err = capsys.readouterr().err
    assert flag in err
    assert not out.exists()


def test_misspelled_config_key_names_the_nearest(tmp_path):
    bad = tmp_path / "synth.yaml"
    bad.write_text("num_trian_spk: 3\n")
    with pytest.raises(SynthConfigError, match="num_train_spk"):
        load_config(bad, "tiny", {})


def test_voices_are_per_speaker_and_reproducible():
    a, b = draw_voice(1, "tr0001"), draw_voice(1, "tr0002")
    assert a.variant_text() == draw_voice(1, "tr0001").variant_text()
    assert a.variant_text() != b.variant_text()
    assert a.variant_text() != draw_voice(2, "tr0001").variant_text()
    text = a.variant_text()
    assert text.startswith("language variant\n") and text.count("\nformant ") == 9
    voices = [draw_voice(0, f"s{i}") for i in range(200)]
    pitch = {k: np.median([v.pitch_base for v in voices if v.klass == k]) for k in ("male", "female")}
    assert pitch["male"] < pitch["female"]  # male/female ranges differ as documented


def test_make_trials_balanced_without_duplicates():
    utts = {
        f"s{i}": {"en": [f"s{i}-en-{k}" for k in range(5)], "cmn": [f"s{i}-cmn-{k}" for k in range(5)]}
        for i in range(6)
    }
    rng = np.random.default_rng(0)
    same = make_trials(utts, "en", "en", 100, rng)
    assert sum(t[2] for t in same) == 50 and len(same) == 100
    pairs = {frozenset(t[:2]) for t in same}
    assert len(pairs) == len(same)  # 'a b' and 'b a' never both
    cross = make_trials(utts, "en", "cmn", 10_000, rng)  # capped by the 6*25 target pairs
    assert sum(t[2] for t in cross) == 150 and len(cross) == 300


def test_naive_baseline_and_spectrogram_run_on_the_corpus(tiny, tmp_path):
    import naive_baseline
    import plot_spectrogram

    rows = naive_baseline.run(tiny / "synth_test", lda_train=tiny / "synth_train")
    names = {(r[0], r[1]) for r in rows}
    for trials in ("trials_en", "trials_cmn", "trials_cross"):
        for variant in ("raw", "centered", "level_free", "lda_train"):
            assert (trials, variant) in names
    assert all(0.0 <= r[2] <= 100.0 and r[3] > 0 for r in rows)
    png = plot_spectrogram.plot(tiny / "synth_test", tmp_path / "spec.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
