"""Calling the Kaldi queue scripts (utils/run.pl, slurm.pl, queue.pl) from the tools.

    line = queue_line(cmd, "JOB=1:4", log_pattern, [python, -m, pyspk.bin.x, --job, JOB, ...])
    rc, err = run_queue(line)

``resolve_cmd`` makes a ``--cmd`` work from any directory: an empty one means this
checkout's ``utils/run.pl``; a relative script path (``utils/run.pl --mem 4G``) that
does not exist from the current directory is taken relative to the checkout (the
package's parent directory), where run.sh and cmd.sh name it from. ``run_queue`` keeps
the queue command's own stderr, so that a job that never started (the queue script
not found, sbatch refused) is reported with the real reason instead of an absent log
(:func:`failure_reason`).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

CHECKOUT = Path(__file__).resolve().parents[1]


def resolve_cmd(cmd: str | None) -> str:
    """The queue command line to run, with its script found (see the module docstring)."""
    if not cmd:
        return shlex.quote(str(CHECKOUT / "utils" / "run.pl"))
    words = shlex.split(cmd)
    first = Path(words[0])
    if "/" in words[0] and not first.is_absolute() and not first.exists() and (CHECKOUT / first).exists():
        words[0] = str(CHECKOUT / first)
        return shlex.join(words)
    return cmd


def queue_line(cmd: str, job_range: str, log_pattern, argv: Sequence[str]) -> str:
    return f"{resolve_cmd(cmd)} {job_range} {shlex.quote(str(log_pattern))} " + " ".join(shlex.quote(str(a)) for a in argv)


def run_queue(line: str) -> Tuple[int, str]:
    """Run a queue command line through the shell; its exit status and stderr (also shown)."""
    p = subprocess.run(line, shell=True, stderr=subprocess.PIPE, text=True, errors="replace")
    if p.stderr:
        sys.stderr.write(p.stderr)
    return p.returncode, p.stderr


def failure_reason(logs: List[Path], rc: int, err: str, line: str) -> str:
    """'see LOGS' when the failed jobs wrote logs; else what the queue command said."""
    written = [str(p) for p in logs if Path(p).is_file()]
    if written:
        return "see " + ", ".join(written)
    said = err.strip().splitlines()[-3:] if err.strip() else ["(nothing on stderr)"]
    return (f"the job(s) never started: the queue command exited {rc} before writing any log: "
            + " | ".join(said) + f"; command: {line}")
