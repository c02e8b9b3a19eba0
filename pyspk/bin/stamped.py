"""``utils/stamped.sh``: run a stage once; skip it while its stamp matches its inputs and outputs.

    utils/stamped.sh [--force true|false] [--param NAME=VALUE]... [--output PATH]...
                     [--stage LABEL] [--lock-wait SECONDS] [--dry-run LEDGER]
                     STAMP [INPUT ...] -- COMMAND [ARG ...]

INPUTs are files, directories (every file below them) or quoted patterns
('data/test/trials*': the files matching now); --param NAME=VALUE records a setting
that changes the output (a seed, a corpus root). The stage is skipped when STAMP
exists and records the same content fingerprint of every INPUT and the same params,
and every output file it recorded is still there, its size and ends unchanged
(pyspk/stamp.py); otherwise STAMP is removed, COMMAND runs, and STAMP is written last,
only if COMMAND succeeded. A killed command leaves no stamp, so a rerun redoes it.

Outputs: the files below each --output PATH (a file, a directory, a quoted pattern),
or, with none given, the files directly in STAMP's directory; stamps, the lock, temp
files and log/ dirs are never outputs. A stage declares them where STAMP's directory
holds files it did not write (stage 1's data/<set>: stage 0's tables, the trials) or
where it writes outside it (the arks under fbank/). A truncated, replaced or deleted
output makes the stage out of date, as a changed input does.

Upstream: an INPUT that is another stage's stamp, a directory holding one, or a file
a stamp of its directory records as an output, names a stage this one reads from.
Before anything else that stamp is checked against its own recorded inputs and outputs
(one level: each stage checks its own), and a stale one stops this stage with one line
("exp/x/scores/.done.score is out of date (input ... changed); run from --stage 6"),
so that a stage run alone never serves what an outdated upstream stage made. --stage
LABEL is recorded in STAMP for that line (run.sh gives the stage number).

For the whole check-run-stamp the stage holds an exclusive flock on STAMP's directory
(its .lock file); a second run of the same stage fails at once naming the holder's pid
and command, or waits up to --lock-wait SECONDS. The jobs COMMAND starts inherit the
lock, so it is held until the last of them has exited. Where the lock file cannot be
made (a read-only tree, a full disk) the stage is checked without it: up to date, it
is skipped as usual (exit 0); otherwise it fails with one line naming the directory
("cannot write DIR (read-only): STAMP would be redone (why)"). A stamp that cannot be
written after COMMAND succeeded (disk full) is one line naming it too.

COMMAND runs with PYSPK_STAMP=STAMP in its environment (its jobs inherit it), so a
log or a trace of any of its processes can say which stage it belongs to.

SIGINT, SIGTERM and SIGHUP are passed on to COMMAND (the queue scripts pass them on to
their jobs); then stamped.sh exits 128+N.

--dry-run LEDGER: run nothing, print "would redo STAMP (reason)" or "STAMP is up to
date", and append a stamp that would be redone to LEDGER, so that a later stage whose
INPUT is (or holds, or is an output of) a stamp listed there would redo too (what
`./run.sh --dry-run true` shows before a rerun); a stage whose upstream stamp is stale
and not redone by this run prints "would fail: ...".
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from pyspk.io import write_error
from pyspk.queue import ForwardedSignals
from pyspk.stamp import (
    CannotLock,
    LockBusy,
    StampError,
    acquire_lock,
    check_inputs,
    is_pattern,
    stale_upstream,
    upstream_stamps,
    why_redo,
    write_stamp,
)

PROG = "stamped.sh"


def _usage(msg: str) -> int:
    print(f"{PROG}: {msg}", file=sys.stderr)
    print(
        f"usage: {PROG} [--force true|false] [--param NAME=VALUE]... [--output PATH]... [--stage LABEL] "
        "[--lock-wait SECONDS] [--dry-run LEDGER] STAMP [INPUT ...] -- COMMAND [ARG ...]",
        file=sys.stderr,
    )
    return 2


def _ledger(ledger: Path) -> list:
    try:
        return [s for s in ledger.read_text().splitlines() if s]
    except FileNotFoundError:
        return []


def _redone_upstream(stamp: Path, inputs, redone) -> str | None:
    """The first input that is, holds, or is an output of a stamp this dry run would redo."""
    redone = [Path(os.path.abspath(s)) for s in redone]
    for i in inputs:
        if is_pattern(i):
            continue
        p = Path(os.path.abspath(i))
        for s in redone:
            if s == p or p in s.parents:
                return f"input {i} is redone by this run ({s})"
    for i, up in upstream_stamps(stamp, inputs):
        if Path(os.path.abspath(up)) in redone:
            return f"input {i} is redone by this run ({os.path.abspath(up)})"
    return None


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    force, params, lock_wait, ledger, outputs, stage_label = "false", {}, 0.0, None, [], None
    while args and args[0].startswith("--") and args[0] != "--":
        opt = args.pop(0)
        if "=" in opt and opt.startswith(("--force=", "--lock-wait=", "--dry-run=", "--output=", "--stage=")):
            opt, val = opt.split("=", 1)
        else:
            if not args:
                return _usage(f"{opt} needs a value")
            val = args.pop(0)
        if opt == "--force":
            if val not in ("true", "false"):
                print(f"{PROG}: --force takes true or false, got '{val}'", file=sys.stderr)
                return 2
            force = val
        elif opt == "--param":
            if "=" not in val:
                return _usage(f"--param takes NAME=VALUE, got '{val}'")
            k, v = val.split("=", 1)
            params[k] = v
        elif opt == "--output":
            if not val:
                return _usage("--output takes a path")
            outputs.append(val)
        elif opt == "--stage":
            stage_label = val
        elif opt == "--lock-wait":
            try:
                lock_wait = float(val)
            except ValueError:
                return _usage(f"--lock-wait takes seconds, got '{val}'")
        elif opt == "--dry-run":
            ledger = Path(val) if val not in ("", "false") else None
        else:
            return _usage(f"unknown option {opt}")
    if len(args) < 3:
        return _usage("too few arguments")
    stamp = Path(args.pop(0))
    if "--" not in args:
        print(f"{PROG}: missing '--' before the command", file=sys.stderr)
        return 2
    k = args.index("--")
    inputs, command = args[:k], args[k + 1 :]
    if not command:
        return _usage("no command given")
    # A stamp is removed before its stage runs: a STAMP argument that names any other file (a
    # config shifted into its place by a mistake in the caller) must never be deleted.
    if not stamp.name.startswith(".done"):
        print(
            f"{PROG}: STAMP '{stamp}' is not a stamp file name (.done.*); refusing to run, nothing was removed",
            file=sys.stderr,
        )
        return 2
    try:
        check_inputs(stamp, inputs)
    except StampError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2

    if ledger is not None:
        return _dry_run(stamp, inputs, params, force, ledger)

    try:
        lock = acquire_lock(stamp.parent, command, lock_wait)
    except LockBusy as e:
        print(f"{PROG}: cannot run {stamp.parent}'s stage: {e}", file=sys.stderr)
        return 1
    except CannotLock as e:
        lock = None
        problem = str(e)
    else:
        problem = lock.write_problem
    stale = stale_upstream(stamp, inputs)
    if stale:
        print(f"{PROG}: cannot run {stamp}'s stage: {stale}", file=sys.stderr)
        return 1
    why = "--force true" if force == "true" else why_redo(stamp, inputs, params, migrate=problem is None)
    if why is None:
        note = f" ({problem}: checked, nothing written)" if problem else ""
        print(f"{PROG}: {stamp} is up to date; skipping{note}: {shlex.join(command)}", file=sys.stderr)
        return 0
    if problem:
        print(f"{PROG}: {problem}: {stamp} would be redone ({why})", file=sys.stderr)
        return 1
    if why != "no stamp":
        print(f"{PROG}: {why}; redoing {stamp}", file=sys.stderr)
    try:
        stamp.unlink(missing_ok=True)
    except OSError as e:
        print(f"{PROG}: cannot remove {stamp} ({e.strerror}); the stage was not run", file=sys.stderr)
        return 1
    rc = run_forwarding_signals(command, lock.fd, dict(os.environ, PYSPK_STAMP=str(stamp)))
    if rc != 0:
        print(f"{PROG}: command failed with status {rc} (no stamp written): {shlex.join(command)}", file=sys.stderr)
        return rc
    try:
        write_stamp(stamp, command, inputs, params, outputs, stage_label)
    except OSError as e:
        err = write_error(stamp, e)
        line = str(err) if err is not None else f"cannot write {stamp}: {e.strerror or e}"
        print(f"{PROG}: {line}; the command succeeded but without its stamp the stage will be redone", file=sys.stderr)
        return 1
    return 0


def _dry_run(stamp: Path, inputs, params, force: str, ledger: Path) -> int:
    """Say what a real run would do with this stage; record a redo in ``ledger``."""
    redone = _ledger(ledger)
    why = "--force true" if force == "true" else _redone_upstream(stamp, inputs, redone)
    if not why:
        stale = stale_upstream(stamp, inputs, skip=redone)
        if stale:
            print(f"{PROG}: would fail: cannot run {stamp}'s stage: {stale}", file=sys.stderr)
            return 0
        why = why_redo(stamp, inputs, params, migrate=False)
    if why:
        print(f"{PROG}: would redo {stamp} ({why})", file=sys.stderr)
        with open(ledger, "a") as f:
            f.write(os.path.abspath(stamp) + "\n")
    else:
        print(f"{PROG}: {stamp} is up to date; would skip", file=sys.stderr)
    return 0


def run_forwarding_signals(command, lock_fd: int, env=None) -> int:
    """Run ``command`` passing it INT/TERM/HUP; its exit status (128+N for signal N).

    The lock's descriptor is inherited by ``command``, its number in ``PYSPK_LOCK_FD``:
    a pyspk tool passes it on to its queue script (pyspk/queue.py), whose jobs inherit
    it, so the lock is held until the last process of the stage has exited."""
    env = dict(os.environ if env is None else env, PYSPK_LOCK_FD=str(lock_fd))
    with ForwardedSignals() as fwd:
        try:
            rc = fwd.start(command, pass_fds=(lock_fd,), env=env).wait()
        except OSError as e:
            print(f"{PROG}: cannot run {command[0]}: {e}", file=sys.stderr)
            return 127
    if rc < 0:
        rc = 128 - rc
    if fwd.got:  # stopped by a signal: say so, whatever the queue script exited with
        rc = 128 + fwd.got[0]
    return rc


if __name__ == "__main__":
    sys.exit(main())
