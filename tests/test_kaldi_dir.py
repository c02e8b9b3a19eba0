"""pyspk.data.kaldi_dir: every bad input of a data directory or trials file gives an
error naming the file and the line; readers and writers round-trip; writes are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from pyspk.data.kaldi_dir import (
    DataDir,
    DataDirError,
    read_spk2utt,
    read_table,
    read_trials,
    spk2utt_to_utt2spk,
    utt2spk_to_spk2utt,
    validate_data_dir,
    write_table,
    write_trials,
)

UTT2SPK = {"a1-u1": "a1", "a1-u2": "a1", "b2-u1": "b2", "b2-u2": "b2", "c3-u1": "c3"}


def make_dir(root: Path, feats: bool = False) -> Path:
    """A valid data dir whose wav.scp points at (empty) files that exist."""
    d = root / "data"
    d.mkdir(parents=True)
    (root / "wav").mkdir()
    for u in UTT2SPK:
        (root / "wav" / f"{u}.wav").touch()
    write_table(d / "utt2spk", UTT2SPK)
    write_table(d / "spk2utt", utt2spk_to_spk2utt(UTT2SPK))
    write_table(d / "wav.scp", {u: str(root / "wav" / f"{u}.wav") for u in UTT2SPK})
    write_table(d / "utt2lang", {u: "en" for u in UTT2SPK})
    if feats:  # a real ark: validate_data_dir reads each entry's header
        mats = {u: np.zeros((3 + i, 4), np.float32) for i, u in enumerate(UTT2SPK)}
        kaldiio.save_ark(str(root / "feats.1.ark"), mats, scp=str(d / "feats.scp"))
    write_trials(d / "trials", [("a1-u1", "a1-u2", True), ("a1-u1", "b2-u1", False), ("b2", "c3-u1", False)])
    return d


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def put(path: Path, text_lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in text_lines))


def expect_error(d: Path, where: str, *words: str, **kw) -> str:
    with pytest.raises(DataDirError) as e:
        validate_data_dir(d, **kw)
    msg = str(e.value)
    assert msg.startswith(where), msg
    for w in words:
        assert w in msg, msg
    return msg


def test_valid_dir_counts(tmp_path):
    d = make_dir(tmp_path, feats=True)
    assert validate_data_dir(d, need_feats=True) == {"utts": 5, "speakers": 3, "trials": 3}


def test_unsorted_keys(tmp_path):
    d = make_dir(tmp_path)
    ls = lines(d / "utt2lang")
    ls[1], ls[2] = ls[2], ls[1]
    put(d / "utt2lang", ls)
    expect_error(d, f"{d}/utt2lang:3:", "not sorted", "'a1-u2' comes after 'b2-u1' (line 2)")


def test_unsorted_line_number_counts_blank_lines(tmp_path):
    d = make_dir(tmp_path)
    ls = lines(d / "utt2spk")
    put(d / "utt2spk", [ls[0], "", ls[2], ls[1]] + ls[3:])
    expect_error(d, f"{d}/utt2spk:4:", "not sorted")


def test_duplicate_keys(tmp_path):
    d = make_dir(tmp_path)
    ls = lines(d / "wav.scp")
    put(d / "wav.scp", ls[:2] + [ls[1]] + ls[2:])
    expect_error(d, f"{d}/wav.scp:3:", "duplicate key 'a1-u2' (first on line 2)")


def test_duplicate_keys_when_order_not_checked(tmp_path):
    put(tmp_path / "t", ["b x", "a y"])
    assert list(read_table(tmp_path / "t", check_sorted=False)) == ["b", "a"]  # order as given
    put(tmp_path / "t", ["b x", "a y", "b z"])
    with pytest.raises(DataDirError, match=r"/t:3: duplicate key 'b' \(first on line 1\)"):
        read_table(tmp_path / "t", check_sorted=False)


def test_spk2utt_disagrees_with_utt2spk(tmp_path):
    d = make_dir(tmp_path)
    put(d / "spk2utt", ["a1 a1-u1 a1-u2", "b2 b2-u1", "c3 c3-u1"])
    expect_error(d, f"{d}/spk2utt:2:", "speaker 'b2' disagrees with utt2spk", "missing ['b2-u2']")


def test_spk2utt_names_unknown_speaker(tmp_path):
    d = make_dir(tmp_path)
    put(d / "spk2utt", ["a1 a1-u1 a1-u2", "b2 b2-u1 b2-u2", "c3 c3-u1", "d4 d4-u1"])
    expect_error(d, f"{d}/spk2utt:4:", "speaker 'd4' has no utterance in utt2spk")


def test_spk2utt_missing_a_speaker(tmp_path):
    d = make_dir(tmp_path)
    put(d / "spk2utt", ["a1 a1-u1 a1-u2", "b2 b2-u1 b2-u2"])
    expect_error(d, f"{d}/spk2utt:", "speaker 'c3' of utt2spk (utterance 'c3-u1') is missing")


def test_utt2spk_with_two_speakers_on_a_line(tmp_path):
    d = make_dir(tmp_path)
    ls = lines(d / "utt2spk")
    ls[3] += " extra"
    put(d / "utt2spk", ls)
    expect_error(d, f"{d}/utt2spk:4:", "'b2-u2' has 2 speaker fields")


def test_wav_scp_points_at_missing_file(tmp_path):
    d = make_dir(tmp_path)
    os.remove(tmp_path / "wav" / "b2-u1.wav")
    expect_error(d, f"{d}/wav.scp:3:", "'b2-u1'", "b2-u1.wav' does not exist")
    assert validate_data_dir(d, check_files=False)["utts"] == 5


def test_wav_scp_pipe_naming_missing_file(tmp_path):
    d = make_dir(tmp_path)
    ls = lines(d / "wav.scp")
    ls[4] = f"c3-u1 sox {tmp_path}/nowhere.flac -t wav - |"
    put(d / "wav.scp", ls)
    expect_error(d, f"{d}/wav.scp:5:", "nowhere.flac' does not exist")


def test_wav_scp_missing_an_utterance(tmp_path):
    d = make_dir(tmp_path)
    put(d / "wav.scp", lines(d / "wav.scp")[:-1])
    expect_error(d, f"{d}/wav.scp:", "no entry for 1 key(s), e.g. 'c3-u1'")


def test_table_names_utterance_not_in_utt2spk(tmp_path):
    d = make_dir(tmp_path)
    put(d / "utt2lang", lines(d / "utt2lang") + ["zz-u9 en"])
    expect_error(d, f"{d}/utt2lang:6:", "'zz-u9' is not in utt2spk")


def test_empty_files(tmp_path):
    d = make_dir(tmp_path)
    (d / "utt2lang").write_text("")
    expect_error(d, f"{d}/utt2lang:1:", "file is empty")
    (d / "utt2lang").write_text("\n\n")
    expect_error(d, f"{d}/utt2lang:1:", "file is empty")
    (d / "utt2lang").unlink()
    (d / "trials").write_text("")
    expect_error(d, f"{d}/trials:1:", "trials file is empty")


def test_feats_required_when_asked(tmp_path):
    d = make_dir(tmp_path)
    expect_error(d, f"{d}/feats.scp:", "file not found", need_feats=True)


@pytest.mark.parametrize(
    "line, lineno, words",
    [
        ("a1-u1 zz-u9 target", 2, ["unknown test id 'zz-u9'"]),
        ("zz a1-u2 nontarget", 2, ["unknown enrolment id 'zz'"]),
        ("a1-u1 b2-u1 maybe", 2, ["expected 'enroll test target|nontarget'"]),
        ("a1-u1 a1-u2 target", 2, ["duplicate trial 'a1-u1 a1-u2' (first on line 1)"]),
    ],
)
def test_trials_errors(tmp_path, line, lineno, words):
    d = make_dir(tmp_path)
    put(d / "trials", ["a1-u1 a1-u2 target", line])
    expect_error(d, f"{d}/trials:{lineno}:", *words)


def test_trials_enrolment_by_speaker_is_allowed(tmp_path):
    d = make_dir(tmp_path)
    put(d / "trials_spk", ["a1 b2-u1 nontarget", "c3 c3-u1 target"])
    assert validate_data_dir(d)["trials"] == 5


def test_non_utf8_bytes(tmp_path):
    d = make_dir(tmp_path)
    raw = (d / "utt2spk").read_bytes().split(b"\n")
    raw[2] = raw[2].replace(b"b2", b"b\xff2", 1)
    (d / "utt2spk").write_bytes(b"\n".join(raw))
    expect_error(d, f"{d}/utt2spk:3:", "non-UTF-8 byte b'\\xff' at column 2")
    (d / "trials").write_bytes(b"a1-u1 a1-u2 target\n\xe9 a1-u1 nontarget\n")
    with pytest.raises(DataDirError, match=r"/trials:2: non-UTF-8 byte b'\\xe9' at column 1"):
        read_trials(d / "trials")


def test_segments_make_wav_scp_keyed_by_recording(tmp_path):
    d = make_dir(tmp_path)
    (tmp_path / "wav" / "rec.wav").touch()
    write_table(d / "segments", {u: f"rec {i}.0 {i + 1}.0" for i, u in enumerate(UTT2SPK)})
    write_table(d / "wav.scp", {"rec": str(tmp_path / "wav" / "rec.wav")})
    assert validate_data_dir(d)["utts"] == 5
    write_table(d / "wav.scp", {"other": str(tmp_path / "wav" / "rec.wav")})
    expect_error(d, f"{d}/wav.scp:1:", "'other' is not in segments")


def test_table_round_trip_and_sorting(tmp_path):
    table = {"é-2": "x y", "b": "1", "a": ["p", "q"], "Z": "upper sorts first"}
    write_table(tmp_path / "t", table)
    back = read_table(tmp_path / "t")
    assert list(back) == ["Z", "a", "b", "é-2"]  # C (byte) order
    assert back == {"Z": "upper sorts first", "a": "p q", "b": "1", "é-2": "x y"}
    assert read_spk2utt(tmp_path / "t")["a"] == ["p", "q"]
    assert spk2utt_to_utt2spk(utt2spk_to_spk2utt(UTT2SPK)) == UTT2SPK


def test_trials_round_trip(tmp_path):
    trials = [("a1-u1", "a1-u2", True), ("a1-u1", "b2-u1", False)]
    write_trials(tmp_path / "trials", trials)
    assert [(t.enroll, t.test, t.target) for t in read_trials(tmp_path / "trials")] == trials


def test_datadir_save_load_round_trip(tmp_path):
    d = make_dir(tmp_path)
    dd = DataDir.load(d)
    out = dd.save(tmp_path / "copy")
    for name in ("utt2spk", "spk2utt", "wav.scp", "utt2lang"):
        assert (out / name).read_bytes() == (d / name).read_bytes()
    again = DataDir.load(out)
    assert again.utts == list(UTT2SPK) and again.speakers == ["a1", "b2", "c3"]
    assert again.extra["utt2lang"] == dd.extra["utt2lang"]


@pytest.mark.parametrize("bad", [{"ok": "1", "bad key": "2"}, {"ok": "1", "k": "two\nlines"}, {"k": ""}])
def test_write_table_is_atomic_on_bad_input(tmp_path, bad):
    target = tmp_path / "utt2spk"
    target.write_text("old content\n")
    with pytest.raises(DataDirError, match=str(target)):
        write_table(target, bad)
    assert target.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["utt2spk"]  # no temp file left


def test_write_is_atomic_when_interrupted(tmp_path, monkeypatch):
    """A writer that dies midway (here: the disk 'fills' after the first line) leaves the
    old file whole and no temporary file behind."""
    import pyspk.io as pio

    target = tmp_path / "wav.scp"
    target.write_text("old content\n")
    real_open = open

    class Failing:
        def __init__(self, f):
            self.f, self.n = f, 0

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def writelines(self, ls):
            for line in ls:
                self.f.write(line)
                raise OSError(28, "No space left on device")

    monkeypatch.setattr(pio, "open", lambda *a, **k: Failing(real_open(*a, **k)), raising=False)
    with pytest.raises(OSError, match="(?i)no space left"):
        write_table(target, {"a": "1", "b": "2"})
    assert target.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wav.scp"]
