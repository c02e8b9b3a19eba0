"""The data-directory scripts of utils/, run as a recipe runs them (subprocesses with the
repo's utils on PATH and the repo on PYTHONPATH)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from conftest import tool_env

REPO = Path(__file__).resolve().parents[1]
UTT2SPK = {f"s{s}-u{u}": f"s{s}" for s in (1, 2, 3) for u in (1, 2, 3)}


def env() -> dict:
    return tool_env()


def run(*args, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], input=stdin, cwd=cwd, env=env(), capture_output=True, text=True, timeout=60
    )


def put(path: Path, rows) -> Path:
    path.write_text("".join(" ".join(r) + "\n" if not isinstance(r, str) else r + "\n" for r in rows))
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def make_dir(root: Path, name: str = "src", utt2spk=UTT2SPK) -> Path:
    d = root / name
    d.mkdir(parents=True)
    utts = sorted(utt2spk)
    put(d / "utt2spk", [(u, utt2spk[u]) for u in utts])
    spks = sorted(set(utt2spk.values()))
    put(d / "spk2utt", [(s, *[u for u in utts if utt2spk[u] == s]) for s in spks])
    put(d / "wav.scp", [(u, f"{root}/{u}.wav") for u in utts])
    for u in utts:
        (root / f"{u}.wav").touch()
    # a real ark: validate_data_dir reads each entry's header
    kaldiio.save_ark(
        str(root / f"{name}.feats.ark"), {u: np.zeros((2, 3), np.float32) for u in utts}, scp=str(d / "feats.scp")
    )
    put(d / "utt2lang", [(u, "en") for u in utts])
    put(d / "utt2orig", [(u, u) for u in utts])
    put(d / "spk2gender", [(s, "m") for s in spks])
    if utt2spk is UTT2SPK:
        put(d / "trials", ["s1-u1 s1-u2 target", "s1-u1 s2-u1 nontarget", "s3 s3-u3 target"])
    return d


def test_utt2spk_spk2utt_round_trip_and_stdin(tmp_path):
    src = make_dir(tmp_path)
    r = run("utt2spk_to_spk2utt", src / "utt2spk")
    assert r.returncode == 0 and r.stdout == (src / "spk2utt").read_text()
    r2 = run("spk2utt_to_utt2spk", stdin=r.stdout)
    assert r2.returncode == 0 and r2.stdout == (src / "utt2spk").read_text()
    r3 = run("utt2spk_to_spk2utt", "-", stdin="b x\na y\nc x\n")  # unsorted input is fine
    assert r3.stdout == "x b c\ny a\n"


def test_utt2spk_spk2utt_errors_name_the_line(tmp_path):
    r = run("spk2utt_to_utt2spk", put(tmp_path / "s2u", ["a u1 u2", "", "b u3 u1"]))
    assert r.returncode == 1 and f"{tmp_path}/s2u:3: utterance 'u1' already listed on line 1" in r.stderr
    r = run("utt2spk_to_spk2utt", put(tmp_path / "u2s", ["u1 a", "u2 b", "u1 c"]))
    assert r.returncode == 1 and f"{tmp_path}/u2s:3: duplicate key 'u1'" in r.stderr


def test_split_scp_parts_and_job_selection(tmp_path):
    scp = put(tmp_path / "in.scp", [f"u{i:02d} x{i}" for i in range(10)])
    outs = [tmp_path / f"out.{j}" for j in (1, 2, 3)]
    r = run("split_scp", scp, *outs)
    assert r.returncode == 0, r.stderr
    parts = [lines(o) for o in outs]
    assert [len(p) for p in parts] == [3, 4, 3]
    assert sum(parts, []) == lines(scp)  # order kept, nothing lost
    for j in (1, 2, 3):
        one = run("split_scp", "--one-based", "-j", 3, j, scp)
        zero = run("split_scp", "-j", 3, j - 1, scp)
        assert one.stdout.splitlines() == parts[j - 1] == zero.stdout.splitlines()
    r = run("split_scp", "--one-based", "-j", 3, 0, scp)
    assert r.returncode != 0 and "part must be in 1..N" in r.stderr


def test_split_scp_keeps_speakers_together(tmp_path):
    src = make_dir(tmp_path)
    outs = [tmp_path / "a", tmp_path / "b"]
    r = run("split_scp", "--utt2spk", src / "utt2spk", src / "wav.scp", *outs)
    assert r.returncode == 0, r.stderr
    spk_sets = [{line.split()[0].split("-")[0] for line in lines(o)} for o in outs]
    assert spk_sets[0].isdisjoint(spk_sets[1]) and spk_sets[0] | spk_sets[1] == {"s1", "s2", "s3"}
    r = run("split_scp", "--utt2spk", src / "utt2spk", src / "wav.scp", *[tmp_path / f"o{i}" for i in range(4)])
    assert r.returncode == 1 and "cannot split 3 speakers into 4 parts" in r.stderr
    put(tmp_path / "mixed.scp", ["s1-u1 a", "s2-u1 b", "s1-u2 c"])
    r = run("split_scp", "--utt2spk", src / "utt2spk", tmp_path / "mixed.scp", *outs)
    assert r.returncode == 1 and "'s1-u2': utterances of speaker 's1' are not consecutive" in r.stderr


def test_filter_scp(tmp_path):
    src = make_dir(tmp_path)
    ids = put(tmp_path / "ids", ["s2-u1", "s3-u3 anything"])
    r = run("filter_scp", ids, src / "wav.scp")
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["s2-u1", "s3-u3"]
    r = run("filter_scp", "--exclude", ids, src / "wav.scp")
    assert len(r.stdout.splitlines()) == 7 and "s2-u1" not in r.stdout
    r = run("filter_scp", "-f", 2, ids, stdin=(src / "trials").read_text())  # trials by test id
    assert r.stdout.splitlines() == ["s1-u1 s2-u1 nontarget", "s3 s3-u3 target"]
    r = run("filter_scp", "-f", 4, ids, src / "trials")
    assert r.returncode == 1 and f"{src}/trials:1: 3 field(s), -f 4 needs more" in r.stderr


def test_validate_data_dir_script(tmp_path):
    src = make_dir(tmp_path)
    r = run("validate_data_dir", src)
    assert r.returncode == 0 and "9 utterances, 3 speakers, 3 trials" in r.stdout, r.stderr
    (src / "feats.scp").unlink()
    r = run("validate_data_dir", src)
    assert r.returncode == 1 and f"{src}/feats.scp: file not found" in r.stderr
    assert run("validate_data_dir", "--no-feats", src).returncode == 0
    (tmp_path / "s2-u2.wav").unlink()
    r = run("validate_data_dir", "--no-feats", src)
    assert r.returncode == 1 and f"{src}/wav.scp:5: 's2-u2': audio file" in r.stderr
    assert run("validate_data_dir", "--no-feats", "--no-wav", src).returncode == 0


def test_fix_data_dir(tmp_path):
    src = make_dir(tmp_path)
    originals = {n: (src / n).read_text() for n in ("utt2spk", "feats.scp", "utt2lang", "spk2utt")}
    put(src / "utt2spk", list(reversed(lines(src / "utt2spk"))) + ["s1-u1 s1"])  # unsorted, repeated
    originals["utt2spk"] = (src / "utt2spk").read_text()
    put(src / "feats.scp", [ln for ln in lines(src / "feats.scp") if not ln.startswith("s2-u2 ")])
    originals["feats.scp"] = (src / "feats.scp").read_text()
    put(src / "utt2lang", [ln for ln in lines(src / "utt2lang") if not ln.startswith("s3-")])
    originals["utt2lang"] = (src / "utt2lang").read_text()
    r = run("fix_data_dir", src)
    assert r.returncode == 0, r.stderr
    assert f"{src}/utt2spk:10: dropped repeated key 's1-u1' (kept line 9)" in r.stderr
    assert "removed utterance 's2-u2': not in feats.scp" in r.stderr
    assert "removed utterance 's3-u1': not in utt2lang" in r.stderr
    assert lines(src / "utt2spk") == ["s1-u1 s1", "s1-u2 s1", "s1-u3 s1", "s2-u1 s2", "s2-u3 s2"]
    assert lines(src / "spk2utt") == ["s1 s1-u1 s1-u2 s1-u3", "s2 s2-u1 s2-u3"]
    assert lines(src / "spk2gender") == ["s1 m", "s2 m"]
    for table in ("wav.scp", "feats.scp", "utt2orig"):
        assert [ln.split()[0] for ln in lines(src / table)] == ["s1-u1", "s1-u2", "s1-u3", "s2-u1", "s2-u3"]
    for name, text in originals.items():
        assert (src / ".backup" / name).read_text() == text
    assert f"trials not changed, and no longer valid: {src}/trials:3: unknown enrolment id 's3'" in r.stderr
    assert run("validate_data_dir", "--no-wav", src).returncode != 0
    (src / "trials").unlink()
    assert run("validate_data_dir", src).returncode == 0


def test_subset_data_dir_by_number(tmp_path):
    src = make_dir(tmp_path)
    r = run("subset_data_dir", src, 3, tmp_path / "even")
    assert r.returncode == 0, r.stderr
    assert [ln.split()[0] for ln in lines(tmp_path / "even/utt2spk")] == ["s1-u2", "s2-u2", "s3-u2"]
    r = run("subset_data_dir", "--first", src, 4, tmp_path / "first")
    assert [ln.split()[0] for ln in lines(tmp_path / "first/feats.scp")] == ["s1-u1", "s1-u2", "s1-u3", "s2-u1"]
    assert lines(tmp_path / "first/spk2utt") == ["s1 s1-u1 s1-u2 s1-u3", "s2 s2-u1"]
    assert lines(tmp_path / "first/trials") == ["s1-u1 s1-u2 target", "s1-u1 s2-u1 nontarget"]
    for table in ("utt2lang", "utt2orig", "wav.scp"):
        assert len(lines(tmp_path / "first" / table)) == 4
    assert run("validate_data_dir", tmp_path / "first").returncode == 0
    r = run("subset_data_dir", src, 10, tmp_path / "toomany")
    assert r.returncode == 1 and "asked for 10 utterances, it has 9" in r.stderr


def test_subset_data_dir_by_lists(tmp_path):
    src = make_dir(tmp_path)
    r = run("subset_data_dir", "--spk-list", put(tmp_path / "spk", ["s3"]), src, tmp_path / "s3")
    assert r.returncode == 0, r.stderr
    assert lines(tmp_path / "s3/spk2utt") == ["s3 s3-u1 s3-u2 s3-u3"]
    assert lines(tmp_path / "s3/spk2gender") == ["s3 m"] and lines(tmp_path / "s3/trials") == ["s3 s3-u3 target"]
    r = run("subset_data_dir", "--utt-list", put(tmp_path / "utts", ["s2-u2", "s1-u3"]), src, tmp_path / "u")
    assert [ln.split()[0] for ln in lines(tmp_path / "u/utt2orig")] == ["s1-u3", "s2-u2"]
    assert not (tmp_path / "u/trials").exists()  # no trial survives
    r = run("subset_data_dir", "--utt-list", put(tmp_path / "bad", ["s1-u1", "", "nobody"]), src, tmp_path / "x")
    assert r.returncode == 1 and f"{tmp_path}/bad:3: utterance 'nobody' is not in {src}" in r.stderr


def test_combine_data(tmp_path):
    a = make_dir(tmp_path / "A", "a", {u: s for u, s in UTT2SPK.items() if s != "s3"})
    b = make_dir(tmp_path / "B", "b", {"s2-u9": "s2", "s4-u1": "s4"})  # shares speaker s2
    (b / "utt2orig").unlink()
    put(a / "trials", ["s1-u1 s2-u1 nontarget"])
    r = run("combine_data", tmp_path / "all", a, b)
    assert r.returncode == 0, r.stderr
    assert "left out (not in every source): utt2orig" in r.stderr
    assert lines(tmp_path / "all/spk2utt") == ["s1 s1-u1 s1-u2 s1-u3", "s2 s2-u1 s2-u2 s2-u3 s2-u9", "s4 s4-u1"]
    assert len(lines(tmp_path / "all/wav.scp")) == 8 and not (tmp_path / "all/utt2orig").exists()
    assert not (tmp_path / "all/trials").exists()
    assert run("validate_data_dir", tmp_path / "all").returncode == 0
    c = make_dir(tmp_path / "C", "c", {"s1-u2": "s1"})
    r = run("combine_data", tmp_path / "dup", a, c)
    assert r.returncode == 1 and f"{c}/utt2spk: utterance id 's1-u2' is also in {a}/utt2spk" in r.stderr
    put(b / "spk2gender", ["s2 f", "s4 m"])
    r = run("combine_data", tmp_path / "conflict", a, b)
    assert (
        r.returncode == 1 and f"{b}/spk2gender: key 's2' is also in {a}/spk2gender with a different value" in r.stderr
    )


@pytest.mark.parametrize(
    "script",
    [
        "split_scp",
        "filter_scp",
        "validate_data_dir",
        "fix_data_dir",
        "subset_data_dir",
        "combine_data",
        "utt2spk_to_spk2utt",
        "spk2utt_to_utt2spk",
    ],
)
def test_scripts_run_without_path_sh(tmp_path, script):
    """Each script finds the package itself (no PYTHONPATH) and answers --help."""
    e = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [str(REPO / "utils" / script), "--help"], env=e, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert r.returncode == 0 and script in (r.stdout + r.stderr)


# ---- repair tools validate before they write (issue 12, failure 2)


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_fix_data_dir_with_odd_whitespace_in_ids_changes_nothing_and_keeps_its_backup(tmp_path):
    """A U+00A0 inside an utterance id in every table: Python's split() would read it as
    a field separator (Kaldi does not); fix_data_dir must refuse, naming the character
    and the line, and leave every table and the backup of an earlier run as they were."""
    src = make_dir(tmp_path)
    assert run("fix_data_dir", src).returncode == 0  # an earlier good run: its backup
    backup = _snapshot(src / ".backup")
    for name in ("utt2spk", "wav.scp", "utt2lang", "feats.scp", "utt2orig", "spk2utt"):
        (src / name).write_text((src / name).read_text().replace("s2-u2", "s2\u00a0u2"))
    before = _snapshot(src)
    for attempt in (1, 2):
        r = run("fix_data_dir", src)
        assert r.returncode == 1
        assert "odd whitespace U+00A0 NO-BREAK SPACE at column 3" in r.stderr, r.stderr
        assert f"{src}/" in r.stderr and ":5:" in r.stderr, r.stderr
        assert _snapshot(src) == before, f"run {attempt} changed the data dir"
        assert _snapshot(src / ".backup") == backup
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".src.")], "a temp dir was left"
    r = run("validate_data_dir", "--no-wav", src)
    assert r.returncode != 0 and "U+00A0 NO-BREAK SPACE" in r.stderr


def test_fix_data_dir_whose_result_is_invalid_changes_nothing(tmp_path):
    src = make_dir(tmp_path)
    assert run("fix_data_dir", src).returncode == 0
    backup = _snapshot(src / ".backup")
    put(src / "feats.scp", ["zz-other feats.ark:0"])  # no utterance in every table
    before = _snapshot(src)
    r = run("fix_data_dir", src)
    assert r.returncode == 1 and "no utterance left" in r.stderr, r.stderr
    assert _snapshot(src) == before and _snapshot(src / ".backup") == backup


def test_subset_and_combine_write_nothing_when_they_fail_and_replace_a_stale_output(tmp_path):
    src = make_dir(tmp_path)
    out = tmp_path / "out"
    assert run("subset_data_dir", "--first", src, 4, out).returncode == 0
    put(out / "vad.scp", [(u, "x") for u in lines(out / "utt2spk")])  # stale, of an older subset
    assert run("subset_data_dir", "--first", src, 2, out).returncode == 0
    assert len(lines(out / "utt2spk")) == 2 and not (out / "vad.scp").exists()
    before = _snapshot(out)
    put(tmp_path / "list", ["s1-u1", "nobody"])
    r = run("subset_data_dir", "--utt-list", tmp_path / "list", src, out)
    assert r.returncode == 1 and _snapshot(out) == before
    other = make_dir(tmp_path, "other")  # the same utterance ids: an error
    r = run("combine_data", out, src, other)
    assert r.returncode == 1 and "is also in" in r.stderr and _snapshot(out) == before


def test_validate_checks_text_is_utf8_and_keyed_by_utterances(tmp_path):
    src = make_dir(tmp_path)
    (src / "text").write_bytes(b"s1-u1 hello\ns1-u2 caf\xe9\n")
    r = run("validate_data_dir", "--no-wav", src)
    assert r.returncode != 0 and f"{src}/text:2: non-UTF-8 byte" in r.stderr, r.stderr
    (src / "text").write_text("s1-u1 two\u00a0words\ns1-u2 fine\n")  # odd spaces in words are allowed
    r = run("validate_data_dir", "--no-wav", src)
    assert r.returncode == 0, r.stderr
    (src / "text").write_text("s1-u1 a\nzz-u9 b\n")
    r = run("validate_data_dir", "--no-wav", src)
    assert r.returncode != 0 and f"{src}/text:2: 'zz-u9' is not in utt2spk" in r.stderr
