"""Stage stamps that know their inputs, and the lock a stage holds on its output dir.

A stamp (``<out>/.done.<name>``) is written last by a stage that succeeded. It holds

    line 1  the UTC time it was written
    line 2  the command, shell-quoted (for people)
    line 3  json: {"version": 2, "params": {K: V}, "inputs": {INPUT: fingerprint}}

and the stage is up to date exactly when the fingerprint of its declared inputs and
its params now equals the one recorded. A fingerprint is content, not time:

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

The lock is ``fcntl.flock`` on ``<out>/.lock`` (exclusive, on the stamp's directory),
held for the check, the command and the stamp write; the file names its holder
(pid, start time, command) for the message a second run gets.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import logging
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from pyspk.io import atomic_write_text, file_digest

log = logging.getLogger(__name__)
VERSION = 2
LOCK_NAME = ".lock"
_PATTERN_CHARS = set("*?[")


class StampError(Exception):
    """A usage error of the stamp (an input that contains the stamp itself, a bad param)."""


class LockBusy(Exception):
    """The output dir is locked by another run; the message names the holder."""


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
    return {"version": VERSION, "params": dict(sorted(params.items())),
            "inputs": {i: fingerprint(i) for i in inputs}}


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


def why_redo(stamp: Path, inputs: Sequence[str], params: Dict[str, str], migrate: bool = True) -> Optional[str]:
    """None when ``stamp`` is up to date, else the first reason it is not (for the log).
    A legacy stamp that its own rule keeps is up to date, and with ``migrate`` gets its
    fingerprint (:func:`migrate_legacy`; a dry run only looks)."""
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
    for i, fp in now["inputs"].items():
        old = rec["inputs"][i]
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


def write_stamp(stamp: Path, command: Sequence[str], inputs: Sequence[str], params: Dict[str, str]) -> None:
    """Fingerprint the inputs as they are now and write the stamp atomically."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Microseconds make a redone stage's stamp differ from the last one even within a
    # second: the stamps of the stages after it fingerprint it.
    rec = fingerprint_all(inputs, params)
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


def acquire_lock(out_dir: Path, command: Sequence[str], wait_s: float = 0.0) -> int:
    """Take the exclusive flock of ``out_dir/.lock``; return its fd (inheritable, so the
    jobs the stage starts hold it too, and a run killed while they live stays locked).
    Raises :class:`LockBusy` naming the holder after ``wait_s`` seconds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    t_end = time.monotonic() + wait_s
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
        msg = _busy_message(lock)
        if time.monotonic() >= t_end:
            os.close(fd)
            raise LockBusy(msg + (f"; waited {wait_s:g} s" if wait_s else
                                  "; wait for it to finish or stop it (--lock-wait SECONDS waits)"))
        if not told:
            log.warning("stamped.sh: %s; waiting up to %g s", msg, wait_s)
            told = True
        time.sleep(0.5)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\t{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}\t{shlex.join(command)}\n"
              .encode(), 0)
    os.set_inheritable(fd, True)
    return fd


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
