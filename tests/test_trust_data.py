"""Issue 28, "Trust no input" (data side): each finding replayed on a tiny data dir.

4. a bad ``segments`` line is an error naming file and line, in validate_data_dir and in
   the fbank reader (which also checks it against the recording's real length);
5. fix_data_dir run twice keeps the originals of the first run;
6. a Kaldi table (scp) whose key or path holds whitespace is refused before it is written;
7. a truncated ark is an error naming the ark, the key and the byte offset, when read and
   when validate_data_dir checks feats.scp/vad.scp;
9. utterances in which VAD finds no voiced frame are counted on the fbank tool's stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from conftest import tool_env

from pyspk.data.arkread import ArkError, ArkReader, parse_header
from pyspk.data.dir_edit import commit_staged, fix_data_dir, next_backup_dir
from pyspk.data.kaldi_dir import DataDirError, check_table_entries, validate_data_dir, write_table
from pyspk.data.xvectors import read_vectors, write_vectors
from pyspk.features.ark import job_files, novoice_utts
from pyspk.features.audio import AudioError, read_audio
from pyspk.features.fbank import FbankConfig, compute_fbank
from pyspk.stages.fbank import run_job, write_splits

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def env() -> dict:
    return tool_env()


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], env=env(), capture_output=True, text=True, timeout=300)


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Loud enough for energy VAD to keep frames, int16-representable."""
    x = 0.3 * np.random.default_rng(seed).standard_normal(int(SR * seconds))
    return (np.round(np.clip(x, -1, 1) * 32767) / 32768).astype(np.float32)


def seg_dir(root: Path, line: str, seconds: float = 2.0) -> Path:
    """A data dir of one recording ``rec0`` (``seconds`` long) and one segments ``line``."""
    d = root / "data"
    d.mkdir(parents=True)
    wav = root / "rec0.wav"
    sf.write(wav, noise(seconds), SR, subtype="PCM_16")
    utt = line.split()[0]
    (d / "wav.scp").write_text(f"rec0 {wav}\n")
    (d / "segments").write_text(line + "\n")
    (d / "utt2spk").write_text(f"{utt} spk\n")
    (d / "spk2utt").write_text(f"spk {utt}\n")
    return d


# ---- 4. segments: validate_data_dir and the fbank reader

BAD_SEGMENTS = [
    ("s1 rec0 -1.0 1.5", ["negative start time -1.0"]),
    ("s1 rec0 nan 1.5", ["start time 'nan' is not a finite number"]),
    ("s1 rec0 0 inf", ["end time 'inf' is not a finite number"]),
    ("s1 rec0 abc 1.5", ["start time 'abc' is not a number"]),
    ("s1 rec0 0.5", ["expected 'utterance recording start end' (4 fields), got 3"]),
    ("s1 rec0 0.5 1.0 1", ["(4 fields), got 5"]),
    ("s1 rec0 1.0 0.5", ["end time 0.5 is not after start time 1.0"]),
    ("s1 rec0 1.0 1.0", ["end time 1.0 is not after start time 1.0"]),
    ("s1 rec0 0.5 -2", ["negative end time -2", "only -1"]),
]
PAST_END = [
    ("s1 rec0 2.5 3.0", ["start 2.5 s is at or past the end of the recording (2 s)"]),
    ("s1 rec0 0 60", ["end 60 s is 58 s past the end of the recording (2 s)"]),
]


@pytest.mark.parametrize("line,words", BAD_SEGMENTS + PAST_END)
def test_validate_names_the_bad_segments_line(tmp_path, line, words):
    d = seg_dir(tmp_path, line)
    with pytest.raises(DataDirError) as e:
        validate_data_dir(d)
    msg = str(e.value)
    assert msg.startswith(f"{d}/segments:1: segment 's1'"), msg
    for w in words:
        assert w in msg, msg


def test_validate_segment_recording_must_be_in_wav_scp(tmp_path):
    d = seg_dir(tmp_path, "s1 rec0 0 1")
    (d / "segments").write_text("s1 rec0 0 1\ns2 rec9 0 1\n")
    (d / "utt2spk").write_text("s1 spk\ns2 spk\n")
    (d / "spk2utt").write_text("spk s1 s2\n")
    with pytest.raises(DataDirError, match=r"/segments:2: segment 's2': recording 'rec9' is not in .*wav.scp"):
        validate_data_dir(d)


@pytest.mark.parametrize("line", ["s1 rec0 0 2.3", "s1 rec0 0.5 -1", "s1 rec0 0.5 -1.0", "s1 rec0 0 2"])
def test_validate_accepts_kaldi_overshoot_and_end_minus_one(tmp_path, line):
    assert validate_data_dir(seg_dir(tmp_path, line))["utts"] == 1


