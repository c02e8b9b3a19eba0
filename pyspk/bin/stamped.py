"""``utils/stamped.sh``: run a stage once; skip it while its stamp matches its inputs.

    utils/stamped.sh [--force true|false] [--param NAME=VALUE]... [--lock-wait SECONDS]
                     [--dry-run LEDGER] STAMP [INPUT ...] -- COMMAND [ARG ...]

INPUTs are files, directories (every file below them) or quoted patterns
('data/test/trials*': the files matching now); --param NAME=VALUE records a setting
that changes the output (a seed, a corpus root). The stage is skipped when STAMP
exists and records the same content fingerprint of every INPUT and the same params
(pyspk/stamp.py); otherwise STAMP is removed, COMMAND runs, and STAMP is written last,
only if COMMAND succeeded. A killed command leaves no stamp, so a rerun redoes it.

For the whole check-run-stamp the stage holds an exclusive flock on STAMP's directory
(its .lock file); a second run of the same stage fails at once naming the holder's pid
and command, or waits up to --lock-wait SECONDS. The jobs COMMAND starts inherit the
lock, so it is held until the last of them has exited.

COMMAND runs with PYSPK_STAMP=STAMP in its environment (its jobs inherit it), so a
log or a trace of any of its processes can say which stage it belongs to.

SIGINT, SIGTERM and SIGHUP are passed on to COMMAND (the queue scripts pass them on to
their jobs); then stamped.sh exits 128+N.

--dry-run LEDGER: run nothing, print "would redo STAMP (reason)" or "STAMP is up to
date", and append a stamp that would be redone to LEDGER, so that a later stage whose
INPUT is (or holds) a stamp listed there would redo too (what `./run.sh --dry-run true`
shows before a rerun).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from pyspk.stamp import LockBusy, StampError, acquire_lock, check_inputs, is_pattern, why_redo, write_stamp

PROG = "stamped.sh"


def _usage(msg: str) -> int:
    print(f"{PROG}: {msg}", file=sys.stderr)
    print(f"usage: {PROG} [--force true|false] [--param NAME=VALUE]... [--lock-wait SECONDS] "
          "[--dry-run LEDGER] STAMP [INPUT ...] -- COMMAND [ARG ...]", file=sys.stderr)
    return 2


def _redone_upstream(inputs, ledger: Path):
    """The first input that is, or holds, a stamp this dry run would redo."""
    try:
        redone = [Path(s) for s in ledger.read_text().splitlines() if s]
    except FileNotFoundError:
        return None
    for i in inputs:
        if is_pattern(i):
            continue
        p = Path(os.path.abspath(i))
        for s in redone:
            s = Path(os.path.abspath(s))
            if s == p or p in s.parents:
                return f"input {i} is redone by this run ({s})"
    return None


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    force, params, lock_wait, ledger = "false", {}, 0.0, None
    while args and args[0].startswith("--") and args[0] != "--":
        opt = args.pop(0)
        if "=" in opt and opt.startswith(("--force=", "--lock-wait=", "--dry-run=")):
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
    inputs, command = args[:k], args[k + 1:]
    if not command:
        return _usage("no command given")
    try:
        check_inputs(stamp, inputs)
    except StampError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2

    if ledger is not None:
        why = "--force true" if force == "true" else (_redone_upstream(inputs, ledger) or why_redo(stamp, inputs, params, migrate=False))
        if why:
            print(f"{PROG}: would redo {stamp} ({why})", file=sys.stderr)
            with open(ledger, "a") as f:
                f.write(os.path.abspath(stamp) + "\n")
        else:
            print(f"{PROG}: {stamp} is up to date; would skip", file=sys.stderr)
        return 0

    try:
        lock_fd = acquire_lock(stamp.parent, command, lock_wait)
    except LockBusy as e:
        print(f"{PROG}: cannot run {stamp.parent}'s stage: {e}", file=sys.stderr)
        return 1
    why = "--force true" if force == "true" else why_redo(stamp, inputs, params)
    if why is None:
        print(f"{PROG}: {stamp} is up to date; skipping: {shlex.join(command)}", file=sys.stderr)
        return 0
    if why != "no stamp":
        print(f"{PROG}: {why}; redoing {stamp}", file=sys.stderr)
    stamp.unlink(missing_ok=True)
    rc = run_forwarding_signals(command, lock_fd, dict(os.environ, PYSPK_STAMP=str(stamp)))
    if rc != 0:
        print(f"{PROG}: command failed with status {rc} (no stamp written): {shlex.join(command)}", file=sys.stderr)
        return rc
    write_stamp(stamp, command, inputs, params)
    return 0


def run_forwarding_signals(command, lock_fd: int, env=None) -> int:
    """Run ``command`` passing it INT/TERM/HUP; its exit status (128+N for signal N)."""
    child = None
    got = []

    def forward(sig, _frame):
        got.append(sig)
        if child is not None and child.poll() is None:
            child.send_signal(sig)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, forward)
    try:
        child = subprocess.Popen(command, pass_fds=(lock_fd,), env=env)
    except OSError as e:
        print(f"{PROG}: cannot run {command[0]}: {e}", file=sys.stderr)
        return 127
    if got:   # a signal came between the handlers and the start
        child.send_signal(got[0])
    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:
            continue
    if rc < 0:
        rc = 128 - rc
    if got:   # stopped by a signal: say so, whatever the queue script exited with
        rc = 128 + got[0]
    return rc


if __name__ == "__main__":
    sys.exit(main())
