"""Test-only: record every file a pyspk process opens, lists or writes.

Put on PYTHONPATH by tests/conftest.py with PYSPK_TRACE_FILE set; Python's audit hooks
("open", "os.listdir", "os.scandir", "glob.glob", "os.rename", "os.replace") append one
line per event, "STAMP<TAB>R|W|L<TAB>path", to that file (O_APPEND: every process of the
run shares it). STAMP is the stage the process runs for (PYSPK_STAMP, set by
utils/stamped.sh for its command and inherited by its jobs), "-" outside any stage.
Not used by the toolkit itself.
"""

import os
import sys

_out = os.environ.get("PYSPK_TRACE_FILE")
if _out:
    _fd = os.open(_out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _stage = os.environ.get("PYSPK_STAMP", "-")
    _busy = []

    def _rec(kind, path):
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, (str, os.PathLike)):
            return
        line = f"{_stage}\t{kind}\t{os.path.abspath(os.fspath(path))}\n"
        os.write(_fd, line.encode("utf-8", "surrogateescape"))

    def _hook(event, args):
        if _busy or event not in ("open", "os.listdir", "os.scandir", "glob.glob", "os.rename", "os.replace"):
            return
        _busy.append(1)
        try:
            if event == "open":
                path, mode, flags = args
                write = (mode is not None and any(c in mode for c in "wax+")) or (
                    mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
                )
                _rec("W" if write else "R", path)
            elif event in ("os.rename", "os.replace"):
                _rec("W", args[1])
            elif event == "glob.glob":
                _rec("L", os.path.dirname(args[0]) or ".")
            else:
                _rec("L", args[0] if args[0] is not None else ".")
        finally:
            _busy.pop()

    sys.addaudithook(_hook)
