"""Stage stamps that know their inputs and outputs, and the lock a stage holds on its output dir.

A stamp (``<out>/.done.<name>``) is written last by a stage that succeeded. It holds

    line 1  the UTC time it was written
    line 2  the command, shell-quoted (for people)
    line 3  json: {"version": 2, "params": {K: V}, "inputs": {INPUT: fingerprint},
                   "outputs": {FILE: {"size": N, "ends": hex}}, "stage": LABEL}

and the stage is up to date exactly when the fingerprint of its declared inputs and
its params now equals the one recorded, and every output file it recorded is still
there with the recorded size and ends. An input's fingerprint is content, not time:

    file       {"sha256": hex}                      (sha-256 of the bytes)
    directory  {"files": {relpath: hex}}            (every file below it, recursively)
    pattern    {"files": {path: hex}}               (an INPUT with * ? [ : the files it matches)
    missing    {"missing": true}

so an edit that keeps the mtime (``cp -p``, a restored backup, a clock step), a file
added to a directory or matching a pattern (a new ``trials_new``), or a file removed,
all count as changes, and restoring the old content makes the stage up to date again.
Lock files (``.lock``) and temporary files of :mod:`pyspk.io` (``.name.tmpXXX``) are
not part of a directory's fingerprint. Upstream stages are inputs like any other:
their stamps change each time they are redone (line 1), so a redone stage makes
every stage that lists its stamp redo too.

Outputs (what the stage wrote, checked so that a truncated ark or a deleted score file
is redone rather than served): the files below each declared ``--output`` PATH (a file,
a directory, recursively, or a pattern), or, when a stage declares none, the files
directly in the stamp's directory. Stamps (``.done.*``, the stage's and its jobs'), the
lock, temporary files and ``log/`` directories are never outputs, and neither are the
subdirectories of an undeclared stamp dir: there they are the dirs of later stages
(``exp/<sys>/xvectors_*`` below stage 3's ``exp/<sys>``), logs, or resumable state
(checkpoints). A stage whose stamp shares its directory with files it did not write
(stage 1's ``data/<set>``: the tables of stage 0 and a user's hand edits, the trials)
declares its outputs instead. An output's fingerprint is its size and the sha-256 of
its first and last :data:`OUTPUT_WINDOW` bytes (the whole file when it is no longer than
two windows): the size catches a truncated or extended file and the ends a replaced one
(another run's ark starts with other vectors; a zip such as a torch checkpoint or an
npz ends with the CRCs of its members), for a few pages of reading per file however
large the ark, so that a directory of many short audio files stays cheap to check on
every run. What it misses is a same-size rewrite of the middle of a large file, which is not
how outputs get damaged. Only the recorded files are checked: a file added later beside
them is no change.

A stamp written before outputs were recorded has no "outputs" and is checked on its
inputs alone until its stage is next redone. It does not gain them: which files of its
dir that stage wrote can no longer be told, and rewriting it would change its bytes,
which the stamps of the stages after it fingerprint, and so redo all of them.

:func:`stale_upstream` checks, one level up, the stamps of the stages a stage reads
from (an input that is a stamp, a directory holding one, or a file a stamp of its
directory records as an output) against their own recorded inputs and outputs, so
that a stage run alone (``run.sh --stage 7``) does not serve results of an upstream
stage whose inputs have since changed.

The lock is ``fcntl.flock`` on ``<out>/.lock`` (exclusive, on the stamp's directory),
held for the check, the command and the stamp write; the file names its holder
(pid, start time, command) for the message a second run gets. Where the lock file
cannot be made (a read-only tree, a full disk), :func:`acquire_lock` raises
:class:`CannotLock` and the stage is checked without it: nothing can be written
there, so an up-to-date stage is skipped as usual and one that is not fails naming
the directory.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from pyspk.io import atomic_write_text, file_digest, write_error

log = logging.getLogger(__name__)
VERSION = 2
LOCK_NAME = ".lock"
STAMP_PREFIX = ".done."
LOG_DIR = "log"
OUTPUT_WINDOW = 8192
_PATTERN_CHARS = set("*?[")
# errors of creating a file that say the directory cannot be written (not a bug)
_CANNOT_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class StampError(Exception):
    """A usage error of the stamp (an input that contains the stamp itself, a bad param)."""


class LockBusy(Exception):
    """The output dir is locked by another run; the message names the holder."""


class CannotLock(Exception):
    """The lock file cannot be made: the directory is read-only (``read_only``) or its
    device is full; the message is one line naming the path."""

    def __init__(self, message: str, read_only: bool):
        super().__init__(message)
        self.read_only = read_only


class Lock:
    """A held stage lock: ``fd`` (inherited by the stage's jobs) and whether the stage
    may write its directory; ``write_problem`` is the one line saying why not."""

    def __init__(self, fd: int, write_problem: Optional[str] = None):
        self.fd = fd
        self.write_problem = write_problem


def _skip(name: str) -> bool:
    """Files that are never part of a directory's fingerprint: locks and pyspk.io temp files."""
    return name == LOCK_NAME or (name.startswith(".") and ".tmp" in name) or name.endswith(".tmp")


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def is_pattern(inp: str) -> bool:
    return bool(_PATTERN_CHARS & set(inp)) and not os.path.lexists(inp)


def fingerprint(inp: str) -> dict:
    """The fingerprint of one declared input (see the module docstring)."""
    if is_pattern(inp):
        files = sorted(p for p in glob.glob(inp) if os.path.isfile(p) and not _skip(os.path.basename(p)))
        return {"files": {p: file_sha256(Path(p)) for p in files}}
    p = Path(inp)
    if p.is_dir():
        files = {}
        for root, dirs, names in os.walk(p):
            dirs.sort()
            for n in sorted(names):
                if _skip(n):
                    continue
                f = Path(root) / n
                if f.is_file():
                    files[f.relative_to(p).as_posix()] = file_sha256(f)
        return {"files": files}
    if p.is_file():
        return {"sha256": file_sha256(p)}
    return {"missing": True}


def fingerprint_all(inputs: Sequence[str], params: Dict[str, str]) -> dict:
    return {"version": VERSION, "params": dict(sorted(params.items())), "inputs": {i: fingerprint(i) for i in inputs}}


# ---- outputs --------------------------------------------------------------------


def output_fingerprint(path) -> Optional[dict]:
    """Size and the sha-256 of the first and last :data:`OUTPUT_WINDOW` bytes (the whole
    file up to two windows) of one output file; None when it is not there."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h = hashlib.sha256(f.read(min(size, OUTPUT_WINDOW)))
            if size > OUTPUT_WINDOW:
                f.seek(max(OUTPUT_WINDOW, size - OUTPUT_WINDOW))
                h.update(f.read())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    return {"size": size, "ends": h.hexdigest()}


def _not_output(name: str) -> bool:
    """Stamps (the stage's own, and its jobs' ``.done.feats.J``), locks and temp files."""
    return _skip(name) or name.startswith(STAMP_PREFIX)


def _walk_outputs(top: str) -> Iterable[str]:
    """The output files below the directory ``top``, its ``log/`` dirs left out."""
    for root, dirs, names in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != LOG_DIR)
        for n in sorted(names):
            f = os.path.join(root, n)
            if not _not_output(n) and os.path.isfile(f):
                yield f


def output_files(stamp: Path, outputs: Sequence[str]) -> List[str]:
    """The files that are a stage's outputs now (see the module docstring): below each
    declared output, or, with none declared, directly in the stamp's directory."""
    found: List[str] = []
    if not outputs:
        d = str(stamp.parent)
        try:
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            names = []
        found = [os.path.join(d, n) for n in names if not _not_output(n) and os.path.isfile(os.path.join(d, n))]
    for out in outputs:
        for p in sorted(glob.glob(out)) if is_pattern(out) else [out]:
            if os.path.isdir(p):
                found.extend(_walk_outputs(p))
            elif os.path.isfile(p) and not _not_output(os.path.basename(p)):
                found.append(p)
    seen = set()
    return [f for f in found if not (f in seen or seen.add(f))]


def fingerprint_outputs(stamp: Path, outputs: Sequence[str]) -> Dict[str, dict]:
    out = {}
    for f in output_files(stamp, outputs):
        fp = output_fingerprint(f)
        if fp is not None:
            out[f] = fp
    return out


def why_outputs(rec: dict) -> Optional[str]:
    """None when every output ``rec`` records is as it was, else what changed first."""
    for f, old in (rec.get("outputs") or {}).items():
        now = output_fingerprint(f)
        if now is None:
            return f"output {f} is missing"
        if now["size"] != old.get("size"):
            return f"output {f} changed: size {old.get('size')} -> {now['size']}"
        if now["ends"] != old.get("ends"):
            return f"output {f} changed: same size, other content"
    return None


def check_inputs(stamp: Path, inputs: Sequence[str]) -> None:
    """An input dir that holds the stamp would make the stage depend on its own output."""
    s = stamp.resolve()
    for i in inputs:
        if not is_pattern(i) and Path(i).is_dir() and Path(i).resolve() in s.parents:
            raise StampError(f"input {i} contains the stamp {stamp} (a stage cannot read its own output dir)")


def read_stamp(stamp: Path) -> Optional[dict]:
    """The recorded fingerprint, or None for no stamp / an old stamp without one."""
    try:
        lines = stamp.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 3:
        return None
    try:
        rec = json.loads(lines[2])
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) and rec.get("version") == VERSION else None


