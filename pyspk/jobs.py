"""Stages that split their work into parallel jobs (Kaldi's ``$cmd JOB=1:nj``), one way for all.

The fbank stage (and so the augmentation stage, which runs it on each copy) and the
extraction stage work the same way (:mod:`pyspk.stages`):

1. the input table is split into ``nj`` contiguous parts (:func:`split_lines`), one split
   file per job, rewritten only when its content changed (:func:`write_if_changed`);
2. each job has a signature, the sha-256 of everything its output depends on (its split,
   the config, the model: :func:`signature`); a job whose completion stamp holds the
   current signature (and whose outputs the stage verifies) is reused, every other one is
   pending (:meth:`JobSet.pending`), so a killed stage, rerun, finishes only its missing jobs;
3. the pending jobs run through the queue script, one call per contiguous range of them::

       CMD JOB=a:b OUT/log/LOG.JOB.log python -m TOOL --job JOB ARGV...

   (:meth:`JobSet.run`, through :mod:`pyspk.queue`: SIGINT/SIGTERM/SIGHUP are passed on to
   the queue script and waited for, the stage lock's ``PYSPK_LOCK_FD`` is inherited by every
   job); a job that failed makes :class:`StageError` name its log and what it said last;
4. each job removes its stamp when it starts (:meth:`JobSet.begin`), writes its outputs
   atomically (:mod:`pyspk.io`) and its stamp last (:meth:`JobSet.finish`): a killed job is
   never taken for a finished one;
5. the stage merges the jobs' tables (:func:`concat`) into its outputs.

A stamp holds the job's signature on one line. One that does not hold the current
signature (another input, another config, or the format of an older pyspk, such as the
sha-1 signatures of the extraction jobs of before) makes the job run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Type

from pyspk.io import atomic_write_text, touch_done
from pyspk.queue import JOB, failure_reason, queue_argv, run_queue

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage failed; the message names the log file(s) to read."""


def num_jobs(nj: int, n_items: int) -> int:
    """``nj`` jobs, but never more than items to share out, and at least one."""
    return max(1, min(nj, n_items))


def split_lines(lines: Sequence[str], nj: int, first_longer: bool = False) -> List[List[str]]:
    """Contiguous split into ``nj`` near-equal parts; keeps the sort order, so every part is a
    sorted table. Part i holds items ``round(i n / nj)`` up to ``round((i + 1) n / nj)`` (the
    fbank stage), or, with ``first_longer``, the first ``n mod nj`` parts hold one item more
    (Kaldi's split_scp.pl; the extraction stage).

    Both placements of the remainder are kept because a stage's outputs depend on its
    partition: which utterances share an ark (the lines of feats.scp), and which share a
    length-sorted batch of the encoder, whose float sums differ in the last bit from one
    batch to another. Either change would rewrite outputs already on disk.
    """
    n = len(lines)
    if first_longer:
        size, rem = divmod(n, nj)
        bounds = [i * size + min(i, rem) for i in range(nj + 1)]
    else:
        bounds = [round(i * n / nj) for i in range(nj + 1)]
    return [list(lines[bounds[i] : bounds[i + 1]]) for i in range(nj)]


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` atomically unless ``path`` already holds it (a split file keeps its
    mtime, and its job its signature, when the input did not change)."""
    path = Path(path)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def signature(*parts: str) -> str:
    """sha-256 (hex) of ``parts``, each followed by a NUL byte: what a job's stamp holds."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def ranges(jobs: Iterable[int]) -> List[Tuple[int, int]]:
    """Contiguous ``(first, last)`` runs of ``jobs`` (ascending): one queue call each."""
    out: List[list] = []
    for j in jobs:
        if out and out[-1][1] == j - 1:
            out[-1][1] = j
        else:
            out.append([j, j])
    return [(a, b) for a, b in out]


def concat(paths: Iterable[Path]) -> str:
    """The texts of ``paths`` one after the other (the jobs' tables, in job order)."""
    return "".join(Path(p).read_text(encoding="utf-8") for p in paths)


@dataclass(frozen=True)
class JobSet:
    """The jobs of one stage run: where their stamps and logs are, and how they are run.

    ``what`` names them in messages (``fbank``, ``extraction``); the queue runs
    ``python -m TOOL --job J ARGV``; job J logs to ``OUT/log/LOG.J.log`` and marks its end
    with ``OUT/.done.STAMP.J``; failed jobs raise ``error`` (a :class:`StageError`).
    """

    out_dir: Path
    what: str
    tool: str
    log_name: str
    stamp_name: str
    error: Type[StageError] = StageError

    def log(self, job: int) -> Path:
        return Path(self.out_dir) / "log" / f"{self.log_name}.{job}.log"

    def stamp(self, job: int) -> Path:
        return Path(self.out_dir) / f".done.{self.stamp_name}.{job}"

    def stamp_check(self, job: int, sig: str) -> str:
        """'' when job ``job``'s stamp holds ``sig``; else why not."""
        p = self.stamp(job)
        if not p.is_file():
            return "no completion stamp"
        if p.read_text().strip() != sig:
            return "input or config changed since it was computed"
        return ""

    def pending(
        self, sigs: Sequence[str], force: bool = False, verify: Optional[Callable[[int, str], str]] = None
    ) -> List[int]:
        """The jobs (1-based, of ``len(sigs)``) to run: every one with ``force``, else those
        that ``verify(job, sig)`` (default :meth:`stamp_check`) gives a reason for. Their
        stamps are removed, so that no later look takes them for finished."""
        verify = verify or self.stamp_check
        nj, todo = len(sigs), []
        for j, sig in enumerate(sigs, 1):
            why = "--force" if force else verify(j, sig)
            if why:
                log.info("%s job %d of %d: computing (%s)", self.what, j, nj, why)
                todo.append(j)
            else:
                log.info("%s job %d of %d: reusing verified output", self.what, j, nj)
        for j in todo:
            with contextlib.suppress(FileNotFoundError):
                self.stamp(j).unlink()
        return todo

    def begin(self, job: int) -> None:
        """Called by a job before it writes anything: it is not finished until :meth:`finish`."""
        with contextlib.suppress(FileNotFoundError):
            self.stamp(job).unlink()

    def finish(self, job: int, sig: str) -> None:
        """Called by a job last, once every output is in place: its stamp, holding ``sig``."""
        touch_done(self.stamp(job), sig + "\n")

    def run(self, cmd: str, jobs: Sequence[int], argv: Sequence[str]) -> None:
        """Run ``jobs`` through the queue script ``cmd``, one call per contiguous range; a
        :class:`StageError` (``error``) naming the logs of those without a stamp afterwards."""
        log_dir = Path(self.out_dir) / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        failed: List[int] = []
        why: List[str] = []
        for a, b in ranges(jobs):
            qargv = queue_argv(
                cmd,
                a,
                b,
                log_dir / f"{self.log_name}.{JOB}.log",
                [sys.executable, "-m", self.tool, "--job", JOB, *argv],
            )
            line = shlex.join(qargv)
            log.info("running %s", line)
            rc, err = run_queue(qargv)
            bad = [j for j in range(a, b + 1) if not self.stamp(j).is_file()]
            if rc != 0 and not bad:  # the queue failed although every job finished
                bad = [a]
            if bad:
                failed += bad
                why.append(failure_reason([self.log(j) for j in bad], rc, err, line))
        if failed:
            raise self.error(f"{len(failed)} of {len(jobs)} {self.what} job(s) failed; {'; '.join(why)}")
