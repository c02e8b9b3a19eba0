#!/usr/bin/env python3
"""Speed of SynthCeleb generation (synth/make_synth.py), against its targets:
tiny < 10 s, default < 180 s on 2 cores (--nj 2).

    bench/bench_synth.py [--quick] [--nj 2] [--keep DIR]

Prints TSV rows figure/value/unit/note. Wall time depends on what else runs on the
machine, so the CPU seconds of the generator and its workers are printed too
(CPU / 2 is the wall time an idle 2-core machine would need, spawn overhead aside).
--quick measures the tiny size only.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pyspk.bin._args import positive_int  # noqa: E402


def measure(size: str, nj: int, out: Path) -> tuple[float, float, int]:
    """(wall s, CPU s of the process tree, number of utterances) of one fresh generation."""
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "synth" / "make_synth.py"),
            "--out-dir",
            str(out),
            "--size",
            size,
            "--seed",
            "777",
            "--nj",
            str(nj),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    n = sum(1 for _ in open(out / "synth_train" / "wav.scp")) + sum(1 for _ in open(out / "synth_test" / "wav.scp"))
    return wall, cpu, n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--nj", type=positive_int, default=2)
    p.add_argument("--keep", type=Path, default=None, help="generate here and keep it (default: a temp dir)")
    args = p.parse_args(argv)
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench_synth."))
    targets = {"tiny": 10.0, "default": 180.0}
    load = os.getloadavg()[0]
    try:
        for size in ["tiny"] + ([] if args.quick else ["default"]):
            wall, cpu, n = measure(size, args.nj, base / size)
            note = f"target < {targets[size]:.0f} s; ratio {wall / targets[size]:.2f}; load avg {load:.1f} at start"
            print(f"synth_{size}_wall\t{wall:.1f}\ts\t{note}; nj={args.nj}")
            print(f"synth_{size}_cpu\t{cpu:.1f}\tcpu-s\t{n} utterances; idle 2-core estimate {cpu / 2:.1f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
