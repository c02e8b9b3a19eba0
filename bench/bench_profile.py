#!/usr/bin/env python
"""Where a training step's time goes, per operator, forward and backward apart.

    python bench/bench_profile.py [--quick] [--top N] [--batch B]

For each encoder at its paper size (ECAPA-TDNN C=512, x-vector TDNN 512, ResNet34), in
the shipped layout and in the reference (B, C, T) / NCHW layout, one training step on a
random (B, 200, 80) batch (B = 64; 8 with --quick) under torch.profiler: the forward
(encoder + AAM head + loss) and the backward are profiled separately, and the N operators
with the most self CPU time in each are printed as TSV rows
``profile_<encoder>_<layout>_<phase>_<rank>  ms  ms  <op>: <share>% of the phase, <calls> calls``,
plus each phase's total. docs/speed.md reads these tables.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyspk.models import build_encoder  # noqa: E402
from pyspk.train.config import config_from_dict  # noqa: E402
from pyspk.train.objective import SpeakerModel, build_head  # noqa: E402

ENCODERS = {"ecapa_tdnn": {"channels": 512}, "tdnn": {}, "resnet34": {}}


def row(figure, value, unit, note=""):
    print(f"{figure}\t{value}\t{unit}\t{note}", flush=True)


def _table(prof, top):
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return total, [(e.key, e.self_cpu_time_total, e.count) for e in events[:top]]


def profile_step(name, kwargs, batch, layout, top):
    torch.manual_seed(0)
    enc = build_encoder(name, **kwargs)
    if layout == "reference":
        enc.to(memory_format=torch.contiguous_format)
        enc.forward = enc.forward_reference
    cfg = config_from_dict({"loss": {"cls": "aam"}})
    model = SpeakerModel(enc, build_head(cfg.loss, enc.embed_dim, 200))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, labels = torch.randn(batch, 200, 80), torch.arange(batch) // 4
    for _ in range(2):                                  # warm-up: allocator, oneDNN primitives
        _, loss, _ = model(x, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with profile(activities=[ProfilerActivity.CPU]) as fwd:
        _, loss, _ = model(x, labels)
    opt.zero_grad()
    with profile(activities=[ProfilerActivity.CPU]) as bwd:
        loss.backward()
    for phase, prof in (("forward", fwd), ("backward", bwd)):
        total, ops = _table(prof, top)
        tag = f"profile_{name}_{layout}_{phase}"
        row(f"{tag}_total", f"{total / 1e3:.1f}", "ms", f"self CPU time of every op, batch {batch}x200")
        for i, (op, us, calls) in enumerate(ops, 1):
            row(f"{tag}_{i}", f"{us / 1e3:.1f}", "ms", f"{op}: {100 * us / total:.0f}% of the phase, {calls} calls")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 8 (a smoke run)")
    p.add_argument("--top", type=int, default=8, help="operators per phase")
    p.add_argument("--batch", type=int, default=None)
    args = p.parse_args(argv)
    logging.disable(logging.INFO)
    batch = args.batch or (8 if args.quick else 64)
    row("torch_threads", torch.get_num_threads(), "threads", "")
    for name, kwargs in ENCODERS.items():
        for layout in ("eager", "reference"):
            profile_step(name, kwargs, batch, layout, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