def _input_files(inp: str) -> List[str]:
    if is_pattern(inp):
        return glob.glob(inp)
    if os.path.isdir(inp):
        return [os.path.join(r, n) for r, _, names in os.walk(inp) for n in names if not _skip(n)]
    return [inp] if os.path.exists(inp) else []


def migrate_legacy(stamp: Path, inputs: Sequence[str], params: Dict[str, str], write: bool = True) -> bool:
    """A stamp of the older, time-based scheme (two lines, no fingerprint) is kept when no
    input file is newer than it (that scheme's rule; an absent input cannot be newer):
    with ``write`` its fingerprint is added, its first two lines and its mtime kept, so
    the older stamps after it still see nothing newer. Returns whether it is kept."""
    try:
        st = stamp.stat()
        lines = stamp.read_text(encoding="utf-8").splitlines()[:2]
    except (OSError, UnicodeDecodeError):
        return False
    if not lines or any(os.path.getmtime(f) > st.st_mtime for i in inputs for f in _input_files(i)):
        return False
    if not write:
        return True
    rec = fingerprint_all(inputs, params)
    atomic_write_text(stamp, "\n".join(lines + [""] * (2 - len(lines))) + "\n" + json.dumps(rec) + "\n")
    os.utime(stamp, ns=(st.st_atime_ns, st.st_mtime_ns))
    return True


