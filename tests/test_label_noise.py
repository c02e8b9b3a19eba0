"""SynthCeleb's label-noise knob: seeded flips of whole recordings, recorded in a file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "synth"))

from synthceleb.config import SynthConfigError, load_config  # noqa: E402
from synthceleb.label_noise import choose_flips, noisy_labels, write_noisy_dir  # noqa: E402

from pyspk.data.kaldi_dir import read_table, validate_data_dir, write_table  # noqa: E402


def _utt2spk(n_spk=5, per=8):
    return {f"s{s}-u{u}": f"s{s}" for s in range(n_spk) for u in range(per)}


def test_flips_are_seeded_exact_in_count_and_always_wrong():
    u2s = _utt2spk()
    f1, f2 = choose_flips(u2s, 0.1, seed=3), choose_flips(u2s, 0.1, seed=3)
    assert f1 == f2 and len(f1) == 4  # round(0.1 * 40)
    assert all(new != u2s[u] and new in set(u2s.values()) for u, new in f1.items())
    assert choose_flips(u2s, 0.1, seed=4) != f1
    assert choose_flips(u2s, 0.0, seed=3) == {}
    with pytest.raises(ValueError, match="fraction"):
        choose_flips(u2s, 1.0, seed=3)


def test_augmented_copies_follow_their_original():
    clean = _utt2spk()
    combined = dict(clean)
    utt2orig = {u: u for u in clean}
    for u, s in clean.items():
        combined[f"{u}-reverb"] = s
        utt2orig[f"{u}-reverb"] = u
    new_clean, flips_clean = noisy_labels(clean, None, 0.2, 7)
    new_comb, flips_comb = noisy_labels(combined, utt2orig, 0.2, 7)
    assert flips_clean == flips_comb and len(flips_clean) == 8
    for u, (true, wrong) in flips_clean.items():
        assert clean[u] == true and new_clean[u] == wrong
        assert new_comb[u] == new_comb[f"{u}-reverb"] == wrong
    unflipped = [u for u in clean if u not in flips_clean]
    assert all(new_comb[u] == clean[u] for u in unflipped)


def test_write_noisy_dir_copies_features_and_records_flips(tmp_path):
    src = tmp_path / "train"
    src.mkdir()
    u2s = _utt2spk(3, 4)
    write_table(src / "utt2spk", u2s)
    write_table(src / "spk2utt", {s: [u for u in sorted(u2s) if u2s[u] == s] for s in set(u2s.values())})
    write_table(src / "feats.scp", {u: f"/ark/x.ark:{i}" for i, u in enumerate(sorted(u2s))})
    n = write_noisy_dir(src, tmp_path / "noisy", 0.25, seed=1)
    assert n == 3
    dst = tmp_path / "noisy"
    validate_data_dir(dst, check_files=False, need_wav=False)
    assert (dst / "feats.scp").read_text() == (src / "feats.scp").read_text()
    lines = (dst / "label_noise").read_text().split("\n")[:-1]
    new = read_table(dst / "utt2spk")
    assert len(lines) == 3
    for line in lines:
        utt, true, wrong = line.split()
        assert u2s[utt] == true and new[utt] == wrong != true
    assert read_table(src / "utt2spk") == u2s  # the source is untouched
    with pytest.raises(ValueError, match="new dir"):
        write_noisy_dir(src, src, 0.1, seed=1)


def test_synth_knob_is_validated_and_leaves_the_audio_digest_alone():
    base = load_config(None, "tiny", {})
    noisy = load_config(None, "tiny", {"label_noise": 0.1})
    assert noisy.label_noise == 0.1 and noisy.digest() == base.digest()
    with pytest.raises(SynthConfigError, match="--label-noise"):
        load_config(None, "tiny", {"label_noise": 0.7})
