"""utils/stamped.sh, the stage-reuse helper every run.sh stage goes through:
`stamped.sh [--force true|false] STAMP [INPUT ...] -- COMMAND ...`."""

from __future__ import annotations

import contextlib
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
    p = subprocess.Popen(
        [
            STAMPED,
            "--force",
            "true",
            str(stamp),
            str(inp),
            "--",
            "bash",
            "-c",
            f"echo ran >> {counter}; touch {started}; sleep 60",
        ],
        start_new_session=True,
    )
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


def test_touch_without_change_is_up_to_date_and_edit_keeping_mtime_redoes(tmp_path):
    """The fingerprint is content: a newer mtime alone is no change, while an edit that
    keeps the old mtime (cp -p, a restored backup) is one."""
    inp, counter, stamp = tmp_path / "wav.scp", tmp_path / "count", tmp_path / ".done.x"
    inp.write_text("a 1\n")
    assert stamped(stamp, inp, "--", *work_command(counter)).returncode == 0
    future = time.time() + 10
    os.utime(inp, (future, future))
    r = stamped(stamp, inp, "--", *work_command(counter))
    assert r.returncode == 0 and runs(counter) == 1 and "up to date" in r.stderr
    st = inp.stat()
    inp.write_text("b 1\n")
    os.utime(inp, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = stamped(stamp, inp, "--", *work_command(counter))
    assert r.returncode == 0 and runs(counter) == 2
    assert f"input {inp} changed; redoing {stamp}" in r.stderr
    inp.write_text("a 1\n")  # back to the content the stamp... of run 1
    assert stamped(stamp, inp, "--", *work_command(counter)).returncode == 0 and runs(counter) == 3
    assert stamped(stamp, inp, "--", *work_command(counter)).returncode == 0 and runs(counter) == 3


def test_file_inside_input_directory_changed_added_or_removed_redoes(tmp_path):
    d, counter, stamp = tmp_path / "xvectors", tmp_path / "count", tmp_path / ".done.x"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x.ark").write_text("1")
    assert stamped(stamp, d, "--", *work_command(counter)).returncode == 0
    assert stamped(stamp, d, "--", *work_command(counter)).returncode == 0 and runs(counter) == 1
    (d / ".lock").write_text("held by someone")  # lock files are not content
    assert stamped(stamp, d, "--", *work_command(counter)).returncode == 0 and runs(counter) == 1
    (d / "sub" / "x.ark").write_text("2")
    r = stamped(stamp, d, "--", *work_command(counter))
    assert runs(counter) == 2 and f"input {d}: sub/x.ark changed" in r.stderr
    (d / "y.scp").write_text("y")
    r = stamped(stamp, d, "--", *work_command(counter))
    assert runs(counter) == 3 and f"input {d}: y.scp is new" in r.stderr
    (d / "y.scp").unlink()
    r = stamped(stamp, d, "--", *work_command(counter))
    assert runs(counter) == 4 and f"input {d}: y.scp was removed" in r.stderr


def test_pattern_input_sees_a_new_matching_file(tmp_path):
    """run.sh gives stage 6 'data/test/trials*': a trials list added later is a change."""
    (tmp_path / "trials_a").write_text("x y target\n")
    counter, stamp = tmp_path / "count", tmp_path / "exp/.done.x"
    pattern = f"{tmp_path}/trials*"
    assert stamped(stamp, pattern, "--", *work_command(counter)).returncode == 0
    assert stamped(stamp, pattern, "--", *work_command(counter)).returncode == 0 and runs(counter) == 1
    (tmp_path / "trials_new").write_text("x z nontarget\n")
    r = stamped(stamp, pattern, "--", *work_command(counter))
    assert runs(counter) == 2 and f"{tmp_path}/trials_new is new" in r.stderr


def test_params_are_part_of_the_fingerprint(tmp_path):
    counter, stamp = tmp_path / "count", tmp_path / ".done.x"
    assert stamped("--param", "seed=1", stamp, "--", *work_command(counter)).returncode == 0
    assert stamped("--param", "seed=1", stamp, "--", *work_command(counter)).returncode == 0
    r = stamped("--param", "seed=2", stamp, "--", *work_command(counter))
    assert runs(counter) == 2 and "param seed was '1', now '2'" in r.stderr


def test_an_input_dir_holding_the_stamp_is_a_usage_error(tmp_path):
    (tmp_path / "out").mkdir()
    r = stamped(tmp_path / "out/.done.x", tmp_path / "out", "--", "true")
    assert r.returncode == 2 and "contains the stamp" in r.stderr


def test_dry_run_runs_nothing_and_propagates_to_stages_reading_a_redone_stamp(tmp_path):
    inp, counter = tmp_path / "in", tmp_path / "count"
    s1, s2, s3 = tmp_path / "a/.done.1", tmp_path / "b/.done.2", tmp_path / "c/.done.3"
    inp.write_text("v1")
    assert stamped(s1, inp, "--", *work_command(counter)).returncode == 0
    assert stamped(s2, s1, "--", *work_command(counter)).returncode == 0
    assert stamped(s3, inp, "--", *work_command(counter)).returncode == 0
    ledger = tmp_path / "ledger"
    inp.write_text("v2")
    r1 = stamped("--dry-run", ledger, s1, inp, "--", *work_command(counter))
    r2 = stamped("--dry-run", ledger, s2, tmp_path / "a", "--", *work_command(counter))
    assert runs(counter) == 3 and s1.is_file()
    assert f"would redo {s1} (input {inp} changed)" in r1.stderr
    assert f"would redo {s2} (input {tmp_path / 'a'} is redone by this run" in r2.stderr
    inp.write_text("v1")
    ledger.unlink()
    r3 = stamped("--dry-run", ledger, s3, inp, "--", *work_command(counter))
    assert f"{s3} is up to date; would skip" in r3.stderr and not ledger.exists()


def test_second_run_of_a_locked_stage_fails_naming_the_holder(tmp_path):
    stamp, started = tmp_path / "exp/.done.x", tmp_path / "started"
    first = subprocess.Popen(
        [STAMPED, str(stamp), "--", "bash", "-c", f"touch {started}; sleep 30"],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        t_end = time.monotonic() + 20
        while not started.exists() and time.monotonic() < t_end:
            time.sleep(0.05)
        r = stamped(stamp, "--", "true")
        assert r.returncode == 1 and not stamp.exists()
        assert f"{stamp.parent} is locked by another run, pid {first.pid}" in r.stderr, r.stderr
        assert "sleep 30" in r.stderr
        r = stamped("--lock-wait", "1", stamp, "--", "true")
        assert r.returncode == 1 and "waited 1 s" in r.stderr
        # waiting long enough gets the lock once the first run is stopped
        waiter = subprocess.Popen(
            [STAMPED, "--lock-wait", "30", str(stamp), "--", "true"], stderr=subprocess.PIPE, text=True
        )
        time.sleep(1.0)
        os.killpg(first.pid, signal.SIGTERM)
        assert waiter.wait(timeout=30) == 0 and stamp.is_file()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)


def test_lock_outlives_a_killed_stamped_sh_while_its_job_lives(tmp_path):
    """SIGKILL of stamped.sh cannot be passed on; the orphaned job still holds the lock,
    and the message names it."""
    stamp, started = tmp_path / "exp/.done.x", tmp_path / "started"
    first = subprocess.Popen(
        [STAMPED, str(stamp), "--", "bash", "-c", f"touch {started}; exec sleep 30"], start_new_session=True
    )
    try:
        t_end = time.monotonic() + 20
        while not started.exists() and time.monotonic() < t_end:
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        r = stamped(stamp, "--", "true")
        assert r.returncode == 1 and f"pid {first.pid} is gone, the lock is held by pid" in r.stderr, r.stderr
        assert "sleep 30" in r.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)