def _why_inputs(old_inputs: dict, now_inputs: dict) -> Optional[str]:
    """The first difference of two input fingerprints (same declared inputs), or None."""
    for i, fp in now_inputs.items():
        old = old_inputs[i]
        if fp == old:
            continue
        if "files" in fp and "files" in old:
            for f in sorted(set(fp["files"]) | set(old["files"])):
                if f not in old["files"]:
                    return f"input {i}: {f} is new"
                if f not in fp["files"]:
                    return f"input {i}: {f} was removed"
                if fp["files"][f] != old["files"][f]:
                    return f"input {i}: {f} changed"
        if fp.get("missing"):
            return f"input {i} is missing"
        return f"input {i} changed"
    return None


def why_redo(stamp: Path, inputs: Sequence[str], params: Dict[str, str], migrate: bool = True) -> Optional[str]:
    """None when ``stamp`` is up to date, else the first reason it is not (for the log).
    A legacy stamp that its own rule keeps is up to date, and with ``migrate`` gets its
    fingerprint (:func:`migrate_legacy`; a dry run, or a read-only tree, only looks)."""
    rec = read_stamp(stamp)
    if rec is None:
        if not stamp.exists():
            return "no stamp"
        if migrate_legacy(stamp, inputs, params, write=migrate):
            return None
        return f"{stamp} records no input fingerprint and an input is newer than it"
    now = fingerprint_all(inputs, params)
    if rec["params"] != now["params"]:
        keys = sorted(set(rec["params"]) | set(now["params"]))
        k = next(k for k in keys if rec["params"].get(k) != now["params"].get(k))
        return f"param {k} was {rec['params'].get(k)!r}, now {now['params'].get(k)!r}"
    if list(rec["inputs"]) != list(now["inputs"]):
        return f"the declared inputs changed (were: {' '.join(rec['inputs'])})"
    return _why_inputs(rec["inputs"], now["inputs"]) or why_outputs(rec)


