"""Keep freed heap memory in the process instead of handing it back to the kernel.

glibc serves allocations above ``M_MMAP_THRESHOLD`` (128 KiB at start, then raised
dynamically as mmapped blocks are freed) with fresh ``mmap`` pages, unmapped on free,
and trims the heap top above ``M_TRIM_THRESHOLD``.  A feature job allocates the same
few buffers for every utterance (decoded samples ~0.5 MiB per 8 s, framed signal and
spectrum ~1.6 MiB each), and until the dynamic threshold settles (hundreds of
utterances, sometimes never) each of them pays first-touch page faults.  Fixing both
thresholds makes glibc reuse the freed blocks from the first utterance on.  The gain
is small but steady for a whole job in a fresh process (``bench/bench_fbank.py``, row
``fbank_job_fresh_process_xRT``).

Memory stays bounded: a block above 64 MiB (a whole long recording) is still mmapped
and returned on free, and the per-utterance working set is bounded by the fbank
block size (``pyspk.features.fbank.BLOCK_FRAMES``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


@functools.lru_cache(maxsize=1)
def keep_freed_memory(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Set glibc's mmap/trim thresholds for this process; False where there is no glibc mallopt."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # musl, macOS: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
