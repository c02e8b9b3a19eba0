"""Issue 28 ("trust no input"), findings 7 and 8 (read-only): a stamp checks the outputs
its stage wrote, a stage checks that the stamps it reads from still hold, and a
read-only tree or a full disk is one line, not a traceback.

Each test drives utils/stamped.sh directly with small shell commands as stages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAMPED = str(REPO / "utils" / "stamped.sh")


def stamped(*args, cwd=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([STAMPED, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def writer(counter: Path, out_dir: Path, size: int = 100_000) -> list:
    """A 'stage' that counts its runs and writes out.ark (random bytes), scores (text) and a log."""
    return [
        "bash",
        "-c",
        f"echo ran >> {counter}; mkdir -p {out_dir}/log; "
        f"head -c {size} /dev/urandom > {out_dir}/out.ark; echo 'a b 0.5' > {out_dir}/scores; "
        f"echo started > {out_dir}/log/x.log",
    ]


def recorded_outputs(stamp: Path) -> dict:
    return json.loads(stamp.read_text().splitlines()[2]).get("outputs")


def one_line_no_traceback(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture
def stage(tmp_path):
    """One finished stage: exp/.done.x with input in.txt, its outputs in exp/."""
    inp, counter, out = tmp_path / "in.txt", tmp_path / "count", tmp_path / "exp"
    inp.write_text("v1\n")
    stamp = out / ".done.x"
    cmd = writer(counter, out)
    r = stamped(stamp, inp, "--", *cmd)
    assert r.returncode == 0 and runs(counter) == 1, r.stderr
    return stamp, inp, counter, cmd


def test_stamp_records_its_outputs_not_its_own_files_logs_or_lock(stage):
    stamp, inp, counter, cmd = stage
    outs = recorded_outputs(stamp)
    assert set(outs) == {str(stamp.parent / "out.ark"), str(stamp.parent / "scores")}
    assert outs[str(stamp.parent / "out.ark")]["size"] == 100_000


def test_truncated_output_redoes_and_dry_run_says_why(stage, tmp_path):
    stamp, inp, counter, cmd = stage
    ark = stamp.parent / "out.ark"
    with open(ark, "r+b") as f:
        f.truncate(60_000)
    ledger = tmp_path / "ledger"
    r = stamped("--dry-run", ledger, stamp, inp, "--", *cmd)
    assert r.returncode == 0 and runs(counter) == 1
    assert f"would redo {stamp} (output {ark} changed: size 100000 -> 60000)" in r.stderr, r.stderr
    r = stamped(stamp, inp, "--", *cmd)
    assert r.returncode == 0 and runs(counter) == 2
    assert f"output {ark} changed: size 100000 -> 60000; redoing {stamp}" in r.stderr
    assert "is up to date" in stamped(stamp, inp, "--", *cmd).stderr and runs(counter) == 2


def test_replaced_output_of_the_same_size_redoes(stage):
    stamp, inp, counter, cmd = stage
    ark = stamp.parent / "out.ark"
    st = ark.stat()
    ark.write_bytes(os.urandom(100_000))  # another file, same size and mtime
    os.utime(ark, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = stamped(stamp, inp, "--", *cmd)
    assert runs(counter) == 2 and f"output {ark} changed: same size, other content" in r.stderr, r.stderr


def test_missing_output_redoes(stage, tmp_path):
    stamp, inp, counter, cmd = stage
    (stamp.parent / "scores").unlink()
    r = stamped("--dry-run", tmp_path / "ledger", stamp, inp, "--", *cmd)
    assert f"would redo {stamp} (output {stamp.parent / 'scores'} is missing)" in r.stderr, r.stderr
    r = stamped(stamp, inp, "--", *cmd)
    assert r.returncode == 0 and runs(counter) == 2


def test_no_false_positives_from_stamps_locks_logs_temp_files_or_new_files(stage):
    stamp, inp, counter, cmd = stage
    d = stamp.parent
    (d / ".lock").write_text("someone else\n")
    (d / "log" / "x.log").write_text("a rewritten log\n")
    (d / "log" / "y.log").write_text("a new log\n")
    (d / ".done.x.7").write_text("a job stamp\n")
    (d / ".scores.tmp123").write_text("a temp file\n")
    (d / "new_file").write_text("added later beside the outputs\n")
    (d / "sub").mkdir()
    (d / "sub" / ".done.y").write_text("a later stage's dir\n")
    for _ in range(2):
        r = stamped(stamp, inp, "--", *cmd)
        assert r.returncode == 0 and runs(counter) == 1 and "is up to date" in r.stderr, r.stderr
    os.utime(d / "out.ark")  # a newer mtime alone is no change
    assert "is up to date" in stamped(stamp, inp, "--", *cmd).stderr and runs(counter) == 1


def test_old_stamp_without_outputs_is_accepted_and_not_rewritten(stage):
    stamp, inp, counter, cmd = stage
    lines = stamp.read_text().splitlines()
    rec = json.loads(lines[2])
    del rec["outputs"]
    old = "\n".join(lines[:2] + [json.dumps(rec)]) + "\n"
    stamp.write_text(old)
    (stamp.parent / "out.ark").write_bytes(b"damaged before outputs were recorded")
    r = stamped(stamp, inp, "--", *cmd)
    assert r.returncode == 0 and runs(counter) == 1 and "is up to date" in r.stderr
    assert stamp.read_text() == old  # later stages fingerprint it: it stays byte for byte


def test_declared_outputs_replace_the_stamp_dir_and_reach_outside_it(tmp_path):
    """Stage 1's shape: the stamp in data/<set>, which also holds stage 0's tables and
    the trials a user edits; its arks in fbank/<set>. Only what it declares is checked."""
    data, fbank, counter = tmp_path / "data/set", tmp_path / "fbank/set", tmp_path / "count"
    data.mkdir(parents=True)
    (data / "wav.scp").write_text("u1 a.wav\n")
    (data / "trials").write_text("u1 u2 target\n")
    stamp = data / ".done.fbank"
    cmd = [
        "bash",
        "-c",
        f"echo ran >> {counter}; mkdir -p {fbank}/log {fbank}/split; "
        f"head -c 50000 /dev/urandom > {fbank}/feats.1.ark; echo s > {fbank}/split/wav.1.scp; "
        f"echo log > {fbank}/log/fbank.1.log; echo done > {fbank}/.done.feats.1; "
        f"echo 'u1 {fbank}/feats.1.ark:9' > {data}/feats.scp",
    ]
    decl = ["--output", fbank, "--output", data / "feats.scp"]
    assert stamped(*decl, stamp, data / "wav.scp", "--", *cmd).returncode == 0
    assert set(recorded_outputs(stamp)) == {
        str(fbank / "feats.1.ark"),
        str(fbank / "split/wav.1.scp"),
        str(data / "feats.scp"),
    }
    (data / "trials").write_text("u1 u2 nontarget\n")  # not this stage's: no redo
    (fbank / "log/fbank.1.log").write_text("rewritten\n")
    r = stamped(*decl, stamp, data / "wav.scp", "--", *cmd)
    assert "is up to date" in r.stderr and runs(counter) == 1, r.stderr
    with open(fbank / "feats.1.ark", "r+b") as f:
        f.truncate(10)
    r = stamped(*decl, stamp, data / "wav.scp", "--", *cmd)
    assert runs(counter) == 2 and f"output {fbank / 'feats.1.ark'} changed: size 50000 -> 10" in r.stderr


def test_declared_output_pattern(tmp_path):
    counter, stamp = tmp_path / "count", tmp_path / "data/comb/.done.augment"
    cmd = [
        "bash",
        "-c",
        f"echo ran >> {counter}; mkdir -p {tmp_path}/fbank/tr_reverb {tmp_path}/data/comb; "
        f"echo r > {tmp_path}/fbank/tr_reverb/feats.1.ark; echo c > {tmp_path}/data/comb/feats.scp",
    ]
    decl = ["--output", f"{tmp_path}/fbank/tr_*", "--output", stamp.parent]
    assert stamped(*decl, stamp, "--", *cmd).returncode == 0
    assert set(recorded_outputs(stamp)) == {f"{tmp_path}/fbank/tr_reverb/feats.1.ark", str(stamp.parent / "feats.scp")}
    (tmp_path / "fbank/tr_reverb/feats.1.ark").unlink()
    r = stamped(*decl, stamp, "--", *cmd)
    assert runs(counter) == 2 and "output" in r.stderr and "is missing" in r.stderr


# ---- upstream stamps --------------------------------------------------------------


@pytest.fixture
def chain(tmp_path):
    """Stage 6 (scores/.done.score: reads trials, writes scores) and stage 7 (.done.report),
    which reads stage 6 as run.sh does: through the scores dir."""
    trials, counter = tmp_path / "trials", tmp_path / "count"
    trials.write_text("a b target\n")
    s6, s7 = tmp_path / "exp/sys/scores/.done.score", tmp_path / "exp/.done.report"
    cmd6 = ["bash", "-c", f"echo ran6 >> {counter}; cp {trials} {s6.parent}/trials.cosine"]
    cmd7 = ["bash", "-c", f"echo ran7 >> {counter}; cat {s6.parent}/trials.cosine > {s7.parent}/results.md"]
    six = lambda *a: stamped(*a, "--stage", "6", s6, trials, "--", *cmd6)  # noqa: E731
    seven = lambda *a: stamped(*a, "--stage", "7", s7, s6.parent, "--", *cmd7)  # noqa: E731
    assert six().returncode == 0 and seven().returncode == 0 and runs(counter) == 2
    return trials, counter, s6, s7, six, seven


def test_stage_run_alone_refuses_a_stale_upstream_stamp(chain, tmp_path):
    """The repro: a trials edit, then `run.sh --stage 7` alone must not serve the old EER."""
    trials, counter, s6, s7, six, seven = chain
    trials.write_text("a b nontarget\n")
    r = seven()
    line = one_line_no_traceback(r)
    assert r.returncode != 0 and runs(counter) == 2
    assert f"{s6} is out of date (input {trials} changed); run from --stage 6" in line, line
    r = seven("--dry-run", tmp_path / "ledger")
    assert r.returncode == 0 and f"would fail: cannot run {s7}'s stage: {s6} is out of date" in r.stderr
    # a dry run of both stages: 6 is redone, so 7 is too (no "would fail")
    ledger = tmp_path / "ledger2"
    assert "would redo" in six("--dry-run", ledger).stderr
    r = seven("--dry-run", ledger)
    assert f"would redo {s7} (input {s6.parent} is redone by this run" in r.stderr, r.stderr
    # redo 6, then 7 runs
    assert six().returncode == 0 and seven().returncode == 0 and runs(counter) == 4
    assert "nontarget" in (s7.parent / "results.md").read_text()


def test_damaged_upstream_output_is_refused(chain):
    trials, counter, s6, s7, six, seven = chain
    (s6.parent / "trials.cosine").unlink()
    r = seven()
    line = one_line_no_traceback(r)
    assert r.returncode != 0 and f"{s6} is out of date (output {s6.parent / 'trials.cosine'} is missing)" in line


def test_upstream_found_through_a_stamp_input_and_an_output_file_input(tmp_path):
    inp, counter = tmp_path / "in", tmp_path / "count"
    inp.write_text("1")
    s1 = tmp_path / "a/.done.1"
    assert stamped(s1, inp, "--", "bash", "-c", f"echo x > {s1.parent}/final.pt").returncode == 0
    by_stamp = tmp_path / "b/.done.2"
    by_file = tmp_path / "c/.done.3"
    assert stamped(by_stamp, s1, "--", "true").returncode == 0
    assert stamped(by_file, s1.parent / "final.pt", "--", "true").returncode == 0
    inp.write_text("2")
    for s, i in ((by_stamp, s1), (by_file, s1.parent / "final.pt")):
        r = stamped(s, i, "--", "bash", "-c", f"echo ran >> {counter}")
        assert r.returncode == 1 and runs(counter) == 0
        assert f"{s1} is out of date (input {inp} changed); redo the stage that writes it first" in r.stderr


def test_fresh_upstream_and_unrelated_stamps_are_no_obstacle(tmp_path):
    """A data dir holding a stage stamp whose outputs are elsewhere: reading its trials
    (not that stage's output) does not check it; the stage's own stamp is never upstream."""
    d, counter = tmp_path / "data/test", tmp_path / "count"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text("u a.wav\n")
    (d / "trials").write_text("u v target\n")
    s1 = d / ".done.fbank"
    assert (
        stamped(
            "--output", d / "feats.scp", s1, d / "wav.scp", "--", "bash", "-c", f"echo f > {d}/feats.scp"
        ).returncode
        == 0
    )
    (d / "wav.scp").write_text("u b.wav\n")  # stage 1 is now stale
    r = stamped(tmp_path / "exp/.done.score", f"{d}/trials*", "--", "bash", "-c", f"echo ran >> {counter}")
    assert r.returncode == 0 and runs(counter) == 1, r.stderr
    r = stamped("--output", d / "feats.scp", s1, d / "wav.scp", "--", "true")  # its own stamp: just redone
    assert r.returncode == 0 and "redoing" in r.stderr


# ---- read-only trees and full disks -----------------------------------------------


def _can_private_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "mount", "-t", "tmpfs", "none", "/mnt"], capture_output=True)
    return r.returncode == 0


def read_only(tree: Path, *args, cwd=None) -> subprocess.CompletedProcess:
    """stamped.sh ARGS with ``tree`` read-only: a read-only bind mount in a private mount
    namespace as root (who writes through a chmod), else chmod a-w for the call."""
    if os.geteuid() == 0:
        if not _can_private_mount():
            pytest.skip("running as root without a private mount namespace: no way to make a read-only tree")
        script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'
        return subprocess.run(
            ["unshare", "-m", "bash", "-c", script, "-", str(tree), STAMPED, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
        )
    dirs = [Path(r) for r, _, _ in os.walk(tree)]
    for x in dirs:
        x.chmod(0o555)
    try:
        return stamped(*args, cwd=cwd)
    finally:
        for x in dirs:
            x.chmod(0o755)


def test_read_only_tree_up_to_date_is_skipped_with_exit_0(stage, tmp_path):
    stamp, inp, counter, cmd = stage
    r = read_only(tmp_path, stamp, inp, "--", *cmd)
    assert r.returncode == 0 and runs(counter) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{stamp} is up to date; skipping" in r.stderr
    (stamp.parent / ".lock").unlink()  # never locked there: no lock file to open
    r = read_only(tmp_path, stamp, inp, "--", *cmd)
    assert r.returncode == 0 and f"{stamp} is up to date; skipping" in r.stderr, r.stderr
    assert not (stamp.parent / ".lock").exists()


def test_read_only_tree_out_of_date_is_one_line(stage, tmp_path):
    stamp, inp, counter, cmd = stage
    inp.write_text("v2\n")
    r = read_only(tmp_path, stamp, inp, "--", *cmd)
    line = one_line_no_traceback(r)
    assert r.returncode != 0 and runs(counter) == 1
    assert f"cannot write {stamp.parent} (read-only" in line
    assert f"{stamp} would be redone (input {inp} changed)" in line
    r = read_only(tmp_path, "--force", "true", stamp, inp, "--", *cmd)
    assert r.returncode != 0 and "would be redone (--force true)" in one_line_no_traceback(r)
    new = tmp_path / "exp/new/.done.y"  # a stage dir that cannot even be made
    r = read_only(tmp_path, new, "--", "true")
    line = one_line_no_traceback(r)
    assert r.returncode != 0 and f"cannot write {new.parent} (read-only" in line and "(no stamp)" in line


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs at tmp_path/disk, mounted in a private mount namespace for each call."""
    if not _can_private_mount():
        pytest.skip("needs root and a private mount namespace for a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()

    def run(shell: str) -> subprocess.CompletedProcess:
        script = f'mount -t tmpfs -o size=64k tmpfs "$1" && cd "$1" && {shell}'
        return subprocess.run(
            ["unshare", "-m", "bash", "-c", script, "-", str(disk)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, S=STAMPED),
        )

    return run


def test_disk_full_while_writing_the_stamp_is_one_line(tiny_disk):
    r = tiny_disk('"$S" out/.done.x -- bash -c "head -c 1M /dev/zero > out/fill 2>/dev/null || true"')
    line = one_line_no_traceback(r)
    assert r.returncode != 0 and "cannot write out/.done.x: no space left on device" in line, line


def test_disk_full_while_writing_the_lock_is_one_line(tiny_disk):
    r = tiny_disk('head -c 1M /dev/zero > fill 2>/dev/null; "$S" out/.done.x -- true')
    line = one_line_no_traceback(r)
    assert r.returncode != 0 and "cannot write out/.lock: no space left on device" in line, line
    assert "out/.done.x would be redone (no stamp)" in line
