"""Keep freed memory in the process instead of handing it back to the kernel at every step.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB on 64-bit
Linux) with a fresh ``mmap`` and returns it with ``munmap`` when freed. A training step on
CPU allocates and frees the same large activations every step (ECAPA-TDNN C=512 at
64 x 200: 78 MB per 1536-channel map; ResNet34's first stage: 131 MB per map), so each step
faults every page of them in again and the kernel zeroes each one: minor page faults by
the million and a large share of each step spent in system time (``python
bench/bench_train.py --rows allocator`` measures the difference on the machine at hand;
docs/speed.md).

:func:`keep_freed_memory` tells glibc (``mallopt``) to serve large blocks from its heap
(``M_MMAP_MAX`` = 0) and not to shrink the heap below 2 GiB of free top
(``M_TRIM_THRESHOLD``), so after the first step the same pages are reused. The cost is
that a process keeps its peak heap until it exits, which is what a training, feature or
extraction job does anyway. A feature job gains too: it allocates the same few buffers for
every utterance (decoded samples, framed signal, spectrum), and glibc's dynamic mmap
threshold would make the first hundreds of them pay page faults (``bench/bench_fbank.py``,
row ``fbank_job_fresh_process_xRT``).

The one policy of pyspk, called by the trainer and by each feature and extraction job
(``pyspk train``, ``pyspk fbank`` and ``pyspk augment``, ``pyspk extract``); not on import,
so a program that imports pyspk keeps its own allocator settings. ``PYSPK_MALLOC=system``
leaves glibc's defaults alone, in all of them; a process with another allocator preloaded
(``LD_PRELOAD`` of tcmalloc or jemalloc) is left alone too. On a libc without ``mallopt``
(musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: free top above ~2 GiB still goes back

_done: bool | None = None


def _preloaded_allocator() -> str | None:
    for lib in os.environ.get("LD_PRELOAD", "").replace(":", " ").split():
        for name in ("tcmalloc", "jemalloc", "mimalloc"):
            if name in os.path.basename(lib):
                return name
    return None


def keep_freed_memory() -> bool:
    """Switch glibc malloc to heap-only large blocks (see the module docstring). Returns
    whether the settings are in effect; idempotent, never raises."""
    global _done
    if _done is not None:
        return _done
    _done = False
    choice = os.environ.get("PYSPK_MALLOC", "keep").strip().lower()
    if choice == "system":
        log.debug("PYSPK_MALLOC=system: glibc malloc defaults kept")
        return False
    if choice != "keep":
        log.warning("PYSPK_MALLOC=%r: unknown value (keep or system); using keep", choice)
    other = _preloaded_allocator()
    if other:
        log.debug("%s preloaded: malloc settings left to it", other)
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    # mallopt returns 1 on success
    _done = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _done


def _mallopt():
    """glibc's ``mallopt(int, int)``; None on another libc."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