def test_validate_cli_names_file_and_line_of_a_segment(tmp_path):
    d = seg_dir(tmp_path, "s1 rec0 -1.0 1.5")
    r = run("validate_data_dir", "--no-feats", d)
    assert r.returncode == 1 and f"{d}/segments:1: segment 's1': negative start time" in r.stderr, r.stderr
    # without audio checks the times are still checked; the recording's length is not
    (d / "segments").write_text("s1 rec0 0 60\n")
    assert run("validate_data_dir", "--no-feats", "--no-wav", d).returncode == 0
    assert run("validate_data_dir", "--no-feats", d).returncode == 1


def _fbank_job(d: Path, fb: Path):
    write_splits(d, fb.resolve(), 1)
    run_job(d, fb, 1, FbankConfig())
    return dict(kaldiio.load_scp(str(job_files(fb, 1)["scp"])))


@pytest.mark.parametrize("line,words", BAD_SEGMENTS)
def test_fbank_reader_refuses_a_malformed_segment_naming_the_line(tmp_path, line, words):
    d = seg_dir(tmp_path, line)
    with pytest.raises(DataDirError) as e:
        _fbank_job(d, tmp_path / "fb")
    msg = str(e.value)
    assert f"{job_files(tmp_path / 'fb', 1)['segments']}:1: segment 's1'" in msg, msg
    for w in words:
        assert w in msg, msg
    assert not job_files(tmp_path / "fb", 1)["ark"].exists()


@pytest.mark.parametrize("line,words", PAST_END)
def test_fbank_reader_checks_the_real_recording_length(tmp_path, line, words):
    d = seg_dir(tmp_path, line)
    with pytest.raises(AudioError) as e:
        _fbank_job(d, tmp_path / "fb")
    assert e.value.utt == "s1" and str(tmp_path / "rec0.wav") in e.value.source
    for w in words:
        assert w in str(e.value), e.value


@pytest.mark.parametrize("end", ["2.3", "-1"])
def test_fbank_reader_clips_within_half_a_second_and_reads_to_the_end_with_minus_one(tmp_path, end):
    d = seg_dir(tmp_path, f"s1 rec0 0.5 {end}")
    feats = _fbank_job(d, tmp_path / "fb")
    rec = read_audio("r", str(tmp_path / "rec0.wav"), SR)
    np.testing.assert_array_equal(feats["s1"], compute_fbank(rec[8000:], SR))


def test_fbank_cli_fails_on_a_negative_start(tmp_path):
    """The issue's replay: exit 0 and the recording's last 0.24 s before."""
    d = seg_dir(tmp_path, "s1 rec0 -1.0 1.5")
    r = run(
        sys.executable, "-m", "pyspk.bin.fbank", "--nj", "1", "--cmd", REPO / "utils" / "run.pl", d, tmp_path / "fb"
    )
    assert r.returncode == 1, r.stderr
    assert "segments.1:1: segment 's1': negative start time -1.0" in r.stderr, r.stderr
    assert not (d / "feats.scp").exists()


@pytest.mark.slow
def test_fbank_cli_shows_why_a_job_failed_on_the_console(tmp_path):
    """A segment that only the decoded audio shows to be bad fails in its job: the driver's one
    line names the log and repeats what the job said, so the reason is on the console."""
    d = seg_dir(tmp_path, "s1 rec0 0.0 60.0")
    r = run(
        sys.executable, "-m", "pyspk.bin.fbank", "--nj", "1", "--cmd", REPO / "utils" / "run.pl", d, tmp_path / "fb"
    )
    assert r.returncode == 1, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if "fbank job(s) failed" in ln)
    assert "fbank.1.log" in line and "job said:" in line and "'s1'" in line and "past the end" in line, line


# ---- 5. fix_data_dir keeps the first backup


def _dir(root: Path) -> Path:
    d = root / "d"
    d.mkdir()
    (d / "utt2spk").write_text("b spk\na spk\n")  # unsorted: a repair changes it
    (d / "spk2utt").write_text("spk a b\n")
    (d / "utt2lang").write_text("a en\nb en\n")
    return d


