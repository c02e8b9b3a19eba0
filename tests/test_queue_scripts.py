"""utils/run.pl (for real) and utils/queue.pl (against a stand-in ``qsub``).

No Sun/Open Grid Engine runs here (Debian ships none that works in a container), so
queue.pl is tested against a ``qsub`` stand-in put first on PATH: it records its
arguments and runs the generated job script locally once per task of ``-t first:last``
(setting SGE_TASK_ID and honouring ``-o ...$TASK_ID...``), then prints a ``-terse`` job
id. This checks what queue.pl asks of qsub and how it reads the tasks' results; it does
not check that a real SGE accepts those arguments. utils/slurm.pl, which shares the same
submit-and-wait code, is tested against a real Slurm in test_slurm.py.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import tool_env

REPO = Path(__file__).resolve().parents[1]
UTILS = REPO / "utils"


def _env(**extra) -> dict:
    return tool_env(**extra)


def run_util(script: str, *args: str, cwd=REPO, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(UTILS / script), *map(str, args)],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def body(log: Path) -> list[str]:
    """The command's output in a log: the lines between the header and the footer."""
    return [ln for ln in log.read_text().splitlines() if not ln.startswith("#")]


# ---------------------------------------------------------------- run.pl
def test_run_pl_substitutes_job_and_writes_kaldi_logs(tmp_path):
    r = run_util("run.pl", "JOB=1:3", tmp_path / "new/dir/log.JOB", "echo", "JOB")
    assert r.returncode == 0, r.stderr
    for i in (1, 2, 3):
        lines = (tmp_path / f"new/dir/log.{i}").read_text().splitlines()
        assert lines[0] == f"# echo {i}"
        assert lines[1].startswith("# Started at ")
        assert body(tmp_path / f"new/dir/log.{i}") == [str(i)]
        assert lines[-2].startswith("# Accounting: time=") and lines[-2].endswith("threads=1")
        assert lines[-1].startswith("# Ended (code 0) at ") and "elapsed time" in lines[-1]


def test_run_pl_any_job_name_and_range(tmp_path):
    r = run_util("run.pl", "--num-threads", "4", "N=2:4", tmp_path / "x.N.log", "echo", "N", "JOB")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.2.log", "x.3.log", "x.4.log"]
    assert body(tmp_path / "x.3.log") == ["3 JOB"]
    assert "threads=4" in (tmp_path / "x.3.log").read_text()


def test_run_pl_failure_names_the_failed_logs(tmp_path):
    r = run_util("run.pl", "JOB=1:4", tmp_path / "f.JOB.log", "[", "JOB", "-ne", "3", "]")
    assert r.returncode == 1
    assert f"run.pl: 1 / 4 failed, log is in {tmp_path}/f.3.log" in r.stderr
    assert (tmp_path / "f.3.log").read_text().splitlines()[-1].startswith("# Ended (code 1)")
    r = run_util("run.pl", "JOB=1:4", tmp_path / "g.JOB.log", "exit $((JOB % 2))")
    assert r.returncode == 1
    assert f"2 / 4 failed, logs are in {tmp_path}/g.1.log {tmp_path}/g.3.log" in r.stderr


def test_run_pl_single_job_pipes_quoting_and_pipefail(tmp_path):
    # every word stays one literal word ($HOME is not expanded); a bare "|" is still a pipe
    r = run_util("run.pl", tmp_path / "one.log", "echo", "a  b", "it's", "$HOME", "|", "tr", "a", "A")
    assert r.returncode == 0, r.stderr
    assert body(tmp_path / "one.log") == ["A  b it's $HOME"]
    r = run_util("run.pl", tmp_path / "line.log", "printf 'x\\ny\\n' | wc -l")  # one word: a command line
    assert r.returncode == 0 and body(tmp_path / "line.log") == ["2"]
    r = run_util("run.pl", tmp_path / "pf.log", "false", "|", "cat")
    assert r.returncode == 1 and f"log is in {tmp_path}/pf.log" in r.stderr


