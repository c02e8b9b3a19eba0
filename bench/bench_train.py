#!/usr/bin/env python
"""Training benchmarks on CPU: throughput per encoder, the cost of the proposed objective,
model FLOP/s against the machine's matmul FLOP/s, and peak memory of the synth config.

    python bench/bench_train.py [--quick] [--threads N]

Prints TSV rows ``figure<TAB>value<TAB>unit<TAB>note``:

* ``train_frames_per_s_<encoder>``: full training steps (forward, AAM head, backward,
  Adam) on random (B, 200, 80) features, B = 32 (8 with --quick); feature loading
  excluded. Encoders at their paper sizes: ECAPA-TDNN C=512, x-vector TDNN 512, ResNet34.
* ``objective_overhead_ecapa512``: per-step time of AAM + AM-SupCon + CAA + MGDA over
  AAM alone, ECAPA-512 at 128 x 200 frames (with --quick 32 x 200), steps of the two
  alternated so that load changes hit both alike; median of the step times. Target <= 10%.
* ``model_flops_ratio_<encoder>``: model FLOP/s achieved in those training steps
  (FLOPs of one step counted with torch.utils.flop_counter.FlopCounterMode) divided by
  float32 matmul FLOP/s measured in the same run (torch.matmul, 2048^2). Aim > 0.3.
* ``peak_rss_synth_train``: peak resident memory (VmHWM) of a child process that trains
  conf/synth/proposed.yaml for a few steps on a generated dir of SynthCeleb's size
  (200 speakers, 80-dim features, features read on demand as the config says).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyspk.models import build_encoder  # noqa: E402
from pyspk.train.config import config_from_dict  # noqa: E402
from pyspk.train.objective import Objective, SpeakerModel, build_head  # noqa: E402

ENCODERS = {"ecapa_tdnn": {"channels": 512}, "tdnn": {}, "resnet34": {}}
NUM_SPK = 200


def row(figure, value, unit, note=""):
    print(f"{figure}\t{value}\t{unit}\t{note}", flush=True)


def make_step(encoder, kwargs, loss_cfg, batch, frames, seed=0):
    """A closure running one training step on a fixed random batch (P x 4 layout)."""
    torch.manual_seed(seed)
    cfg = config_from_dict(loss_cfg)
    enc = build_encoder(encoder, **kwargs)
    model = SpeakerModel(enc, build_head(cfg.loss, enc.embed_dim, NUM_SPK))
    objective = Objective(cfg.loss, cfg.balance, NUM_SPK, enc.embed_dim)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, frames, 80)
    labels = torch.arange(batch) // 4

    def step():
        z, loss_cls, _ = model(x, labels)
        total, _ = objective(z, loss_cls, labels, model.head)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        objective.after_step(z, labels)
    return step


def matmul_flops(n=2048, reps=5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def step_flops(step):
    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


AAM = {"loss": {"cls": "aam"}}
PROPOSED = {"loss": {"cls": "aam", "con": "am_supcon", "caa": True}, "balance": {"kind": "mgda"}}


def bench_throughput(batch, steps, peak):
    for name, kwargs in ENCODERS.items():
        step = make_step(name, kwargs, AAM, batch, 200)
        step()                                    # warm-up
        flops = step_flops(step)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        dt = statistics.median(times)
        row(f"train_frames_per_s_{name}", f"{batch * 200 / dt:.0f}", "frames/s",
            f"{name} {kwargs or 'default'}, batch {batch}x200, AAM, median of {steps} steps")
        ratio = flops / dt / peak
        row(f"model_flops_ratio_{name}", f"{ratio:.3f}", "ratio",
            f"{flops / dt / 1e9:.1f} GFLOP/s model / {peak / 1e9:.1f} GFLOP/s matmul; aim > 0.3")


def bench_overhead(batch, steps):
    aam = make_step("ecapa_tdnn", {"channels": 512}, AAM, batch, 200)
    prop = make_step("ecapa_tdnn", {"channels": 512}, PROPOSED, batch, 200)
    aam(), prop()
    ta, tp = [], []
    for _ in range(steps):
        for fn, acc in ((aam, ta), (prop, tp)):
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    a, p = statistics.median(ta), statistics.median(tp)
    over = (p - a) / a
    row("objective_overhead_ecapa512", f"{100 * over:.1f}", "%",
        f"AAM+AM-SupCon+CAA+MGDA {p:.2f}s vs AAM {a:.2f}s per step, batch {batch}x200, "
        f"median of {steps} alternated steps; target <= 10% ({'met' if over <= 0.10 else 'NOT met'})")


def bench_peak_memory(steps):
    from pyspk.train.toydata import make_toy_train_dir
    with tempfile.TemporaryDirectory() as tmp:
        make_toy_train_dir(f"{tmp}/train", num_speakers=NUM_SPK, utts_per_speaker=4, num_frames=400,
                           feat_dim=80, copies=1)
        code = (
            "import logging; logging.disable(logging.INFO)\n"
            "from pyspk.train.config import load_config\n"
            "from pyspk.train.trainer import train\n"
            f"cfg = load_config('{REPO}/conf/synth/proposed.yaml', "
            f"{{'train': {{'epochs': 1, 'steps_per_epoch': {steps}, 'average_last': 1}}}})\n"
            f"train(cfg, '{tmp}/train', '{tmp}/exp', 0)\n"
            # VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork/exec)
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n")
        out = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
        kb = int(out.stdout.split()[-1])
    row("peak_rss_synth_train", f"{kb / 1024:.0f}", "MiB",
        f"VmHWM of a process training conf/synth/proposed.yaml for {steps} steps on 200 speakers x 8 utts "
        "(with copies) of 400 frames")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller batches, fewer steps (about a minute)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    logging.disable(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    row("torch_threads", torch.get_num_threads(), "threads", f"cpus {os.cpu_count()}; timings on a shared "
        "machine are noisy")
    peak = matmul_flops()
    row("matmul_gflops_fp32", f"{peak / 1e9:.1f}", "GFLOP/s", "torch.matmul 2048x2048 float32")
    bench_throughput(batch=8 if args.quick else 32, steps=2 if args.quick else 5, peak=peak)
    bench_overhead(batch=32 if args.quick else 128, steps=2 if args.quick else 4)
    bench_peak_memory(steps=3 if args.quick else 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
