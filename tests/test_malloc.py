"""pyspk/malloc.py: large blocks reused from the heap instead of faulted in again each time."""

import os
import subprocess
import sys

import pytest

from pyspk import malloc

_CHILD = """
import resource, sys, torch
from pyspk.malloc import keep_freed_memory
on = keep_freed_memory()
for i in range(40):                            # the heap settles within the first few
    if i == 30:
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 * 2**20).fill_(1.0)        # 64 MiB, above glibc's largest mmap threshold
print(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _child(**env):
    out = subprocess.run([sys.executable, "-c", _CHILD], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd(), **env})
    on, faults = out.stdout.split()
    return on == "True", int(faults)


@pytest.mark.skipif(malloc.platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_reuses_large_blocks_instead_of_faulting_them_in_every_time():
    on_sys, faults_sys = _child(PYSPK_MALLOC="system", LD_PRELOAD="")
    on_keep, faults_keep = _child(PYSPK_MALLOC="keep", LD_PRELOAD="")
    assert (on_sys, on_keep) == (False, True)
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    # glibc's defaults: each of the last 10 blocks faulted in again (10 x pages, fewer with
    # transparent huge pages); kept: reused, (almost) nothing faulted in
    assert faults_keep < pages
    assert faults_keep * 5 < faults_sys


def test_preloaded_allocator_and_system_are_left_alone(monkeypatch):
    monkeypatch.setattr(malloc, "_done", None)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    monkeypatch.delenv("PYSPK_MALLOC", raising=False)
    assert malloc._preloaded_allocator() == "tcmalloc"
    assert malloc.keep_freed_memory() is False
    monkeypatch.setattr(malloc, "_done", None)
    monkeypatch.setenv("LD_PRELOAD", "")
    monkeypatch.setenv("PYSPK_MALLOC", "system")
    assert malloc.keep_freed_memory() is False