def test_run_pl_python_module_sees_the_environment(tmp_path):
    (tmp_path / "probe_mod.py").write_text("import os, sys\nprint(os.environ['PROBE'], sys.argv[1])\n")
    env = _env(PROBE="through", PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    r = run_util("run.pl", "JOB=1:2", tmp_path / "py.JOB.log", "python", "-m", "probe_mod", "JOB", env=env)
    assert r.returncode == 0, r.stderr
    assert body(tmp_path / "py.2.log") == ["through 2"]


def _max_overlap(tmp_path: Path, pattern: str) -> int:
    """Most jobs running at one instant, from the start/end times each job logged."""
    events = []
    for log in tmp_path.glob(pattern):
        start, end = map(float, body(log))
        events += [(start, 1), (end, -1)]
    running = best = 0
    for _, step in sorted(events):  # an end sorts before a start at the same instant
        running += step
        best = max(best, running)
    return best


@pytest.mark.parametrize("max_jobs", [1, 2])
def test_run_pl_max_jobs_run(tmp_path, max_jobs):
    cmd = "date +%s.%N; sleep 0.3; date +%s.%N"
    r = run_util("run.pl", "--max-jobs-run", max_jobs, "JOB=1:6", tmp_path / "m.JOB.log", cmd)
    assert r.returncode == 0, r.stderr
    assert _max_overlap(tmp_path, "m.*.log") == max_jobs


def test_run_pl_runs_jobs_in_parallel_by_default(tmp_path):
    # Shows the overlap measure above can see parallel jobs (1 s sleeps, no cap).
    r = run_util("run.pl", "JOB=1:3", tmp_path / "p.JOB.log", "date +%s.%N; sleep 1; date +%s.%N")
    assert r.returncode == 0, r.stderr
    assert _max_overlap(tmp_path, "p.*.log") >= 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-jobs-run", "0", "JOB=1:2", "l.JOB", "true"], "--max-jobs-run needs a positive integer"),
        (["JOB=3:1", "l.JOB", "true"], "first > last"),
        (["JOB=1:2", "same.log", "true"], "must contain 'JOB'"),
        (["JOB=1-2", "l.JOB", "true"], "bad job range"),
        (["only.log"], "usage:"),
    ],
)
def test_run_pl_usage_errors(tmp_path, args, message):
    r = run_util("run.pl", *args, cwd=tmp_path)
    assert r.returncode != 0 and message in r.stderr, r.stderr


def test_run_pl_killed_stops_its_jobs(tmp_path):
    proc = subprocess.Popen(
        [
            str(UTILS / "run.pl"),
            "JOB=1:2",
            str(tmp_path / "k.JOB.log"),
            f"echo $$ > {tmp_path}/pid.JOB; sleep 60 | cat",
        ],
        env=_env(),
    )
    pids = [tmp_path / "pid.1", tmp_path / "pid.2"]
    t_end = time.monotonic() + 20
    while not all(p.exists() and p.read_text().strip() for p in pids) and time.monotonic() < t_end:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) != 0
    time.sleep(0.5)
    for p in pids:
        status = Path(f"/proc/{p.read_text().strip()}/status")
        assert not status.exists() or "State:\tZ" in status.read_text(), "a job outlived run.pl"
    assert (tmp_path / "k.1.log").read_text().splitlines()[-1].startswith("# Ended (code 143)")


# ---------------------------------------------------------------- queue.pl
QSUB = r'''#!/usr/bin/env python3
"""qsub stand-in: record the arguments, run each array task of the job script here."""
import os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["QSUB_RECORD"], "a") as f:
    f.write(" ".join(args) + "\n")
first, last = map(int, args[args.index("-t") + 1].split(":"))
out = args[args.index("-o") + 1]
for task in range(first, last + 1):
    with open(out.replace("$TASK_ID", str(task)), "w") as o:
        subprocess.run(["bash", args[-1]], env=dict(os.environ, SGE_TASK_ID=str(task)), stdout=o, stderr=o)
print(f"4242.{first}-{last}:1")
'''
QSTAT = "#!/bin/sh\necho 'Following jobs do not exist:' >&2\necho \"$2\" >&2\nexit 1\n"


