#!/usr/bin/env python
"""Side by side with WeSpeaker's ECAPA-TDNN: training frames/s in one process, steps alternated.

    python bench/bench_peer.py --wespeaker DIR [--batch 64] [--steps 4] [--threads 2]

DIR is a checkout of https://github.com/wenet-e2e/wespeaker (the folder holding the
``wespeaker`` package); nothing of it is copied into pyspk, the script imports it from there
and is skipped (rc 0, one row saying so) without it. Same batch (B x 200 x 80, random), same
Adam, 200 speakers, one step each of: WeSpeaker ``ECAPA_TDNN_c512`` (ASTP pooling, no global
context) and ``ECAPA_TDNN_GLOB_c512`` (global context, pyspk's default) with their
``ArcMarginProduct`` and cross-entropy; pyspk ``ecapa_tdnn`` C=512 + AAM in the reference
layout, the shipped eager layout and compiled, in turn, round after round, so that load changes
hit all alike; medians. FLOPs per step counted on eager steps (FlopCounterMode). The process
keeps freed memory in the heap as pyspk's trainer does (``pyspk/malloc.py``), for every model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_train import AAM, gemm_peak, make_step, step_flops  # noqa: E402


def row(figure, value, unit, note=""):
    print(f"{figure}\t{value}\t{unit}\t{note}", flush=True)


def peer_step(glob: bool, batch: int):
    from wespeaker.models.ecapa_tdnn import ECAPA_TDNN_c512, ECAPA_TDNN_GLOB_c512
    from wespeaker.models.projections import ArcMarginProduct

    torch.manual_seed(0)
    model = (ECAPA_TDNN_GLOB_c512 if glob else ECAPA_TDNN_c512)(feat_dim=80, embed_dim=192)
    head = ArcMarginProduct(192, 200, scale=32.0, margin=0.2)
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-3)
    x, labels = torch.randn(batch, 200, 80), torch.arange(batch) // 4

    def step():
        out = model(x)
        emb = out[-1] if isinstance(out, tuple) else out
        loss = F.cross_entropy(head(emb, labels), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wespeaker", default=None, help="checkout holding the wespeaker package")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.wespeaker or not (Path(args.wespeaker) / "wespeaker" / "models" / "ecapa_tdnn.py").is_file():
        row("peer_skipped", 1, "", "no --wespeaker checkout given (git clone https://github.com/wenet-e2e/wespeaker)")
        return 0
    # the model files only: wespeaker/__init__.py pulls in its CLI's dependencies (silero_vad, ...)
    import types

    root = Path(args.wespeaker).resolve() / "wespeaker"
    for name, path in (("wespeaker", root), ("wespeaker.models", root / "models")):
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod
    from pyspk.malloc import keep_freed_memory

    keep_freed_memory()  # as pyspk's trainer does; a process setting, so WeSpeaker's steps get it too
    peak = gemm_peak()
    b = args.batch
    kw = {"channels": 512}
    steps = {
        "wespeaker_c512": peer_step(False, b),
        "wespeaker_glob_c512": peer_step(True, b),
        "pyspk_reference": make_step("ecapa_tdnn", kw, AAM, b, 200, mode="reference"),
        "pyspk_eager": make_step("ecapa_tdnn", kw, AAM, b, 200, mode="eager"),
    }
    # FlopCounterMode does not see inside train.gemm: onednn's custom op (the same products):
    # the shipped layout's FLOPs are counted on its MKL step
    counted = dict(steps, pyspk_eager=make_step("ecapa_tdnn", kw, AAM, b, 200, mode="eager_mkl"))
    flops = {name: step_flops(fn) for name, fn in counted.items()}
    steps["pyspk_compiled"] = make_step("ecapa_tdnn", kw, AAM, b, 200, mode="compiled")
    flops["pyspk_compiled"] = flops["pyspk_eager"]
    for fn in steps.values():
        fn()  # warm-up (and the compile)
    times = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, fn in steps.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["wespeaker_c512"])
    for name in steps:
        dt = statistics.median(times[name])
        row(
            f"peer_frames_per_s_{name}",
            f"{b * 200 / dt:.0f}",
            "frames/s",
            f"{dt:.2f} s/step, {flops[name] / 1e9:.0f} GFLOP/step, model FLOP/s {flops[name] / dt / peak:.3f} of "
            f"matmul; {base / dt:.2f}x WeSpeaker ECAPA_TDNN_c512's frames/s (batch {b}x200, {args.threads} threads)",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
