"""Issue 28, finding 3: a signal to a stage stops every job before the stage lets go of
its lock, and no second run writes beside jobs that still run.

SIGINT/SIGTERM/SIGHUP to run.sh, to utils/stamped.sh or to a pyspk tool reach the queue
script (pyspk/queue.py passes them on and waits for it), which stops every job's process
tree and waits for it (utils/run.pl; slurm.pl and queue.pl cancel and wait for the job
to leave the queue). The stage lock's descriptor is passed down to the queue script and
its jobs, so even a SIGKILL of the tool leaves the stage locked while a job lives.

Slow jobs are made with wav.scp pipes that sleep while a flag file exists; the pids of
those pipe processes (and of their parents, the job processes) are recorded to check
that none outlives the stopped stage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import noise_data_dir, tool_env

REPO = Path(__file__).resolve().parents[1]
UTILS = REPO / "utils"
STAMPED = str(UTILS / "stamped.sh")


def _env(**extra) -> dict:
    return tool_env(PYTHONUNBUFFERED="1", **extra)


def _wait_for(what: str, cond, timeout: float = 60.0) -> None:
    t_end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _pids(path: Path) -> list[int]:
    return [int(w) for w in path.read_text().split()] if path.exists() else []


def _stamped(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([STAMPED, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=_env())


@contextlib.contextmanager
def _session(cmd, **kw):
    """Popen in a session of its own; whatever is left of it is killed at the end."""
    p = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    try:
        yield p
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)


def _slow_data_dir(path: Path, audio: Path, flag: Path, pids: Path, n: int = 2) -> None:
    """:func:`noise_data_dir` whose wav.scp entries are pipes that sleep while ``flag`` exists,
    after writing their pid and their parent's (the job's) to ``pids``."""
    noise_data_dir(path, audio, n)
    rows = [ln.split(maxsplit=1) for ln in (path / "wav.scp").read_text().splitlines()]
    (path / "wav.scp").write_text(
        "".join(
            f"{u} bash -c 'if [ -e {flag} ]; then echo $$ $PPID >> {pids}; sleep 60; fi; cat {f}' |\n" for u, f in rows
        )
    )


# ------------------------------------------------------------------ each tool passes signals on
FAKE_QUEUE = r'''#!/usr/bin/env bash
# A queue script stand-in: records its descriptors and pid, runs until a signal, then
# holds on (as a queue script waiting for its jobs) until the test creates $d/release.
d=$FAKEQ_DIR
stop() {
  echo "$1" >> "$d/signals"
  for _ in $(seq 600); do [ -e "$d/release" ] && break; sleep 0.05; done
  touch "$d/stopped"; exit 1
}
trap 'stop TERM' TERM; trap 'stop INT' INT; trap 'stop HUP' HUP
ls -l /proc/$$/fd/ > "$d/fds"
echo "$@" > "$d/args"
echo $$ > "$d/pid"
for _ in $(seq 1200); do sleep 0.05; done
'''


def _tool_argv(tool: str, tmp_path: Path, fake: Path) -> list[str]:
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    (data / "utt2spk").write_text("s0-u0 s0\ns1-u1 s1\n")
    (data / "spk2utt").write_text("s0 s0-u0\ns1 s1-u1\n")
    (data / "wav.scp").write_text(f"s0-u0 {tmp_path}/a.wav\ns1-u1 {tmp_path}/b.wav\n")
    if tool == "fbank":
        return ["pyspk", "fbank", "--cmd", str(fake), str(data), str(out)]
    (data / "feats.scp").write_text(f"s0-u0 {tmp_path}/f.ark:10\ns1-u1 {tmp_path}/f.ark:900\n")
    (data / "utt2num_frames").write_text("s0-u0 300\ns1-u1 300\n")
    if tool == "augment":
        cfg = tmp_path / "augment.yaml"
        cfg.write_text("reverb: false\nnoise: true\nmusic: false\nbabble: false\nspeed: false\n")
        return [
            "pyspk",
            "augment",
            "--config",
            str(cfg),
            "--cmd",
            str(fake),
            str(data),
            str(tmp_path / "fbank"),
            str(out),
        ]
    model = tmp_path / "final.pt"
    model.write_bytes(b"not read before the jobs run")
    return ["pyspk", "extract", "--cmd", str(fake), str(model), str(data), str(out)]


@pytest.mark.parametrize(
    "tool, sig",
    [
        ("fbank", signal.SIGTERM),
        ("augment", signal.SIGTERM),
        ("extract", signal.SIGTERM),
        ("fbank", signal.SIGINT),
        ("extract", signal.SIGHUP),
    ],
)
def test_a_signal_to_the_stage_reaches_the_queue_script_and_the_lock_outlives_it(tmp_path, tool, sig):
    """stages 1, 2 and 4: the signal reaches the queue script, which gets the lock's
    descriptor; the stage holds its lock (a rerun is refused) until the queue script has
    exited, then exits 128+N with no stamp."""
    fake = tmp_path / "fakeq.sh"
    fake.write_text(FAKE_QUEUE)
    fake.chmod(0o755)
    qdir = tmp_path / "q"
    qdir.mkdir()
    stamp = tmp_path / "out" / ".done.x"
    with _session([STAMPED, str(stamp), "--", *_tool_argv(tool, tmp_path, fake)], env=_env(FAKEQ_DIR=str(qdir))) as p:
        _wait_for("the queue script to start", lambda: (qdir / "pid").exists() or p.poll() is not None)
        assert p.poll() is None, p.communicate()[1][-3000:]
        assert f"-> {stamp.parent}/.lock" in (qdir / "fds").read_text(), "the queue script lacks the lock"
        os.kill(p.pid, sig)  # to stamped.sh alone, as run.sh passes a signal on
        _wait_for("the signal to reach the queue script", lambda: (qdir / "signals").exists())
        r = _stamped(stamp, "--", "true")
        assert r.returncode == 1 and "is locked by another run" in r.stderr, r.stderr
        assert p.poll() is None, "the stage ended before its queue script"
        (qdir / "release").touch()
        _, err = p.communicate(timeout=60)
        assert p.returncode == 128 + sig, err[-3000:]
        assert (qdir / "stopped").exists() and not _alive(int((qdir / "pid").read_text()))
        assert (qdir / "signals").read_text().split() == [signal.Signals(sig).name[3:]]
        assert not stamp.exists()
    assert _stamped(stamp, "--", "true").returncode == 0


# ------------------------------------------------------------------ slurm.pl, queue.pl
SCHEDULERS = {
    "slurm.pl": {
        "sbatch": "echo \"$*\" >> $D/submitted\nwhile [ ! -e $D/release ]; do sleep 0.05; done\necho 555\n",
        "squeue": "[ -e $D/gone ] && exit 0\necho 555\n",
        "scancel": "echo \"$*\" >> $D/cancelled\n",
    },
    "queue.pl": {
        "qsub": "echo \"$*\" >> $D/submitted\nwhile [ ! -e $D/release ]; do sleep 0.05; done\necho 555.1-2:1\n",
        "qstat": "[ -e $D/gone ] && { echo 'Following jobs do not exist:' >&2; exit 1; }\necho job_number: 555\n",
        "qdel": "echo \"$*\" >> $D/cancelled\n",
    },
}


@pytest.mark.parametrize("script", ["slurm.pl", "queue.pl"])
@pytest.mark.parametrize("when", ["running", "submitting"])
def test_scheduler_scripts_cancel_and_wait_for_the_job_to_leave_the_queue(tmp_path, script, when):
    """TERM to slurm.pl / queue.pl cancels the array job (also when it comes while the job
    is being submitted) and waits until the scheduler no longer lists it, so the stage
    lock held by their caller outlives every task. Stand-ins for the scheduler's commands:
    the job stays listed until the test creates $D/gone."""
    d = tmp_path / "sched"
    bindir = d / "bin"
    bindir.mkdir(parents=True)
    for name, text in SCHEDULERS[script].items():
        (bindir / name).write_text(f"#!/bin/sh\nD={d}\n{text}")
        (bindir / name).chmod(0o755)
    if when == "running":
        (d / "release").touch()
    env = _env()
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    with _session(
        [str(UTILS / script), "JOB=1:2", str(tmp_path / "log/s.JOB.log"), "sleep", "60"], cwd=tmp_path, env=env
    ) as p:
        _wait_for("the submission", lambda: (d / "submitted").exists())
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        if when == "submitting":
            time.sleep(0.3)
            assert not (d / "cancelled").exists()
            (d / "release").touch()
        _wait_for("the cancel", lambda: (d / "cancelled").exists())
        time.sleep(0.5)
        assert p.poll() is None, "exited while the scheduler still listed the job"
        (d / "gone").touch()
        _, err = p.communicate(timeout=30)
    assert p.returncode == 1 and "got SIGTERM; cancelled job 555" in err, err
    assert (d / "cancelled").read_text().split() == ["555"]


# ------------------------------------------------------------------ real run.pl jobs
def test_run_pl_kills_a_job_that_ignores_term_after_the_grace(tmp_path):
    """run.pl waits for its jobs after passing TERM on; one that ignores TERM gets SIGKILL
    PYSPK_STOP_GRACE seconds later, so a stop cannot hang."""
    job = f"trap '' TERM; echo $$ > {tmp_path}/pid.JOB; while :; do sleep 0.1; done"
    with _session(
        [str(UTILS / "run.pl"), "JOB=1:2", str(tmp_path / "k.JOB.log"), job], env=_env(PYSPK_STOP_GRACE="1")
    ) as p:
        _wait_for("the jobs", lambda: all((tmp_path / f"pid.{j}").exists() for j in (1, 2)))
        time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 1 and "got SIGTERM; stopping 2 running job(s)" in err, err
    for j in (1, 2):
        assert not _alive(int((tmp_path / f"pid.{j}").read_text()))
        assert (tmp_path / f"k.{j}.log").read_text().splitlines()[-1].startswith("# Ended (code 137)")


@pytest.fixture
def slow_fbank(tmp_path):
    flag, pids = tmp_path / "slow", tmp_path / "pids"
    flag.touch()
    _slow_data_dir(tmp_path / "data", tmp_path / "audio", flag, pids)
    stamp = tmp_path / "fbank" / ".done.fbank"
    cmd = [STAMPED, str(stamp), "--", "pyspk", "fbank", "--nj", "2", str(tmp_path / "data"), str(tmp_path / "fbank")]
    return cmd, stamp, pids


def test_term_to_the_stage_stops_every_job_before_the_stage_exits(slow_fbank, tmp_path):
    cmd, stamp, pids = slow_fbank
    with _session(cmd, env=_env(), cwd=tmp_path) as p:
        _wait_for("both jobs to read", lambda: len(_pids(pids)) >= 4 or p.poll() is not None)
        assert p.poll() is None, p.communicate()[1][-3000:]
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
        left = [pid for pid in _pids(pids) if _alive(pid)]
        assert not left, f"job processes {left} outlived the stopped stage"
        for j in (1, 2):
            assert (tmp_path / f"fbank/log/fbank.{j}.log").read_text().splitlines()[-1].startswith("# Ended (code 1")
        # the lock is free at once: nothing of the old run holds it
        r = _stamped(stamp, "--", "true")
        assert r.returncode == 0, r.stderr


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def test_jobs_keep_the_stage_locked_when_the_tool_is_killed(slow_fbank, tmp_path):
    """SIGKILL cannot be passed on: stamped.sh and the tool die, run.pl and its jobs run on
    and hold the lock they inherited, so a rerun is refused until they have ended."""
    cmd, stamp, pids = slow_fbank
    with _session(cmd, env=_env(), cwd=tmp_path) as p:
        _wait_for("both jobs to read", lambda: len(_pids(pids)) >= 4 or p.poll() is not None)
        assert p.poll() is None, p.communicate()[1][-3000:]
        (tool,) = _children(p.pid)
        os.kill(tool, signal.SIGKILL)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        assert any(_alive(pid) for pid in _pids(pids))
        r = _stamped(stamp, "--", "true")
        assert r.returncode == 1 and "is locked by another run" in r.stderr, r.stderr
        assert not stamp.exists()
        os.killpg(p.pid, signal.SIGKILL)  # what is left: run.pl and the jobs
        _wait_for("the jobs to end", lambda: not any(_alive(pid) for pid in _pids(pids)), timeout=30)
    _wait_for("the lock to be free", lambda: _stamped(stamp, "--", "true").returncode == 0, timeout=30)


@pytest.mark.slow
def test_term_to_run_sh_in_stage_1_then_a_rerun_at_once(tmp_path):
    """The repro of the issue: ./run.sh is TERMed while stage 1's jobs run and rerun at
    once. Every job of the first run has ended when it exits; the rerun either is refused
    or starts after them, and makes the features."""
    args = [
        "./run.sh",
        "--synth-size",
        "tiny",
        "--config",
        "conf/synth/aam.yaml",
        "--nj",
        "2",
        "--data",
        str(tmp_path / "data"),
        "--exp",
        str(tmp_path / "exp"),
        "--fbank-dir",
        str(tmp_path / "fbank"),
    ]
    r = subprocess.run(
        args + ["--stage", "0", "--stop-stage", "0"], cwd=REPO, capture_output=True, text=True, timeout=300, env=_env()
    )
    assert r.returncode == 0, r.stderr[-3000:]
    flag, pids = tmp_path / "slow", tmp_path / "pids"
    flag.touch()
    wav_scp = tmp_path / "data/synth_train/wav.scp"
    lines = []
    for ln in wav_scp.read_text().splitlines():
        utt, path = ln.split(None, 1)
        lines.append(f"{utt} bash -c 'if [ -e {flag} ]; then echo $$ $PPID >> {pids}; sleep 60; fi; cat {path}' |\n")
    wav_scp.write_text("".join(lines))
    stage1 = args + ["--stage", "1", "--stop-stage", "1"]
    with _session(stage1, cwd=REPO, env=_env()) as p:
        _wait_for("both stage-1 jobs to read", lambda: len(_pids(pids)) >= 4 or p.poll() is not None, timeout=120)
        assert p.poll() is None, p.communicate()[1][-3000:]
        p.send_signal(signal.SIGTERM)
        flag.unlink()
        rerun = subprocess.Popen(
            stage1, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        _, err = p.communicate(timeout=60)
        assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
        left = [pid for pid in _pids(pids) if _alive(pid)]
        assert not left, f"job processes {left} of the TERMed run outlived it"
        out2, err2 = rerun.communicate(timeout=300)
    if rerun.returncode != 0:  # refused while the first run was stopping: run it again
        assert "is locked by another run" in err2, err2[-3000:]
        r = subprocess.run(stage1, cwd=REPO, capture_output=True, text=True, timeout=300, env=_env())
        assert r.returncode == 0, r.stderr[-3000:]
    feats = (tmp_path / "data/synth_train/feats.scp").read_text().splitlines()
    assert len(feats) == len(lines)
