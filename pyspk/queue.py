"""Calling the Kaldi queue scripts (utils/run.pl, slurm.pl, queue.pl) from the tools.

    argv = queue_argv(cmd, 1, 4, out_dir / "log" / "x.JOB.log", [python, -m, pyspk.bin.x, --job, JOB, ...])
    rc, err = run_queue(argv)

No shell sits between a tool and its queue script: ``run_queue`` starts the script with
an argument vector, and the queue scripts keep each word one word for the bash that
runs a job (utils/lib/QueueCommon.pm, ``shell_join``), so a data or output directory
whose name holds ``$(...)``, backticks, ``;``, quotes or spaces is passed as it is,
never run or split.

``JOB`` marks where the job's index goes: an argument that is exactly ``JOB`` and the
``JOB`` in the log file's name. The queue scripts replace every occurrence of the job
name, so ``queue_argv`` picks a name (``JOB``, else ``JOB1``, ``JOB2``, ...) that occurs
nowhere else in the command or the log's directory: a path holding ``JOB`` is not
rewritten into another directory.

``cmd`` (``--cmd``) is the queue script with its options, split like a shell would
(``utils/slurm.pl --mem 4G``): an empty one means this checkout's ``utils/run.pl``; a
relative script path that does not exist from the current directory is taken relative
to the checkout (the package's parent directory), where run.sh and cmd.sh name it from.

While the queue script runs, SIGINT, SIGTERM and SIGHUP to the tool are passed on to it
(it stops every job and waits for them), the tool keeps waiting until it has exited,
then exits 128+N (:class:`QueueInterrupted`) instead of going on. The stage lock of
utils/stamped.sh (its descriptor number in ``PYSPK_LOCK_FD``) is passed down to the
queue script, so the jobs hold the lock too and a killed tool cannot let a second run
write beside jobs that still run.

``run_queue`` keeps the queue command's own stderr (shown as it comes), so that a job
that never started (the queue script not found, sbatch refused) is reported with the
real reason instead of an absent log (:func:`failure_reason`).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import List, Sequence, Tuple

CHECKOUT = Path(__file__).resolve().parents[1]
JOB = "JOB"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class QueueInterrupted(SystemExit):
    """The tool got SIGINT/SIGTERM/SIGHUP while its queue script ran; that script has
    stopped its jobs and exited. Exits the tool with 128+N."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def cmd_words(cmd: str | None) -> List[str]:
    """The queue script and its options as words, with the script found (module docstring)."""
    if not cmd or not cmd.strip():
        return [str(CHECKOUT / "utils" / "run.pl")]
    words = shlex.split(cmd)
    first = Path(words[0])
    if "/" in words[0] and not first.is_absolute() and not first.exists() and (CHECKOUT / first).exists():
        words[0] = str(CHECKOUT / first)
    return words


def _job_name(log_pattern: Path, argv: Sequence[str]) -> str:
    others = [a for a in argv if a != JOB] + [str(log_pattern.parent), log_pattern.name.replace(JOB, "/")]
    name, n = JOB, 0
    while any(name in o for o in others):
        n += 1
        name = f"{JOB}{n}"
    return name


def queue_argv(cmd: str | None, first: int, last: int, log_pattern, argv: Sequence) -> List[str]:
    """``CMD NAME=first:last LOG ARGV...`` as an argument vector (see the module docstring)."""
    log_pattern = Path(log_pattern)
    if JOB not in log_pattern.name and last > first:
        raise ValueError(f"log pattern {log_pattern} has no {JOB} in its name")
    words = [str(a) for a in argv]
    name = _job_name(log_pattern, words)
    log = log_pattern.parent / log_pattern.name.replace(JOB, name)
    return [*cmd_words(cmd), f"{name}={first}:{last}", str(log), *(name if w == JOB else w for w in words)]


class ForwardedSignals:
    """While in effect, SIGINT/SIGTERM/SIGHUP to this process are recorded (``got``) and
    passed on to the child started by :meth:`start`, also one that arrived before it
    started; the previous handlers come back on exit. Handlers can only be installed in
    the main thread; elsewhere nothing is forwarded.

        with ForwardedSignals() as fwd:
            rc = fwd.start(argv).wait()
        if fwd.got: ...   # stopped by a signal
    """

    def __init__(self):
        self.got: List[int] = []
        self.child = None
        self._old = {}

    def _forward(self, sig, _frame):
        self.got.append(sig)
        if self.child is not None:
            self.child.send_signal(sig)  # a no-op once the child is reaped

    def __enter__(self) -> "ForwardedSignals":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._forward) for s in STOP_SIGNALS}
        return self

    def start(self, argv, **popen_kw) -> subprocess.Popen:
        """``subprocess.Popen(argv, **popen_kw)``, then any signal that came before it."""
        self.child = subprocess.Popen(argv, **popen_kw)
        if self.got:
            self.child.send_signal(self.got[0])
        return self.child

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)


def _lock_fds() -> Tuple[int, ...]:
    """The stage lock's descriptor (``PYSPK_LOCK_FD``, set by utils/stamped.sh) when this
    process still has it open and inheritable: a number that Python reused for a file
    of its own is not inheritable, and is not passed on."""
    try:
        fd = int(os.environ.get("PYSPK_LOCK_FD", ""))
        return (fd,) if fd > 2 and os.get_inheritable(fd) else ()
    except (ValueError, OSError):
        return ()


def run_queue(argv: Sequence[str]) -> Tuple[int, str]:
    """Run a queue command (an argument vector, no shell); its exit status and stderr.

    Passes INT/TERM/HUP on to it and waits for it to exit; then raises
    :class:`QueueInterrupted`. The stage lock's descriptor is inherited by it.
    """
    argv = [str(a) for a in argv]
    said: deque = deque(maxlen=50)
    with ForwardedSignals() as fwd:
        try:
            child = fwd.start(
                argv,
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                pass_fds=_lock_fds(),
            )
        except OSError as e:  # as a shell would say it: 127 not found, 126 not runnable
            missing = isinstance(e, FileNotFoundError)
            said.append(f"{argv[0]}: " + ("not found" if missing else f"cannot run: {e.strerror or e}") + "\n")
            sys.stderr.write(said[-1])
            rc = 127 if missing else 126
        else:
            for line in child.stderr:  # shown as it comes, kept for failure_reason
                sys.stderr.write(line)
                said.append(line)
            child.stderr.close()
            rc = child.wait()
    if fwd.got:
        print(
            f"pyspk: got {signal.Signals(fwd.got[0]).name}; the queue script stopped its jobs (exit {rc})",
            file=sys.stderr,
        )
        raise QueueInterrupted(fwd.got[0])
    return rc, "".join(said)


def failure_reason(logs: List[Path], rc: int, err: str, line: str) -> str:
    """'see LOGS' when the failed jobs wrote logs, with the last thing the first of them said,
    so the console shows why without opening a log; else what the queue command said."""
    written = [str(p) for p in logs if Path(p).is_file()]
    if written:
        said = last_words(Path(written[0]))
        return "see " + ", ".join(written) + (f" (job said: {said})" if said else "")
    said = err.strip().splitlines()[-3:] if err.strip() else ["(nothing on stderr)"]
    return (
        f"the job(s) never started: the queue command exited {rc} before writing any log: "
        + " | ".join(said)
        + f"; command: {line}"
    )


def last_words(log: Path, limit: int = 600) -> str:
    """The last line of a job log that is not the queue script's own ('#' header and footer)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    said = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    return said[-1][:limit] if said else ""
