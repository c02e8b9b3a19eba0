"""utils/slurm.pl against a real one-node Slurm cluster started on this machine.

The module fixture starts munged, slurmctld and slurmd (Debian's ``munge`` and
``slurm-wlm``) with every file -- key, sockets, state, spool, logs, slurm.conf -- in a
temporary directory and on free ports, so it neither needs nor disturbs a system-wide
Slurm; clients find the cluster through ``SLURM_CONF``. The daemons run as root
(SlurmUser=root), as slurmd needs to launch jobs. When the binaries are absent, or we
are not root, the tests skip saying why -- unless ``PYSPK_REQUIRE_SLURM=1`` (.ci/run
sets it), which turns that into a failure.

Configuration gotchas found on slurm-wlm 22.05 / munge 0.5.15 (Debian 12):
- munged refuses a socket whose directory or any ancestor is not executable by all
  ("Socket is inaccessible: execute permissions for all required"); pytest's tmp dirs
  are 0700, so the daemons get their own 0755 directory under /tmp.
- SlurmctldHost must be this host's short name (slurmctld refuses to start otherwise);
  the address in parentheses avoids any DNS lookup.
- slurmd -N names the node explicitly, and SlurmdParameters=config_overrides makes the
  configured CPUs/RealMemory count whatever the hardware, so the node never drains as
  "low socket*core*thread count" on a 1-CPU runner.
- Without AuthInfo=socket=..., every client and daemon talks to the system munged
  socket (/run/munge/munge.socket.2) and fails with "Munge encode failed".
- proctrack/linuxproc + task/none: no cgroup mounts needed (containers, CI runners).
- Harmless log noise: "can not load PMIx library" (MpiDefault=none) and "Could not open
  job state file" (first start with -c).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scancel")
START_TIMEOUT = 60.0

pytestmark = pytest.mark.slurm


def _unavailable(reason: str):
    if os.environ.get("PYSPK_REQUIRE_SLURM") == "1":
        pytest.fail(f"PYSPK_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(f"{reason} (apt-get install slurm-wlm munge, as root)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _world_traversable_tmp() -> str:
    """A temp root whose every ancestor is o+x (munged's socket requirement)."""
    base = Path(tempfile.gettempdir()).resolve()
    ok = all(p.stat().st_mode & stat.S_IXOTH for p in [base, *base.parents])
    return str(base) if ok else "/tmp"


SLURM_CONF = """\
ClusterName=pyspktest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """The daemons of one temporary cluster; ``env`` reaches it (SLURM_CONF)."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ)
        self.env["SLURM_CONF"] = str(root / "slurm.conf")
        self.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(REPO / "utils"), SBIN_PATH])
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        self.env["LC_ALL"] = "C"

    def start(self, name: str, *args: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen(
            [shutil.which(name, path=SBIN_PATH), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def logs(self) -> str:
        out = []
        for f in sorted((self.root / "log").iterdir()):
            lines = f.read_text(errors="replace").splitlines()
            out.append(f"--- {f.name} (last 25 lines) ---\n" + "\n".join(lines[-25:]))
        return "\n".join(out)

    def wait_until(self, what: str, ok, timeout: float = START_TIMEOUT) -> None:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"{dead[0]} exited (code {self.procs[dead[0]].returncode}) while waiting for {what}\n{self.logs()}"
                )
            if ok():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")

    def node_state(self) -> str:
        r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True, timeout=15)
        return r.stdout.strip()

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root"], env=self.env, capture_output=True, timeout=15)
        for name in ("slurmd", "slurmctld", "munged"):  # clients first, munged last
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


@pytest.fixture(scope="module")
def slurm():
    missing = [b for b in DAEMONS + CLIENTS if shutil.which(b, path=SBIN_PATH) is None]
    if missing:
        _unavailable(f"Slurm/munge binaries not found: {', '.join(missing)}")
    if os.geteuid() != 0:
        _unavailable("the one-node Slurm test runs its daemons as root, and this is not root")
    root = Path(tempfile.mkdtemp(prefix="pyspk-slurm-", dir=_world_traversable_tmp()))
    root.chmod(0o755)
    for sub in ("state", "spool", "log", "run", "munge"):
        (root / sub).mkdir(mode=0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = root / "run" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    (root / "slurm.conf").write_text(
        SLURM_CONF.format(host=host, ctld_port=_free_port(), d_port=_free_port(), sock=sock, d=root)
    )
    cluster = Cluster(root)
    try:
        cluster.start(
            "munged",
            "-F",
            f"--socket={sock}",
            f"--key-file={key}",
            f"--pid-file={root}/run/munged.pid",
            f"--seed-file={root}/munge/seed",
            f"--log-file={root}/log/munged.log",
        )
        cluster.wait_until("the munge socket", sock.exists, timeout=20)
        cluster.start("slurmctld", "-D", "-c", "-f", str(root / "slurm.conf"))
        cluster.start("slurmd", "-D", "-N", host, "-f", str(root / "slurm.conf"))
        cluster.wait_until("the node to be idle (sinfo)", lambda: cluster.node_state() == "idle")
        yield cluster
    except RuntimeError as e:
        pytest.fail(f"could not start the one-node Slurm in {root}: {e}")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def slurm_pl(cluster: Cluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [str(REPO / "utils" / "slurm.pl"), *args],
            cwd=REPO,
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"slurm.pl did not finish in {timeout} s: {e}\n{cluster.logs()}")


def _log(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.slow
def test_array_of_four_jobs(slurm, tmp_path):
    r = slurm_pl(slurm, "JOB=1:4", f"{tmp_path}/log/t.JOB.log", "echo", "JOB")
    assert r.returncode == 0, r.stderr + slurm.logs()
    for i in range(1, 5):
        lines = _log(tmp_path / "log" / f"t.{i}.log")
        assert lines[0] == f"# echo {i}"
        assert str(i) in lines, lines  # the command's output
        assert lines[-2].startswith("# Accounting: time=") and "threads=1" in lines[-2]
        assert lines[-1].startswith("# Ended (code 0) at ")
    assert (tmp_path / "log" / "q" / "t.log.sh").is_file()  # the generated batch script
    assert not list((tmp_path / "log" / "q").glob("done.*"))  # status files are consumed


def test_one_failing_job_is_reported(slurm, tmp_path):
    r = slurm_pl(slurm, "JOB=1:4", f"{tmp_path}/t.JOB.log", "[", "JOB", "-ne", "3", "]")
    assert r.returncode != 0
    assert f"1 / 4 failed, log is in {tmp_path}/t.3.log" in r.stderr, r.stderr
    assert _log(tmp_path / "t.3.log")[-1].startswith("# Ended (code 1) at ")
    for i in (1, 2, 4):
        assert _log(tmp_path / f"t.{i}.log")[-1].startswith("# Ended (code 0) at ")


def test_options_reach_sbatch_and_python_env_is_carried(slurm, tmp_path):
    # conf/slurm.conf maps --num-threads to --cpus-per-task and --mem to --mem; the job
    # script carries PATH/PYTHONPATH even though sbatch runs with --export=PATH.
    cmd = 'echo cpus=$SLURM_CPUS_PER_TASK mem=$SLURM_MEM_PER_NODE && python -c "import pyspk.io; print(\'ok\', JOB)"'
    r = slurm_pl(slurm, "--num-threads", "2", "--mem", "100M", "JOB=1:2", f"{tmp_path}/o.JOB.log", cmd)
    assert r.returncode == 0, r.stderr + "\n".join((tmp_path / f"o.{i}.log").read_text() for i in (1, 2))
    for i in (1, 2):
        lines = _log(tmp_path / f"o.{i}.log")
        assert "cpus=2 mem=100" in lines and f"ok {i}" in lines, lines
        assert "threads=2" in lines[-2]


def test_max_jobs_run_throttles_the_array(slurm, tmp_path):
    # Two 1-CPU tasks fit the 2-CPU node at once; --max-jobs-run 1 (--array=1-2%1) must
    # run them one after the other. Each task logs its start and end time.
    r = slurm_pl(slurm, "--max-jobs-run", "1", "JOB=1:2", f"{tmp_path}/m.JOB.log", "date +%s.%N; sleep 1; date +%s.%N")
    assert r.returncode == 0, r.stderr
    (s1, e1), (s2, e2) = [[float(x) for x in _log(tmp_path / f"m.{i}.log") if not x.startswith("#")] for i in (1, 2)]
    assert e1 <= s2 or e2 <= s1, "the two tasks overlapped"


def test_cancelled_tasks_are_reported_failed(slurm, tmp_path):
    """scancel kills the job scripts before they write their status files; slurm.pl must
    notice that the job left the queue and name both logs (grace cut to 2 s here)."""
    env = dict(slurm.env, PYSPK_QUEUE_GRACE="2")
    proc = subprocess.Popen(
        [str(REPO / "utils" / "slurm.pl"), "JOB=1:2", f"{tmp_path}/c.JOB.log", "sleep", "120"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        slurm.wait_until("both tasks to start", lambda: all((tmp_path / f"c.{i}.log").exists() for i in (1, 2)))
        jobs = subprocess.run(["squeue", "-h", "-o", "%F"], env=env, capture_output=True, text=True, timeout=15)
        assert jobs.stdout.split(), jobs.stderr
        subprocess.run(["scancel", jobs.stdout.split()[0]], env=env, check=True, timeout=15)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert f"2 / 2 failed, logs are in {tmp_path}/c.1.log {tmp_path}/c.2.log" in err, err
    assert f"task 1 left the queue without a status (killed?); see {tmp_path}/c.1.log" in err


def test_option_missing_from_config_is_an_error(slurm, tmp_path):
    r = slurm_pl(slurm, "--colour", "red", f"{tmp_path}/x.log", "true")
    assert r.returncode != 0
    assert "--colour red is not described in conf/slurm.conf" in r.stderr, r.stderr


def test_sigterm_to_the_stage_cancels_the_array_and_its_jobs(slurm, tmp_path):
    """Issue 12, failure 3 under Slurm: SIGTERM to stamped.sh alone (as run.sh passes it
    on) must reach slurm.pl, which cancels the job array and waits for it to leave the
    queue (issue 28); the job processes have ended when the stage exits 128+15, with no stamp."""
    stamp = tmp_path / "exp/.done.x"
    cmd = [
        str(REPO / "utils/stamped.sh"),
        str(stamp),
        "--",
        str(REPO / "utils/slurm.pl"),
        "JOB=1:2",
        f"{tmp_path}/s.JOB.log",
        f"echo $$ > {tmp_path}/pid.JOB; exec sleep 300",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=slurm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    pids = [tmp_path / "pid.1", tmp_path / "pid.2"]
    try:
        slurm.wait_until("both tasks to start", lambda: all(p.exists() and p.read_text().strip() for p in pids))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "cancelled job" in err and not stamp.exists()

        def gone():
            q = subprocess.run(["squeue", "-h", "-o", "%i"], env=slurm.env, capture_output=True, text=True, timeout=15)
            alive = [
                p
                for p in pids
                if Path(f"/proc/{p.read_text().strip()}").exists()
                and "State:\tZ" not in Path(f"/proc/{p.read_text().strip()}/status").read_text()
            ]
            return not q.stdout.strip() and not alive

        # slurm.pl waited for the array to leave the queue: nothing of it is left when the stage exits
        assert gone(), "the stage exited while its array was still queued or its jobs still ran"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