def test_fix_data_dir_twice_keeps_the_originals(tmp_path):
    d = _dir(tmp_path)
    original = (d / "utt2spk").read_text()
    r = run("fix_data_dir", d)
    assert r.returncode == 0 and f"before this run are in {d}/.backup" in r.stdout, r.stdout + r.stderr
    assert (d / ".backup" / "utt2spk").read_text() == original
    assert (d / "utt2spk").read_text() == "a spk\nb spk\n"
    r = run("fix_data_dir", d)
    assert r.returncode == 0, r.stderr
    assert f"before this run are in {d}/.backup.2" in r.stdout, r.stdout
    assert f"as they were before the first run: {d}/.backup" in r.stdout, r.stdout
    assert (d / ".backup" / "utt2spk").read_text() == original  # the originals survive
    assert (d / ".backup.2" / "utt2spk").read_text() == "a spk\nb spk\n"
    assert run("fix_data_dir", d).returncode == 0 and (d / ".backup.3").is_dir()
    assert (d / ".backup" / "utt2spk").read_text() == original


def test_fix_data_dir_library_never_overwrites_a_backup(tmp_path):
    d = _dir(tmp_path)
    assert next_backup_dir(d) == d / ".backup"
    fix_data_dir(d)
    assert next_backup_dir(d) == d / ".backup.2"
    before = (d / ".backup" / "utt2spk").read_bytes()
    (d / "utt2spk").write_text("b spk\na spk\n")
    with pytest.raises(DataDirError, match=r"\.backup: a backup is already there; not overwriting it"):
        fix_data_dir(d, backup=d / ".backup")
    assert (d / ".backup" / "utt2spk").read_bytes() == before
    assert (d / "utt2spk").read_text() == "b spk\na spk\n"  # nothing changed
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(DataDirError):
        commit_staged(tmp_path, d, backup=d / ".backup")


# ---- 6. whitespace in a key or a path of an scp


def test_write_vectors_refuses_a_key_with_a_space_before_writing(tmp_path):
    ark, scp = tmp_path / "x.ark", tmp_path / "x.scp"
    with pytest.raises(DataDirError, match=r"key 'my file\.wav' is empty or contains whitespace"):
        write_vectors(ark, scp, {"ok.wav": np.ones(3), "my file.wav": np.ones(3)})
    assert not ark.exists() and not scp.exists()
    with pytest.raises(DataDirError, match=r"path '.*my dir/x\.ark' contains whitespace"):
        write_vectors(tmp_path / "my dir" / "x.ark", tmp_path / "x.scp", {"a": np.ones(3)})
    assert not (tmp_path / "my dir").exists() and not scp.exists()
    with pytest.raises(DataDirError, match="U\\+00A0|whitespace"):
        check_table_entries("t", ["a\u00a0b"])
    with pytest.raises(DataDirError, match="whitespace"):
        write_table(tmp_path / "utt2spk", {"a b": "s"})


def test_embed_cli_refuses_a_path_with_a_space_before_any_work(tmp_path, capsys):
    from pyspk.bin.embed import main

    wav = tmp_path / "a b.wav"
    sf.write(wav, noise(1.0), SR)
    out = tmp_path / "o.ark"
    assert main(["--model", str(tmp_path / "no-model.pt"), "--out-ark", str(out), str(wav)]) == 1
    err = capsys.readouterr().err
    assert f"key '{wav}' is empty or contains whitespace" in err, err
    assert not out.exists() and not out.with_suffix(".scp").exists()
    assert (
        main(
            ["--model", str(tmp_path / "no-model.pt"), "--out-ark", str(tmp_path / "o p.ark"), str(tmp_path / "x.wav")]
        )
        == 1
    )
    assert "contains whitespace" in capsys.readouterr().err


def test_fbank_job_refuses_an_output_dir_with_a_space(tmp_path):
    d = seg_dir(tmp_path, "s1 rec0 0 1")
    fb = tmp_path / "fb dir"
    with pytest.raises(DataDirError, match=r"path '.*fb dir/feats\.1\.ark' contains whitespace"):
        _fbank_job(d, fb)
    assert not job_files(fb, 1)["ark"].exists() and not job_files(fb, 1)["scp"].exists()