def test_sigterm_to_stamped_sh_alone_reaches_its_command(tmp_path):
    """As `timeout` does: the signal goes to stamped.sh only, not to its process group."""
    stamp, pidfile = tmp_path / ".done.x", tmp_path / "pid"
    p = subprocess.Popen(
        [
            STAMPED,
            str(stamp),
            "--",
            "python",
            "-c",
            f"import os,time; open('{pidfile}','w').write(str(os.getpid())); time.sleep(60)",
        ],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        t_end = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < t_end:
            time.sleep(0.05)
        child = int(pidfile.read_text())
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 128 + signal.SIGTERM and not stamp.exists()
        assert not _alive(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_missing_input_redoes(tmp_path):
    inp, counter, stamp = tmp_path / "in", tmp_path / "count", tmp_path / ".done.x"
    inp.write_text("a")
    assert stamped(stamp, inp, "--", *work_command(counter)).returncode == 0
    inp.unlink()
    r = stamped(stamp, inp, "--", *work_command(counter))
    assert runs(counter) == 2 and f"input {inp} is missing" in r.stderr


def test_stamp_records_the_command(tmp_path):
    stamp = tmp_path / "deep/dir/.done.x"
    assert stamped(stamp, "--", "echo", "a b").returncode == 0
    text = stamp.read_text().splitlines()
    assert text[0].endswith("Z") and text[1].strip() == "echo 'a b'"
    assert sorted(p.name for p in stamp.parent.iterdir()) == [".done.x", ".lock"]  # no temp file left


def test_usage_errors(tmp_path):
    r = stamped(tmp_path / "s", "in", "echo", "x")
    assert r.returncode == 2 and "missing '--'" in r.stderr
    r = stamped(tmp_path / "s", "--")
    assert r.returncode == 2


def test_stamp_of_the_older_time_based_scheme_is_migrated_by_its_own_rule(tmp_path):
    """A tree stamped before content fingerprints is not redone wholesale: a legacy stamp
    newer than every input is kept and gains a fingerprint (mtime and first lines kept);
    one older than an input is redone."""
    inp, counter, stamp = tmp_path / "in", tmp_path / "count", tmp_path / "exp/.done.x"
    inp.write_text("a")
    stamp.parent.mkdir()
    stamp.write_text("2026-01-01T00:00:00Z\necho old\n")
    future = time.time() + 10
    os.utime(stamp, (future, future))
    r = stamped(stamp, inp, tmp_path / "absent", "--", *work_command(counter))
    assert r.returncode == 0 and runs(counter) == 0 and "up to date" in r.stderr
    lines = stamp.read_text().splitlines()
    assert lines[:2] == ["2026-01-01T00:00:00Z", "echo old"] and len(lines) == 3
    assert abs(stamp.stat().st_mtime - future) < 1e-3
    inp.write_text("b")  # now the fingerprint decides
    assert stamped(stamp, inp, tmp_path / "absent", "--", *work_command(counter)).returncode == 0
    assert runs(counter) == 1
    old = tmp_path / "exp/.done.y"
    old.write_text("2026-01-01T00:00:00Z\necho old\n")
    os.utime(old, (1, 1))  # older than its input
    r = stamped(old, inp, "--", *work_command(counter))
    assert runs(counter) == 2 and "records no input fingerprint and an input is newer" in r.stderr


def test_a_stamp_argument_that_is_not_a_stamp_is_refused_and_kept(tmp_path):
    """A caller that shifts its arguments by one (a config where the stamp belongs) must not
    lose that file: stamped.sh removes the stamp before it runs the stage."""
    config = tmp_path / "augment.yaml"
    config.write_text("speed: true\n")
    p = subprocess.run([STAMPED, str(config), str(tmp_path / ".done.x"), "--", "true"], capture_output=True, text=True)
    assert p.returncode == 2
    assert "is not a stamp file name" in p.stderr
    assert config.read_text() == "speed: true\n"