@pytest.fixture
def fake_sge(tmp_path):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name, text in (("qsub", QSUB), ("qstat", QSTAT)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    record = tmp_path / "qsub.args"
    env = _env(QSUB_RECORD=str(record))
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    return env, record


def test_queue_pl_submits_one_array_job_with_config_options(tmp_path, fake_sge):
    env, record = fake_sge
    log = tmp_path / "exp/log/t.JOB.log"
    r = run_util(
        "queue.pl", "--mem", "2G", "--num-threads", "3", "--max-jobs-run", "2", "JOB=1:3", log, "echo", "JOB", env=env
    )  # cwd=REPO: conf/queue.conf
    assert r.returncode == 0, r.stderr
    submissions = record.read_text().splitlines()
    assert len(submissions) == 1
    qdir = tmp_path / "exp/log/q"
    assert shlex.split(submissions[0]) == [
        "-v",
        "PATH",
        "-cwd",
        "-S",
        "/bin/bash",
        "-j",
        "y",
        "-l",
        "mem_free=2G,ram_free=2G",
        "-pe",
        "smp",
        "3",  # gpu=0 (default) adds nothing
        "-terse",
        "-t",
        "1:3",
        "-tc",
        "2",
        "-N",
        "t.log",
        "-o",
        f"{qdir}/t.log.$TASK_ID.out",
        f"{qdir}/t.log.sh",
    ]
    for i in (1, 2, 3):
        lines = (tmp_path / f"exp/log/t.{i}.log").read_text().splitlines()
        assert lines[0] == f"# echo {i}" and body(tmp_path / f"exp/log/t.{i}.log") == [str(i)]
        assert lines[-2].endswith("threads=3") and lines[-1].startswith("# Ended (code 0)")


def test_queue_pl_reports_failed_task(tmp_path, fake_sge):
    env, _ = fake_sge
    r = run_util("queue.pl", "JOB=1:3", tmp_path / "f.JOB.log", "[", "JOB", "-ne", "2", "]", env=env)
    assert r.returncode == 1
    assert f"queue.pl: 1 / 3 failed, log is in {tmp_path}/f.2.log" in r.stderr


def test_queue_pl_own_config_and_its_errors(tmp_path, fake_sge):
    env, record = fake_sge
    conf = tmp_path / "my.conf"
    conf.write_text("command qsub -q all.q  # the queue\noption gpu=* -l gpu=$0\ndefault gpu=0\noption gpu=0\n")
    r = run_util("queue.pl", "--config", conf, "--gpu", "1", tmp_path / "g.log", "true", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert record.read_text().startswith("-q all.q -l gpu=1 -terse -t 1:1 ")
    r = run_util("queue.pl", "--config", conf, "--mem", "1G", tmp_path / "g.log", "true", env=env)
    assert r.returncode == 1 and f"--mem 1G is not described in {conf} (options there: --gpu)" in r.stderr
    conf.write_text("command qsub\noptoin mem=* -l mem=$0\n")
    r = run_util("queue.pl", "--config", conf, tmp_path / "g.log", "true", env=env)
    assert r.returncode == 1 and f"{conf}:2: cannot parse 'optoin mem=* -l mem=$0'" in r.stderr


def test_queue_pl_task_killed_without_status_is_failed(tmp_path, fake_sge):
    """Task 2's job script is killed (SIGKILL) before it can write its status file;
    once qstat no longer knows the job, queue.pl reports that task as failed."""
    env, _ = fake_sge
    env["PYSPK_QUEUE_GRACE"] = "1"
    r = run_util("queue.pl", "JOB=1:2", tmp_path / "k.JOB.log", "[ JOB = 2 ] && kill -9 $PPID; echo JOB", env=env)
    assert r.returncode == 1
    assert (
        f"task 2 left the queue without a status (killed?); see {tmp_path}/k.2.log and {tmp_path}/q/k.log.2.out"
    ) in r.stderr
    assert f"1 / 2 failed, log is in {tmp_path}/k.2.log" in r.stderr


def test_queue_pl_submit_command_not_found(tmp_path):
    conf = tmp_path / "q.conf"
    conf.write_text("command no-such-qsub-here -V\n")
    r = run_util("queue.pl", "--config", conf, tmp_path / "x.log", "true")
    assert r.returncode == 1
    assert f"no-such-qsub-here (the 'command' of {conf}) is not on PATH" in r.stderr
    assert not (tmp_path / "q").exists()  # nothing submitted


def test_sigkill_of_the_callers_process_group_reaches_run_pl_jobs(tmp_path):
    """run.pl cannot pass on a SIGKILL; its jobs must share the group of the caller
    (run.sh, stamped.sh), so that `kill -KILL -- -PGID` or `timeout -s KILL` stops them."""
    proc = subprocess.Popen(
        [
            str(UTILS / "run.pl"),
            "JOB=1:2",
            str(tmp_path / "k.JOB.log"),
            f"echo $$ > {tmp_path}/pid.JOB; sleep 60 | cat",
        ],
        env=_env(),
        start_new_session=True,
    )
    pids = [tmp_path / "pid.1", tmp_path / "pid.2"]
    t_end = time.monotonic() + 20
    while not all(p.exists() and p.read_text().strip() for p in pids) and time.monotonic() < t_end:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=20)
    time.sleep(0.5)
    for p in pids:
        status = Path(f"/proc/{p.read_text().strip()}/status")
        assert not status.exists() or "State:\tZ" in status.read_text(), "a job outlived the kill of its group"


def test_queue_pl_signal_deletes_its_array_job(tmp_path):
    """INT/TERM/HUP to queue.pl (as stamped.sh passes them on) must qdel the array job.
    Stand-ins: qsub accepts the job and runs nothing, qstat keeps it alive, qdel records."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    record, deleted = tmp_path / "qsub.args", tmp_path / "qdel.args"
    scripts = {
        "qsub": f"#!/bin/sh\necho \"$*\" >> {record}\necho 777.1-2:1\n",
        # alive until qdel, as a real qstat -j: queue.pl waits for the job to leave the queue
        "qstat": f"#!/bin/sh\n[ -e {deleted} ] && {{ echo 'Following jobs do not exist:' >&2; exit 1; }}\n"
        "echo job_number: 777\nexit 0\n",
        "qdel": f"#!/bin/sh\necho \"$*\" >> {deleted}\n",
    }
    for name, text in scripts.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    env = _env()
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    for sig in (signal.SIGTERM, signal.SIGHUP):
        deleted.unlink(missing_ok=True)
        record.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [str(UTILS / "queue.pl"), "JOB=1:2", str(tmp_path / "s.JOB.log"), "sleep", "60"],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        t_end = time.monotonic() + 20
        while not record.exists() and time.monotonic() < t_end:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 1 and f"got SIG{sig.name[3:]}; cancelled job 777" in err, err
        assert deleted.read_text().split() == ["777"]