@pytest.mark.parametrize("name", ["fb dir", "fb,dir"])
def test_fbank_cli_refuses_an_output_dir_an_scp_cannot_hold_before_any_job(tmp_path, name):
    """A space is cut by the scp reader, a comma by the ark,scp: specifier (which would write
    elsewhere): one line from the driver, no job started, nothing made under the output dir."""
    d = seg_dir(tmp_path, "s1 rec0 0 1")
    r = run(
        sys.executable, "-m", "pyspk.bin.fbank", "--nj", "1", "--cmd", REPO / "utils" / "run.pl", d, tmp_path / name
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and f"{name}" in r.stderr and "nothing was written" in r.stderr, r.stderr
    assert not (tmp_path / name).exists() and not (tmp_path / "fb").exists()
    assert not (d / "feats.scp").exists()


# ---- 7. truncated or corrupt arks: named when read, and by validate_data_dir


def _vectors(tmp_path: Path):
    ark, scp = tmp_path / "xvector.ark", tmp_path / "xvector.scp"
    write_vectors(ark, scp, {k: np.arange(4, dtype=np.float32) + i for i, k in enumerate("abc")})
    offsets = {ln.split()[0]: int(ln.rsplit(":", 1)[1]) for ln in scp.read_text().splitlines()}
    return ark, scp, offsets


def test_read_vectors_of_a_truncated_ark_names_scp_line_ark_key_and_offset(tmp_path):
    ark, scp, off = _vectors(tmp_path)
    assert list(read_vectors(scp)) == ["a", "b", "c"]
    os.truncate(ark, ark.stat().st_size - 3)  # the last vector's data cut
    with pytest.raises(ArkError) as e:
        read_vectors(scp)
    msg = str(e.value)
    assert msg.startswith(f"{scp}:3: {ark}: key 'c' at byte {off['c']}: truncated"), msg
    os.truncate(ark, off["c"] + 6)  # inside its header
    with pytest.raises(ArkError, match=rf"{scp}:3: {ark}: key 'c' at byte {off['c']}: FV header cut short"):
        read_vectors(scp)
    scp.write_text(scp.read_text().replace(f":{off['c']}", ":9999"))  # an offset past the end
    with pytest.raises(ArkError, match=rf"{scp}:3: {ark}: key 'c' at byte 9999: no Kaldi object here: the file ends"):
        read_vectors(scp)


def test_array_reader_names_ark_key_and_offset(tmp_path):
    ark = tmp_path / "feats.ark"
    kaldiio.save_ark(
        str(ark),
        {"u1": np.ones((5, 3), np.float32), "u2": np.ones((7, 3), np.float32)},
        scp=str(tmp_path / "feats.scp"),
    )
    spec = (tmp_path / "feats.scp").read_text().splitlines()[1].split()[1]
    pos = int(spec.rsplit(":", 1)[1])
    assert ArkReader()(spec, "u2").shape == (7, 3)
    os.truncate(ark, ark.stat().st_size - 1)
    with pytest.raises(ArkError, match=rf"^{ark}: key 'u2' at byte {pos}: truncated: the 7x3 float32 object"):
        ArkReader()(spec, "u2")
    with pytest.raises(ArkError, match=rf"^{ark}: at byte {pos}: truncated"):
        ArkReader()(spec)  # no key given: ark and offset still named
    data = bytearray(ark.read_bytes())
    data[pos : pos + 5] = b"XXXXX"  # not a Kaldi object: kaldiio's error, named
    ark.write_bytes(bytes(data))
    with pytest.raises(ArkError, match=rf"^{ark}: key 'u2' at byte {pos}: cannot read"):
        ArkReader()(spec, "u2")
    with pytest.raises(ArkError, match=r"key 'u9' at byte 0: the ark does not exist"):
        ArkReader()(f"{tmp_path}/none.ark:0", "u9")
    head = bytearray(ark.read_bytes()[:32])
    assert parse_header(bytes(head[head.index(b"\0B") :])) is not None
    neg = head[head.index(b"\0B") :][:15]
    neg[6:10] = (-5).to_bytes(4, "little", signed=True)
    assert parse_header(bytes(neg)) is None  # a negative dimension is corrupt


def _feats_dir(tmp_path: Path, compress: int = 0, vad: bool = True) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    utts = ["u1", "u2", "u3"]
    mats = {u: np.random.default_rng(i).standard_normal((20 + i, 4)).astype(np.float32) for i, u in enumerate(utts)}
    kw = {"compression_method": compress} if compress else {}
    kaldiio.save_ark(str(tmp_path / "feats.ark"), mats, scp=str(d / "feats.scp"), **kw)
    if vad:
        kaldiio.save_ark(
            str(tmp_path / "vad.ark"),
            {u: np.ones(m.shape[0], np.float32) for u, m in mats.items()},
            scp=str(d / "vad.scp"),
        )
    write_table(d / "utt2spk", {u: "spk" for u in utts})
    write_table(d / "spk2utt", {"spk": utts})
    return d


def test_validate_names_the_scp_line_of_a_truncated_ark(tmp_path):
    d = _feats_dir(tmp_path)
    ark = tmp_path / "feats.ark"
    assert validate_data_dir(d, need_wav=False, need_feats=True)["utts"] == 3
    os.truncate(ark, ark.stat().st_size - 1)
    with pytest.raises(DataDirError) as e:
        validate_data_dir(d, need_wav=False, need_feats=True)
    msg = str(e.value)
    assert msg.startswith(f"{d}/feats.scp:3: 'u3': {ark} at byte "), msg
    assert "past the end of the file" in msg and "truncated" in msg, msg
    r = run("validate_data_dir", "--no-wav", d)
    assert r.returncode == 1 and f"{d}/feats.scp:3: 'u3'" in r.stderr, r.stderr
    # checked only where asked: the staged checks of the repair tools read no ark
    assert validate_data_dir(d, check_files=False, need_wav=False)["utts"] == 3
    scp = (d / "feats.scp").read_text().splitlines()
    scp[1] = scp[1].rsplit(":", 1)[0] + ":99999"
    (d / "feats.scp").write_text("\n".join(scp) + "\n")
    with pytest.raises(DataDirError, match=r"feats.scp:2: 'u2': offset 99999 is at or past the end of .*feats.ark"):
        validate_data_dir(d, need_wav=False)
    os.truncate(ark, 10)
    with pytest.raises(DataDirError, match=r"feats.scp:1: 'u1': .*feats.ark at byte 3: FM header cut short"):
        validate_data_dir(d, need_wav=False)
    ark.unlink()
    with pytest.raises(DataDirError, match=r"feats.scp:1: 'u1': ark '.*feats.ark' does not exist"):
        validate_data_dir(d, need_wav=False)


def test_validate_checks_vad_scp_and_its_frame_counts(tmp_path):
    d = _feats_dir(tmp_path)
    lines = (d / "vad.scp").read_text().splitlines()
    (d / "vad.scp").write_text("\n".join([lines[0], lines[2].replace("u3", "u2", 1), lines[2]]) + "\n")
    with pytest.raises(DataDirError, match=r"vad.scp:2: 'u2' has 22 VAD frames, feats.scp's matrix has 21"):
        validate_data_dir(d, need_wav=False)
    vad = tmp_path / "vad.ark"
    (d / "vad.scp").write_text("\n".join(lines) + "\n")
    os.truncate(vad, vad.stat().st_size - 4)
    with pytest.raises(DataDirError, match=rf"{d}/vad.scp:3: 'u3': {vad} at byte \d+: the FV object"):
        validate_data_dir(d, need_wav=False)


@pytest.mark.parametrize("compress,kind", [(2, "CM"), (3, "CM2"), (5, "CM3")])  # kaldiio's method numbers
def test_validate_knows_the_size_of_compressed_matrices(tmp_path, compress, kind):
    """Kaldi's own feats are often compressed (CM, CM2, CM3): the size check is exact for them too."""
    d = _feats_dir(tmp_path, compress=compress, vad=False)
    assert validate_data_dir(d, need_wav=False)["utts"] == 3
    ark = tmp_path / "feats.ark"
    os.truncate(ark, ark.stat().st_size - 1)
    with pytest.raises(DataDirError, match=rf"feats.scp:3: 'u3': .* the {kind} object .* past the end of the file"):
        validate_data_dir(d, need_wav=False)


# ---- 9. utterances with no voiced frame are counted on the console


@pytest.mark.slow
def test_fbank_cli_counts_silent_utterances_on_stderr(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    sf.write(tmp_path / "speech.wav", noise(1.0), SR, subtype="PCM_16")
    sf.write(tmp_path / "silence.wav", np.zeros(5 * SR, np.float32), SR, subtype="PCM_16")
    (d / "wav.scp").write_text(f"a-silence {tmp_path / 'silence.wav'}\na-speech {tmp_path / 'speech.wav'}\n")
    (d / "utt2spk").write_text("a-silence a\na-speech a\n")
    (d / "spk2utt").write_text("a a-silence a-speech\n")
    conf = tmp_path / "fbank.yaml"
    conf.write_text("vad:\n  enabled: true\n")
    fb = tmp_path / "fb"
    r = run(
        sys.executable,
        "-m",
        "pyspk.bin.fbank",
        "--config",
        conf,
        "--nj",
        "1",
        "--cmd",
        REPO / "utils" / "run.pl",
        d,
        fb,
    )
    assert r.returncode == 0, r.stderr
    assert f"1 utterance(s) of {d} have no voiced frame (VAD kept none), e.g. 'a-silence'" in r.stderr, r.stderr
    assert job_files(fb, 1)["novoice"].read_text() == "a-silence\n"
    assert novoice_utts(d) == ["a-silence"]
    job_files(fb, 1)["novoice"].unlink()  # a job from before the lists: read from vad.ark
    assert novoice_utts(d) == ["a-silence"]
    assert "with no voiced frame" in (fb / "log" / "fbank.1.log").read_text()
