"""Where a figure came from: the commit, the date, the CPU class and the command.

Every results file pyspk writes (``results.json`` of the report stage, the pages under
``docs/results/``) carries this record, so a table can always be traced to the code and the
machine that produced it. The CPU class is the model name plus the instruction sets that
change training speed and precision here (``avx512_bf16``, ``amx``; else ``avx2``/``avx512``),
which is what decides whether two timings may be compared.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

# instruction-set flags worth naming, most capable first (/proc/cpuinfo spellings)
_CLASS_FLAGS = (("amx_tile", "AMX"), ("avx512_bf16", "avx512_bf16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def cpu_class(cpuinfo: str = "/proc/cpuinfo") -> str:
    """'<cores>-core <model name> (<flags>)', e.g. '2-core Intel Xeon ... (AMX, avx512_bf16)'."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags":
            flags = set(value.split())
    named = [label for flag, label in _CLASS_FLAGS if flag in flags]
    if "AVX-512" in named and len(named) > 1 and named[0] != "AVX-512":
        named.remove("AVX-512")  # implied by the bf16 / AMX flags named before it
    if "AVX2" in named and len(named) > 1:
        named.remove("AVX2")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores}-core {model}" + (f" ({', '.join(named)})" if named else "")


def git_commit(root: Optional[Path] = None) -> str:
    """Short commit of the checkout holding ``root`` (default: this package), '+dirty' when
    tracked files differ from it; 'unknown' outside a git checkout."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def provenance(command: str, root: Optional[Path] = None) -> dict:
    """The record stored beside a result: commit, UTC date, CPU class, command."""
    return {
        "commit": git_commit(root),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "cpu": cpu_class(),
        "command": command,
    }


def header(record: dict) -> str:
    """One markdown line naming a result's commit, date, CPU class and command."""
    return (
        f"Commit {record.get('commit', 'unknown')}, {record.get('date', 'unknown date')}, "
        f"{record.get('cpu', 'unknown CPU')}; command: `{record.get('command', '')}`"
    )