def why_stale(stamp: Path) -> Optional[str]:
    """Whether a finished stage's stamp still holds by what it recorded itself: its
    inputs (as it declared them) and its outputs. Its params are not known here (they
    come from the command line of its stage), nor are those of a legacy stamp."""
    rec = read_stamp(stamp)
    if rec is None or not isinstance(rec.get("inputs"), dict):
        return None
    now = {i: fingerprint(i) for i in rec["inputs"]}
    return _why_inputs(rec["inputs"], now) or why_outputs(rec)


def _is_stamp_name(name: str) -> bool:
    return name.startswith(STAMP_PREFIX) and not _skip(name)


def upstream_stamps(stamp: Path, inputs: Sequence[str]) -> List[Tuple[str, Path]]:
    """(input, stamp) for the stamps of the stages whose outputs the inputs are: an input
    that is a stage stamp, the stage stamps directly in an input directory, and for an
    input file (or a file a pattern matches) the stamps of its directory that record it
    as an output. ``stamp`` itself and job stamps (not stage stamps) are left out."""
    me = os.path.abspath(stamp)
    found: Dict[str, Tuple[str, Path]] = {}
    dir_stamps: Dict[str, List[Tuple[str, dict]]] = {}

    def stamps_in(d: str) -> List[Tuple[str, dict]]:
        if d not in dir_stamps:
            try:
                names = sorted(n for n in os.listdir(d) if _is_stamp_name(n))
            except OSError:
                names = []
            recs = []
            for n in names:
                p = os.path.join(d, n)
                rec = read_stamp(Path(p))
                if rec is not None and os.path.abspath(p) != me:
                    recs.append((p, rec))
            dir_stamps[d] = recs
        return dir_stamps[d]

    def add(inp: str, p: str) -> None:
        found.setdefault(os.path.abspath(p), (inp, Path(p)))

    for inp in inputs:
        if is_pattern(inp):
            files = sorted(glob.glob(inp))
        elif os.path.isdir(inp):
            for p, _ in stamps_in(inp):
                add(inp, p)
            continue
        else:
            files = [inp] if os.path.isfile(inp) else []
        for f in files:
            if _is_stamp_name(os.path.basename(f)):
                if os.path.abspath(f) != me and read_stamp(Path(f)) is not None:
                    add(inp, f)
                continue
            af = os.path.abspath(f)
            for p, rec in stamps_in(os.path.dirname(f) or "."):
                if any(os.path.abspath(o) == af for o in (rec.get("outputs") or {})):
                    add(inp, p)
    return list(found.values())


def stale_upstream(stamp: Path, inputs: Sequence[str], skip: Sequence[str] = ()) -> Optional[str]:
    """One line naming the first upstream stamp (:func:`upstream_stamps`) that no longer
    holds by its own record (:func:`why_stale`), and how to redo it; None when all hold.
    Stamps in ``skip`` (absolute paths: those a dry run would redo anyway) are not checked."""
    skip = {os.path.abspath(x) for x in skip}
    for _, up in upstream_stamps(stamp, inputs):
        if os.path.abspath(up) in skip:
            continue
        why = why_stale(up)
        if why:
            label = (read_stamp(up) or {}).get("stage")
            how = f"run from --stage {label}" if label not in (None, "") else "redo the stage that writes it first"
            return f"{up} is out of date ({why}); {how}"
    return None


