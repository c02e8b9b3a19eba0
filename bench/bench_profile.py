#!/usr/bin/env python
"""Where a training step's time goes, per operator, forward and backward apart.

    python bench/bench_profile.py [--quick] [--top N] [--batch B]

For each encoder at its paper size (ECAPA-TDNN C=512, x-vector TDNN 512, ResNet34), in
the shipped layout and in the reference (B, C, T) / NCHW layout, one training step on a
random (B, 200, 80) batch (B = 64; 8 with --quick) under torch.profiler: the forward
(encoder + AAM head + loss) and the backward are profiled separately, and the N operators
with the most self CPU time in each are printed as TSV rows
``profile_<encoder>_<layout>_<phase>_<rank>  ms  ms  <op>: <share>% of the phase, <calls> calls``,
plus each phase's total; ``--compiled`` adds each encoder's compiled step (one table: the
GEMMs against inductor's fused kernels). ``layout_*`` rows time single products forward +
backward: a kernel-1 ``conv1d`` on (B, C, T) against the same ``F.linear`` on (B, T, C), and
the 64-channel dilated Res2Net convolution both ways. docs/speed.md reads these tables.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
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
    cfg = config_from_dict({"head": {"name": "aam"}})
    model = SpeakerModel(enc, build_head(cfg.head, enc.embed_dim, 200))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, labels = torch.randn(batch, 200, 80), torch.arange(batch) // 4
    for _ in range(2):  # warm-up: allocator, oneDNN primitives
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


def _time(fn, n=5):
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def layout_rows(batch):
    """GFLOP/s of single convolutions, forward + backward, (B, C, T) conv1d vs frames as rows."""
    import torch.nn.functional as F

    from pyspk.models.layers import conv_rows

    t = 200
    for cin, cout, k, d in ((1536, 1536, 1, 1), (512, 512, 1, 1), (4608, 128, 1, 1), (64, 64, 3, 2), (64, 64, 3, 4)):
        flops = 3 * 2 * batch * t * cin * cout * k
        conv = torch.nn.Conv1d(cin, cout, k, dilation=d, padding=d * (k - 1) // 2)
        x = torch.randn(batch, cin, t, requires_grad=True)
        xr = torch.randn(batch, t, cin, requires_grad=True)

        def bct():
            y = F.conv1d(x, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation)
            y.backward(torch.ones_like(y))

        def rows():
            y = conv_rows(conv, xr)
            y.backward(torch.ones_like(y))

        a, b = flops / _time(bct) / 1e9, flops / _time(rows) / 1e9
        row(
            f"layout_{cin}to{cout}_k{k}_d{d}",
            f"{b:.0f}",
            "GFLOP/s",
            f"frames as rows (conv_rows); conv1d on (B, C, T): {a:.0f} GFLOP/s; batch {batch}x{t}, fwd + bwd",
        )


def fft_rows():
    """The noise augmentation's FFT: utterance lengths as they come against next_fast_len."""
    import numpy as np
    from scipy import fft as sfft

    from pyspk.augment.signals import coloured_noise

    rng = np.random.default_rng(0)
    lens = [int(n) for n in rng.integers(32000, 128000, 40)]  # 2-8 s at 16 kHz, as SynthCeleb's

    def arbitrary():
        for n in lens:
            np.fft.irfft(np.fft.rfft(rng.standard_normal(n)), n=n)

    def fast():
        for n in lens:
            m = sfft.next_fast_len(n, real=True)
            sfft.irfft(sfft.rfft(rng.standard_normal(m)), n=m)

    a, b = _time(arbitrary, 2) / len(lens), _time(fast, 2) / len(lens)
    row(
        "fft_noise_ms_arbitrary_length",
        f"{1e3 * a:.2f}",
        "ms",
        "numpy rfft + irfft of white noise, 2-8 s lengths as they come",
    )
    row("fft_noise_ms_fast_length", f"{1e3 * b:.2f}", "ms", f"scipy.fft at next_fast_len ({a / b:.1f}x faster)")
    c = _time(lambda: [coloured_noise(n, 1.0, rng) for n in lens], 2) / len(lens)
    row("coloured_noise_ms", f"{1e3 * c:.2f}", "ms", "pyspk.augment.signals.coloured_noise, same lengths")


def profile_compiled(name, kwargs, batch, top):
    torch.manual_seed(0)
    enc = build_encoder(name, **kwargs)
    enc.compile()
    cfg = config_from_dict({"head": {"name": "aam"}})
    model = SpeakerModel(enc, build_head(cfg.head, enc.embed_dim, 200))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, labels = torch.randn(batch, 200, 80), torch.arange(batch) // 4

    def step():
        _, loss, _ = model(x, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    total, ops = _table(prof, top)
    tag = f"profile_{name}_compiled_step"
    row(
        f"{tag}_total",
        f"{total / 1e3:.1f}",
        "ms",
        f"self CPU time of every op, forward + backward + Adam, batch {batch}x200",
    )
    for i, (op, us, calls) in enumerate(ops, 1):
        op = "inductor fused kernels (CompiledFxGraph)" if "CompiledFxGraph" in op else op
        row(f"{tag}_{i}", f"{us / 1e3:.1f}", "ms", f"{op}: {100 * us / total:.0f}% of the step, {calls} calls")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 8 (a smoke run)")
    p.add_argument("--top", type=int, default=8, help="operators per phase")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument(
        "--compiled",
        action="store_true",
        help="also profile compiled steps (each compiles first; slow on a cold cache)",
    )
    args = p.parse_args(argv)
    logging.disable(logging.INFO)
    batch = args.batch or (8 if args.quick else 64)
    row("torch_threads", torch.get_num_threads(), "threads", "")
    layout_rows(batch)
    fft_rows()
    for name, kwargs in ENCODERS.items():
        for layout in ("eager", "reference"):
            profile_step(name, kwargs, batch, layout, args.top)
        if args.compiled:
            profile_compiled(name, kwargs, batch, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
