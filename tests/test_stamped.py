"""utils/stamped.sh, the stage-reuse helper every run.sh stage goes through:
`stamped.sh [--force true|false] STAMP [INPUT ...] -- COMMAND ...`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAMPED = str(REPO / "utils" / "stamped.sh")


def stamped(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([STAMPED, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def work_command(counter: Path, *extra: str) -> list[str]:
    """A 'stage' that appends one line to ``counter`` each time it really runs."""
    return ["bash", "-c", f"echo ran >> {counter} {' '.join(extra)}"]


def runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_rerun_of_finished_stage_does_no_work(tmp_path):
    inp, counter, stamp = tmp_path / "in.txt", tmp_path / "count", tmp_path / "exp/.done.x"
    inp.write_text("x")
    r = stamped(stamp, inp, "--", *work_command(counter))
    assert r.returncode == 0 and runs(counter) == 1 and stamp.is_file()
    r = stamped(stamp, inp, "--", *work_command(counter))
    assert r.returncode == 0 and runs(counter) == 1
    assert "is up to date; skipping" in r.stderr


def test_command_killed_by_signal_is_redone(tmp_path):
    counter, stamp = tmp_path / "count", tmp_path / ".done.x"
    # The command does part of its work, then dies by SIGKILL before finishing.
    r = stamped(stamp, "--", "bash", "-c", f"echo ran >> {counter}; kill -KILL $$")
    assert r.returncode == 128 + signal.SIGKILL and not stamp.exists()
    assert "no stamp written" in r.stderr
    r = stamped(stamp, "--", *work_command(counter))
    assert r.returncode == 0 and runs(counter) == 2 and stamp.is_file()


def test_stage_killed_midway_is_redone(tmp_path):
    """The whole stage (stamped.sh and its command) is killed from outside, as by ^C or a
    node failure; the stamp of an earlier run must not make the rerun skip."""
    inp, counter, stamp, started = tmp_path / "in", tmp_path / "count", tmp_path / ".done.x", tmp_path / "started"
    inp.write_text("v1")
    assert stamped(stamp, inp, "--", *work_command(counter)).returncode == 0
    # --force true redoes the stage; killed midway, its old stamp must not survive.
    p = subprocess.Popen([STAMPED, "--force", "true", str(stamp), str(inp), "--", "bash", "-c",
                          f"echo ran >> {counter}; touch {started}; sleep 60"], start_new_session=True)
    t_end = time.monotonic() + 20
    while not started.exists() and time.monotonic() < t_end:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=20)
    assert p.returncode != 0 and not stamp.exists()
    r = stamped(stamp, inp, "--", *work_command(counter))
    assert r.returncode == 0 and runs(counter) == 3 and stamp.is_file()


def test_failed_command_leaves_no_stamp_and_keeps_its_status(tmp_path):
    stamp = tmp_path / ".done.x"
    r = stamped(stamp, "--", "bash", "-c", "exit 3")
    assert r.returncode == 3 and not stamp.exists()


def test_force_redoes(tmp_path):
    counter, stamp = tmp_path / "count", tmp_path / ".done.x"
    assert stamped(stamp, "--", *work_command(counter)).returncode == 0
    assert stamped("--force", "false", stamp, "--", *work_command(counter)).returncode == 0
    assert runs(counter) == 1
    assert stamped("--force", "true", stamp, "--", *work_command(counter)).returncode == 0
    assert runs(counter) == 2
    r = stamped("--force", "yes", stamp, "--", *work_command(counter))
    assert r.returncode == 2 and "--force takes true or false" in r.stderr and runs(counter) == 2


def test_input_newer_than_stamp_redoes(tmp_path):
    inp, counter, stamp = tmp_path / "wav.scp", tmp_path / "count", tmp_path / ".done.x"
    inp.write_text("a")
    assert stamped(stamp, inp, "--", *work_command(counter)).returncode == 0
    future = time.time() + 10
    os.utime(inp, (future, future))
    r = stamped(stamp, inp, "--", *work_command(counter))
    assert r.returncode == 0 and runs(counter) == 2
    assert f"input {inp} is newer than {stamp}; redoing" in r.stderr


def test_file_inside_input_directory_newer_redoes(tmp_path):
    d, counter, stamp = tmp_path / "xvectors", tmp_path / "count", tmp_path / ".done.x"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x.ark").write_text("1")
    assert stamped(stamp, d, "--", *work_command(counter)).returncode == 0
    assert stamped(stamp, d, "--", *work_command(counter)).returncode == 0 and runs(counter) == 1
    future = time.time() + 10
    os.utime(d / "sub" / "x.ark", (future, future))
    assert stamped(stamp, d, "--", *work_command(counter)).returncode == 0 and runs(counter) == 2


def test_missing_input_redoes(tmp_path):
    inp, counter, stamp = tmp_path / "in", tmp_path / "count", tmp_path / ".done.x"
    inp.write_text("a")
    assert stamped(stamp, inp, "--", *work_command(counter)).returncode == 0
    inp.unlink()
    r = stamped(stamp, inp, "--", *work_command(counter))
    assert runs(counter) == 2 and "(missing)" in r.stderr


def test_stamp_records_the_command(tmp_path):
    stamp = tmp_path / "deep/dir/.done.x"
    assert stamped(stamp, "--", "echo", "a b").returncode == 0
    text = stamp.read_text().splitlines()
    assert text[0].endswith("Z") and text[1].strip() == "echo a\\ b"
    assert [p.name for p in stamp.parent.iterdir()] == [".done.x"]      # no temp file left


def test_usage_errors(tmp_path):
    r = stamped(tmp_path / "s", "in", "echo", "x")
    assert r.returncode == 2 and "missing '--'" in r.stderr
    r = stamped(tmp_path / "s", "--")
    assert r.returncode == 2