def write_stamp(
    stamp: Path,
    command: Sequence[str],
    inputs: Sequence[str],
    params: Dict[str, str],
    outputs: Sequence[str] = (),
    stage: Optional[str] = None,
) -> None:
    """Fingerprint the inputs and outputs as they are now and write the stamp atomically."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Microseconds make a redone stage's stamp differ from the last one even within a
    # second: the stamps of the stages after it fingerprint it.
    rec = fingerprint_all(inputs, params)
    rec["outputs"] = fingerprint_outputs(stamp, outputs)
    if stage is not None:
        rec["stage"] = stage
    body = f"{when}\n{shlex.join(command)}\n{json.dumps(rec, sort_keys=False)}\n"
    atomic_write_text(stamp, body)


# ---- the lock ------------------------------------------------------------------


def lock_holders(lock: Path) -> List[str]:
    """'pid N: command' of every process that has ``lock`` open (Linux /proc), the holder
    of the flock among them (it passes the open file to the jobs it starts)."""
    out = []
    target = os.path.realpath(lock)
    for pid in sorted((d for d in os.listdir("/proc") if d.isdigit()), key=int) if os.path.isdir("/proc") else []:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    out.append(f"pid {pid}: {cmd.strip()}")
                    break
            except OSError:
                continue
    return out


def _cannot_write(path: Path, e: OSError) -> str:
    """One line for a failed create/write of ``path`` in a stage's directory."""
    if e.errno in _NO_SPACE:
        err = write_error(path, e)
        return str(err) if err is not None else f"cannot write {path}: {e.strerror}"
    d = path if path.name != LOCK_NAME else path.parent
    return f"cannot write {d} (read-only" + ("" if e.errno == errno.EROFS else f": {e.strerror.lower()}") + ")"


def acquire_lock(out_dir: Path, command: Sequence[str], wait_s: float = 0.0) -> Lock:
    """Take the exclusive flock of ``out_dir/.lock``; return it with its fd (inheritable, so
    the jobs the stage starts hold it too, and a run killed while they live stays locked).
    Raises :class:`LockBusy` naming the holder after ``wait_s`` seconds, and
    :class:`CannotLock` where there is no lock file and none can be made (a read-only
    tree, a full disk). An existing lock file in a directory this process cannot write is
    locked through a read-only descriptor; the Lock then says the stage may not write."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno not in _CANNOT_WRITE + _NO_SPACE:
            raise
        raise CannotLock(_cannot_write(out_dir, e), e.errno not in _NO_SPACE) from None
    lock = out_dir / LOCK_NAME
    problem, writable_fd = None, True
    open_error = OSError(errno.EACCES, os.strerror(errno.EACCES))
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if e.errno not in _CANNOT_WRITE + _NO_SPACE:
            raise
        writable_fd, open_error = False, e
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            raise CannotLock(_cannot_write(lock, e), e.errno not in _NO_SPACE) from None
    if not os.access(out_dir, os.W_OK):
        # the stamp could be neither removed nor replaced (also where a lock file of our
        # own still opens for writing in a dir made read-only by chmod a-w)
        problem = _cannot_write(lock, open_error)
    t_end = time.monotonic() + wait_s
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                if e.errno == errno.EBADF and not writable_fd:
                    # NFS locks exclusively only through a descriptor open for writing
                    raise CannotLock(problem or _cannot_write(lock, open_error), True) from None
                raise
        msg = _busy_message(lock)
        if time.monotonic() >= t_end:
            os.close(fd)
            raise LockBusy(
                msg
                + (
                    f"; waited {wait_s:g} s"
                    if wait_s
                    else "; wait for it to finish or stop it (--lock-wait SECONDS waits)"
                )
            )
        if not told:
            log.warning("stamped.sh: %s; waiting up to %g s", msg, wait_s)
            told = True
        time.sleep(0.5)
    if writable_fd:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(
                fd,
                f"{os.getpid()}\t{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}\t{shlex.join(command)}\n".encode(),
                0,
            )
        except OSError as e:
            if e.errno not in _CANNOT_WRITE + _NO_SPACE:
                os.close(fd)
                raise
            # held all the same; an up-to-date stage needs to write nothing
            problem = _cannot_write(lock, e)
    os.set_inheritable(fd, True)
    return Lock(fd, problem)


def _busy_message(lock: Path) -> str:
    try:
        pid, started, cmd = lock.read_text(encoding="utf-8", errors="replace").rstrip("\n").split("\t", 2)
        who = f"pid {pid} (started {started}): {cmd}"
        if not Path(f"/proc/{pid}").exists() and os.path.isdir("/proc"):
            others = lock_holders(lock)
            who += f"; pid {pid} is gone, the lock is held by " + ("; ".join(others) or "an unknown process")
    except (OSError, ValueError):
        others = lock_holders(lock)
        who = "; ".join(others) or "an unknown process"
    return f"{lock.parent} is locked by another run, {who}"
