#!/usr/bin/env python
"""Training benchmarks on CPU: throughput per encoder, the cost of the proposed objective,
model FLOP/s against the machine's matmul FLOP/s, and peak memory of the synth config.

    python bench/bench_train.py [--quick] [--threads N]

Prints TSV rows ``figure<TAB>value<TAB>unit<TAB>note``:

* ``train_frames_per_s_<encoder>_b<B>_<mode>``: full training steps (forward, AAM head,
  backward, Adam) on random (B, 200, 80) features, B = 64 and 32 (8 with --quick), feature
  loading excluded, for three modes of the same weights: ``reference`` (the (B, C, T) /
  NCHW textbook layout, ``forward_reference``), ``eager`` (the shipped layout: frames as
  rows, channels-last ResNet) and ``compiled`` (that, ``train.compile: true``; its one-off
  compile time is its own row, ``compile_s_<encoder>``); with --autotune a fourth,
  ``autotune`` (``torch.compile(mode="max-autotune-no-cudagraphs")``: inductor's C++ GEMM
  templates, with the elementwise work after a GEMM fused in, timed against ATen's; an
  experiment, not a recipe setting: docs/speed.md). Encoders at their paper sizes:
  ECAPA-TDNN C=512, x-vector TDNN 512, ResNet34; --encoders and --batches pick a subset, --rows the groups of rows.
* ``adam_step_ms_<encoder>_<impl>``: the Adam update alone over the encoder's and an AAM
  head's parameters, per kernel (``optim.impl``): loop (PyTorch's CPU default), foreach,
  fused (the trainer's default); ``--modes compiled,compiled_loop`` times whole steps with each,
  ``compiled_bf16`` the step with the encoder under bfloat16 autocast (``train.cpu_amp``),
  its FLOP/s against the bfloat16 matmul peak of the run.
* ``train_step_ms_synth_{float32_eager,float32,float32_mkl,shipped}``: conf/synth/aam.yaml's step on a
  random tensor in eager float32, compiled float32 (``train.cpu_amp`` off; with ``train.gemm: mkl``) and as shipped (auto: on where the CPU has bfloat16 GEMMs), one
  process on every thread.
* ``train_steps_per_s_synth_{one_process,side_by_side}``: conf/synth/aam.yaml's step on a
  random tensor in one process on every thread, against one process per core at once (what
  ``run.sh --train-jobs auto`` does in stage 3); the steps/s of the machine either way.
* ``objective_overhead_ecapa512``: per-step time of AAM + AM-SupCon + CAA + MGDA over
  AAM alone, ECAPA-512 at 128 x 200 frames (with --quick 32 x 200), steps of the two
  alternated so that load changes hit both alike; median of the step times. Target <= 10%.
* ``model_flops_ratio_<encoder>_b<B>_<mode>``: model FLOP/s achieved in those steps (the
  FLOPs that mode executes in one step, counted with torch.utils.flop_counter.FlopCounterMode)
  divided by the float32 GEMM FLOP/s of the same run (2048^2, best of 8 trials, the faster of
  torch.matmul and the same product through oneDNN: on AMD EPYC MKL's float32 GEMM is the
  slower). Target >= 0.65 for the shipped modes.
* ``train_real_loop_ratio_synth``: conf/synth/aam.yaml's real training loop (features read
  from ark on demand, VAD, CMN, crops, SpecAugment; the trainer's own step) on a generated
  dir of SynthCeleb's shape, frames/s divided by the same trainer's steps on a random tensor
  of the batch's shape. Target >= 0.9.
* ``train_loader_ms_per_batch_synth_{float32,compressed}``: conf/synth/aam.yaml's loader alone
  (read on demand, VAD, CMN, crops, SpecAugment; one thread, no training) on the same generated
  dir of SynthCeleb's shape, its features stored as float32 and as Kaldi compressed matrices
  (``--compress-feats true``), batches of the two alternated; with the ark bytes each reads. The
  arks are in the page cache: what compression costs in decoding, not what it saves on a disk.
* ``alloc_step_s_<encoder>_{system,keep}``: an eager step at 64 x 200 (16 x 200 with --quick)
  in a child process with glibc malloc's defaults (``PYSPK_MALLOC=system``: every block above
  32 MiB mmapped and unmapped, so every step faults its activations in again) against what the
  trainer sets (``pyspk/malloc.py``: large blocks kept in the heap), with the system time and
  minor page faults per step. This process, and so every other row, runs with the trainer's setting.
* ``balance_step_ratio_<encoder>_<balancer>``: the proposed objective's whole step (forward,
  losses, balance, backward, Adam) with each balancer, over the same step with the fixed sum:
  ``mgda_embeddings`` (MGDA-UB, gradients of the embeddings), ``mgda_parameters`` and
  ``nash_mtl_parameters`` (gradients of the encoder's parameters: one more backward through the
  encoder). The speechocean762 recipe's TDNN and ECAPA-TDNN C=512, 128 x 200 (32 with --quick),
  bfloat16 autocast where the CPU has it.
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
sys.path.insert(0, str(REPO / "tests"))  # toydata, the tests' fixture

from pyspk.models import build_encoder  # noqa: E402
from pyspk.models.layers import GEMM_BACKENDS, default_gemm_backend, set_gemm_backend  # noqa: E402
from pyspk.train.config import config_from_dict  # noqa: E402
from pyspk.train.objective import Objective, SpeakerModel, build_head  # noqa: E402
from pyspk.train.trainer import build_optimizer, resolve_cpu_amp  # noqa: E402

ENCODERS = {"ecapa_tdnn": {"channels": 512}, "tdnn": {}, "resnet34": {}}
NUM_SPK = 200


def row(figure, value, unit, note=""):
    print(f"{figure}\t{value}\t{unit}\t{note}", flush=True)


def make_step(encoder, kwargs, loss_cfg, batch, frames, seed=0, mode="eager"):
    """A closure running one training step on a fixed random batch (P x 4 layout).
    ``mode``: eager (the shipped layout), reference (forward_reference), compiled,
    autotune (compiled with mode max-autotune-no-cudagraphs); suffixes ``_loop`` or
    ``_foreach`` pick that Adam kernel instead of the trainer's default (fused), ``_bf16`` runs
    the encoder under bfloat16 autocast as ``train.cpu_amp`` does."""
    torch.manual_seed(seed)
    mode, *flags = mode.split("_")
    impl = next((f for f in flags if f in ("loop", "foreach")), "fused")
    bf16 = "bf16" in flags
    # train.gemm: auto, as the trainer resolves it, unless the mode names a library
    gemm = next((f for f in flags if f in GEMM_BACKENDS), default_gemm_backend())
    cfg = config_from_dict({**loss_cfg, "optim": {"impl": impl, "lr": 1e-3}})
    enc = build_encoder(encoder, **kwargs)
    if mode == "reference":
        enc.to(memory_format=torch.contiguous_format)
        enc.forward = enc.forward_reference
    elif mode == "compiled":
        enc.compile()
    elif mode == "autotune":
        enc.compile(mode="max-autotune-no-cudagraphs")
    model = SpeakerModel(enc, build_head(cfg.head, enc.embed_dim, NUM_SPK))
    objective = Objective(cfg, NUM_SPK, enc.embed_dim, head=model.head, encoder=enc)
    opt = build_optimizer(cfg.optim, model.parameters())
    x = torch.randn(batch, frames, 80)
    labels = torch.arange(batch) // 4

    def step():
        set_gemm_backend(gemm)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z, loss_cls, _ = model(x, labels)
        total, _ = objective(z, loss_cls, labels)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        objective.after_step(z, labels)

    return step


def matmul_flops(n=2048, reps=3, trials=8, dtype=torch.float32, via="matmul"):
    """GEMM FLOP/s of an n x n x n product: the best of ``trials`` timings of ``reps`` products.
    ``via="matmul"``: torch.matmul (MKL for float32); ``via="onednn"``: the same product as a
    1x1 channels-last convolution, which PyTorch runs with oneDNN. On some CPUs the two differ
    widely (MKL's float32 GEMM on AMD EPYC); :func:`gemm_peak` takes the better."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    if via == "onednn":
        x = a.t().contiguous().view(1, n, n, 1).contiguous(memory_format=torch.channels_last)
        k = b.view(n, n, 1, 1)

        def prod():
            return torch.nn.functional.conv2d(x, k)
    else:

        def prod():
            return torch.matmul(a, b)

    prod()
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            prod()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best


def gemm_peak():
    """float32 GEMM peak of this machine: the faster of MKL's (torch.matmul) and oneDNN's; each
    printed as a row."""
    mkl, dnn = matmul_flops(), matmul_flops(via="onednn")
    row("matmul_gflops_fp32", f"{mkl / 1e9:.1f}", "GFLOP/s", "torch.matmul 2048x2048 float32")
    row(
        "onednn_gemm_gflops_fp32",
        f"{dnn / 1e9:.1f}",
        "GFLOP/s",
        "the same product as a 1x1 convolution (oneDNN), float32",
    )
    return max(mkl, dnn)


def step_flops(step):
    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


AAM = {"head": {"name": "aam"}}
PROPOSED = {**AAM, "pair_loss": {"name": "am_supcon"}, "pair_weights": {"name": "caa"}, "balance": {"name": "mgda"}}


def bench_throughput(batches, steps, peak, modes=("reference", "eager", "compiled"), encoders=None):
    peak_bf16 = None  # measured at the first bfloat16 mode
    for name, kwargs in ENCODERS.items():
        if encoders and name not in encoders:
            continue
        for batch in batches:
            # FLOPs are counted on eager steps: a compiled module run once under FlopCounterMode
            # is slower afterwards (dynamo re-traces it); inductor does not change the GEMMs.
            # every mode but reference executes the shipped layout's FLOPs; counted with MKL's
            # GEMMs (FlopCounterMode does not see inside train.gemm: onednn's custom op, whose
            # products are the same ones)
            layout = {m: "reference" if m.split("_")[0] == "reference" else "eager" for m in modes}
            counted = {
                lay: step_flops(make_step(name, kwargs, AAM, batch, 200, mode=lay + "_mkl"))
                for lay in set(layout.values())
            }
            flops = {m: counted[layout[m]] for m in modes}
            for mode in modes:
                t0 = time.perf_counter()
                step = make_step(name, kwargs, AAM, batch, 200, mode=mode)
                step()  # warm-up (and the compile)
                if mode in ("compiled", "autotune") and batch == batches[0]:
                    tag = "_autotune" if mode == "autotune" else ""
                    row(
                        f"compile_s_{name}{tag}",
                        f"{time.perf_counter() - t0:.1f}",
                        "s",
                        "first compiled step incl. inductor compile (warm cache: a few s)",
                    )
                times = []
                for _ in range(steps):
                    t = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t)
                dt = statistics.median(times)
                tag = f"{name}_b{batch}_{mode}"
                row(
                    f"train_frames_per_s_{tag}",
                    f"{batch * 200 / dt:.0f}",
                    "frames/s",
                    f"{name} {kwargs or 'default'}, batch {batch}x200, AAM, median of {steps} steps "
                    f"({dt:.2f} s/step, {flops[mode] / 1e9:.0f} GFLOP/step)",
                )
                if "bf16" in mode.split("_"):  # against the bfloat16 matmul peak, no target
                    if peak_bf16 is None:
                        peak_bf16 = matmul_flops(dtype=torch.bfloat16)
                        row(
                            "matmul_gflops_bf16", f"{peak_bf16 / 1e9:.1f}", "GFLOP/s", "torch.matmul 2048x2048 bfloat16"
                        )
                    pk = peak_bf16
                    row(
                        f"model_flops_ratio_{tag}",
                        f"{flops[mode] / dt / pk:.3f}",
                        "ratio",
                        f"{flops[mode] / dt / 1e9:.1f} GFLOP/s model / {pk / 1e9:.1f} GFLOP/s bfloat16 matmul",
                    )
                    continue
                ratio = flops[mode] / dt / peak
                target = "" if mode == "reference" else f"; target >= 0.65 ({'met' if ratio >= 0.65 else 'NOT met'})"
                row(
                    f"model_flops_ratio_{tag}",
                    f"{ratio:.3f}",
                    "ratio",
                    f"{flops[mode] / dt / 1e9:.1f} GFLOP/s model / {peak / 1e9:.1f} GFLOP/s GEMM peak{target}",
                )


def bench_optimizer(steps, encoders=None):
    """The Adam update alone on each encoder's parameters (+ an AAM head), per kernel: loop
    (one tensor at a time, PyTorch's CPU default), foreach, fused (the trainer's default)."""
    for name, kwargs in ENCODERS.items():
        if encoders and name not in encoders:
            continue
        torch.manual_seed(0)
        enc = build_encoder(name, **kwargs)
        model = SpeakerModel(enc, build_head(config_from_dict(AAM).head, enc.embed_dim, NUM_SPK))
        params = list(model.parameters())
        for p_ in params:
            p_.grad = torch.randn_like(p_)
        ms = {}
        for impl in ("loop", "foreach", "fused"):
            opt = build_optimizer(config_from_dict({"optim": {"impl": impl, "lr": 1e-3}}).optim, params)
            opt.step()  # state allocated
            times = []
            for _ in range(steps):
                t = time.perf_counter()
                opt.step()
                times.append(time.perf_counter() - t)
            ms[impl] = 1e3 * statistics.median(times)
        numel = sum(p_.numel() for p_ in params)
        for impl, v in ms.items():
            row(
                f"adam_step_ms_{name}_{impl}",
                f"{v:.1f}",
                "ms",
                f"{len(params)} tensors, {numel / 1e6:.1f} M parameters, median of {steps} steps"
                + (f"; {ms['loop'] / v:.2f}x loop" if impl != "loop" else ""),
            )


def bench_real_loop(steps):
    """conf/synth/aam.yaml's trainer: frames/s through its data loader vs on a random tensor."""
    from toydata import make_toy_train_dir

    from pyspk.train.config import load_config
    from pyspk.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        # SynthCeleb's shape: 200 speakers, utterances of 400-600 frames with VAD, a noisy
        # copy of each (the recipe has four), read from ark on demand as its config says
        make_toy_train_dir(
            f"{tmp}/train",
            num_speakers=NUM_SPK,
            utts_per_speaker=8,
            num_frames=400,
            feat_dim=80,
            copies=1,
            vad=True,
            frame_jitter=200,
        )
        cfg = load_config(
            f"{REPO}/conf/synth/aam.yaml", {"train": {"epochs": 1, "steps_per_epoch": steps + 3, "average_last": 1}}
        )
        tr = Trainer(cfg, f"{tmp}/train", f"{tmp}/exp", 777)
        tr.data.sampler.set_epoch(0)
        n, t0 = 0, None
        for feats, labels in tr.data.loader():
            tr._train_step(tr.model, feats, labels, 0, n)
            n += 1
            if n == 3:
                t0 = time.perf_counter()
        real = (time.perf_counter() - t0) / (n - 3)
        tr.data.sampler.set_epoch(0)
        t = time.perf_counter()
        for i, _ in enumerate(tr.data.loader()):
            if i + 1 == n - 3:
                break
        load = (time.perf_counter() - t) / (n - 3)
        x = torch.randn_like(feats)
        t = time.perf_counter()
        for i in range(n - 3):
            tr._train_step(tr.model, x, labels, 0, i)
        rand = (time.perf_counter() - t) / (n - 3)
    frames = feats.shape[0] * feats.shape[1]
    row(
        "train_real_loop_frames_per_s_synth",
        f"{frames / real:.0f}",
        "frames/s",
        f"conf/synth/aam.yaml loop, features from ark (VAD, CMN, crop, SpecAugment), {real:.3f} s/step",
    )
    row(
        "train_random_frames_per_s_synth",
        f"{frames / rand:.0f}",
        "frames/s",
        f"the same trainer on a random {tuple(feats.shape)} tensor, {rand:.3f} s/step",
    )
    row(
        "train_loader_ms_per_batch_synth",
        f"{1e3 * load:.1f}",
        "ms",
        "the loader alone (read, VAD, CMN, crop, SpecAugment), one thread, no training",
    )
    ratio = rand / real
    row(
        "train_real_loop_ratio_synth",
        f"{ratio:.2f}",
        "ratio",
        f"real loop / random tensor; target >= 0.9 ({'met' if ratio >= 0.9 else 'NOT met'})",
    )


def bench_compressed_loader(batches):
    """The offline loader on float32 and on compressed (CM) features: ms per batch, utterances/s."""
    from toydata import make_toy_train_dir

    from pyspk.train.config import load_config
    from pyspk.train.data import load_train_data

    cfg = load_config(f"{REPO}/conf/synth/aam.yaml", {"train": {"num_workers": 0, "steps_per_epoch": batches + 5}})
    with tempfile.TemporaryDirectory() as tmp:
        loaders, sizes = {}, {}
        for name, compress in (("float32", False), ("compressed", True)):
            d = make_toy_train_dir(
                f"{tmp}/{name}",
                num_speakers=NUM_SPK,
                utts_per_speaker=8,
                num_frames=400,
                feat_dim=80,
                copies=1,
                vad=True,
                frame_jitter=200,
                compress=compress,
            )
            data = load_train_data(d, cfg, seed=777)
            data.sampler.set_epoch(0)
            loaders[name] = iter(data.loader())
            sizes[name] = (Path(d) / "feats.ark").stat().st_size
        times = {name: [] for name in loaders}
        n = 0
        for i in range(batches + 2):  # alternated; the first two of each not timed
            for name, it in loaders.items():
                t = time.perf_counter()
                feats, _ = next(it)
                if i >= 2:
                    times[name].append(time.perf_counter() - t)
            n = feats.shape[0]
    ms = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    for name in loaders:
        row(
            f"train_loader_ms_per_batch_synth_{name}",
            f"{ms[name]:.1f}",
            "ms",
            f"{n} crops per batch, {n / ms[name] * 1e3:.0f} utterances/s, median of {batches}; feats.ark "
            f"{sizes[name] / 2**20:.0f} MiB ({NUM_SPK} speakers x 8 utts x 2 copies, 400-600 frames), page-cached",
        )
    row(
        "train_loader_compressed_over_float32",
        f"{ms['compressed'] / ms['float32']:.2f}",
        "ratio",
        f"loader time per batch; ark bytes {sizes['compressed'] / sizes['float32']:.2f} of float32's",
    )


_SIDE_CODE = """
import logging, sys, time, torch
logging.disable(logging.INFO)
sys.path.insert(0, {repo!r})
from pyspk.train.config import load_config
from pyspk.train.trainer import Trainer
cfg = load_config({cfg!r}, {{"train": {{"epochs": 1, "steps_per_epoch": 10, "average_last": 1, **{over!r}}}}})
tr = Trainer(cfg, {train!r}, {exp!r}, {seed})
feats, labels = next(iter(tr.data.loader()))
x = torch.randn_like(feats)
for i in range(3):
    tr._train_step(tr.model, x, labels, 0, i)
t = time.perf_counter()
for i in range({steps}):
    tr._train_step(tr.model, x, labels, 0, i)
print((time.perf_counter() - t) / {steps})
"""


def bench_side_by_side(steps, cores):
    """What run.sh stage 3's --train-jobs auto rests on: conf/synth/aam.yaml's step (the recipe's
    narrow TDNN, compiled) in one process on every core, against ``cores`` processes on one core
    each running at once; steps/s of the machine either way."""
    from toydata import make_toy_train_dir

    with tempfile.TemporaryDirectory() as tmp:
        make_toy_train_dir(
            f"{tmp}/train", num_speakers=NUM_SPK, utts_per_speaker=4, num_frames=400, feat_dim=80, copies=1
        )

        def launch(threads, i, **over):
            code = _SIDE_CODE.format(
                repo=str(REPO),
                cfg=f"{REPO}/conf/synth/aam.yaml",
                train=f"{tmp}/train",
                exp=f"{tmp}/exp{i}",
                seed=777 + i,
                steps=steps,
                over=over,
            )
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
            return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, text=True, stdout=subprocess.PIPE)

        def finish(p):
            out, _ = p.communicate()
            if p.returncode:
                raise RuntimeError(f"side-by-side child failed (exit {p.returncode})")
            return float(out.split()[-1])

        eager = finish(launch(cores, 0, cpu_amp=False, compile=False))
        fp32 = finish(launch(cores, 0, cpu_amp=False))
        fp32_mkl = finish(launch(cores, 0, cpu_amp=False, gemm="mkl"))
        one = finish(launch(cores, 0))
        procs = [launch(1, i) for i in range(cores)]
        each = [finish(p) for p in procs]
    row(
        "train_step_ms_synth_float32_eager",
        f"{eager * 1e3:.0f}",
        "ms",
        f"conf/synth/aam.yaml with train.cpu_amp: false, train.compile: false, one process on {cores} threads",
    )
    row(
        "train_step_ms_synth_float32",
        f"{fp32 * 1e3:.0f}",
        "ms",
        f"conf/synth/aam.yaml with train.cpu_amp: false, one process on {cores} threads "
        f"(train.gemm: auto -> {default_gemm_backend()})",
    )
    row(
        "train_step_ms_synth_float32_mkl",
        f"{fp32_mkl * 1e3:.0f}",
        "ms",
        f"the same with train.gemm: mkl; {fp32_mkl / fp32:.2f}x the auto step",
    )
    from pyspk.train.trainer import cpu_has_bf16

    shipped = "bfloat16 on this CPU" if cpu_has_bf16() else "float32 on this CPU: no bfloat16 GEMMs"
    row(
        "train_step_ms_synth_shipped",
        f"{one * 1e3:.0f}",
        "ms",
        f"conf/synth/aam.yaml as shipped (train.cpu_amp: auto, {shipped}), {fp32 / one:.2f}x float32",
    )
    row(
        "train_steps_per_s_synth_one_process",
        f"{1 / one:.2f}",
        "steps/s",
        f"conf/synth/aam.yaml, one process on {cores} threads, {one * 1e3:.0f} ms/step",
    )
    together = sum(1 / t for t in each)
    row(
        "train_steps_per_s_synth_side_by_side",
        f"{together:.2f}",
        "steps/s",
        f"{cores} processes on 1 thread each at once, {', '.join(f'{t * 1e3:.0f}' for t in each)} ms/step; "
        f"{together * one:.2f}x one process (run.sh --train-jobs auto trains this way)",
    )


_ALLOC_CODE = """
import logging, resource, sys, time, torch
logging.disable(logging.INFO)
sys.path.insert(0, {bench!r})
from pyspk.malloc import keep_freed_memory
keep_freed_memory()
import bench_train as bt
torch.set_num_threads({threads})
step = bt.make_step({enc!r}, {kwargs!r}, bt.AAM, {batch}, 200)
step()
ts = []
r0 = resource.getrusage(resource.RUSAGE_SELF)
for _ in range({steps}):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(sorted(ts)[len(ts) // 2], (r1.ru_stime - r0.ru_stime) / {steps}, (r1.ru_minflt - r0.ru_minflt) / {steps})
"""


def bench_allocator(batch, steps, encoders=None):
    """The trainer's malloc setting (pyspk/malloc.py) against glibc's defaults, one child
    process each, eager steps (no compile time in the way), alternated per encoder."""
    for name in ("ecapa_tdnn", "resnet34"):
        if encoders and name not in encoders:
            continue
        got = {}
        for choice in ("system", "keep"):
            code = _ALLOC_CODE.format(
                bench=str(REPO / "bench"),
                threads=torch.get_num_threads(),
                enc=name,
                kwargs=ENCODERS[name],
                batch=batch,
                steps=steps,
            )
            out = subprocess.run(
                [sys.executable, "-c", code],
                check=True,
                cwd=REPO,
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONPATH=str(REPO), PYSPK_MALLOC=choice),
            )
            got[choice] = [float(v) for v in out.stdout.split()[-3:]]
        for choice, (s, sys_s, flt) in got.items():
            extra = f"; {got['system'][0] / s:.2f}x the system setting's step" if choice == "keep" else ""
            row(
                f"alloc_step_s_{name}_{choice}",
                f"{s:.2f}",
                "s",
                f"{name} {ENCODERS[name]} eager, batch {batch}x200, PYSPK_MALLOC={choice}: median of {steps} steps, "
                f"{sys_s:.2f} s system time and {flt:,.0f} minor page faults per step{extra}",
            )


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
    row(
        "objective_overhead_ecapa512",
        f"{100 * over:.1f}",
        "%",
        f"AAM+AM-SupCon+CAA+MGDA {p:.2f}s vs AAM {a:.2f}s per step, batch {batch}x200, "
        f"median of {steps} alternated steps; target <= 10% ({'met' if over <= 0.10 else 'NOT met'})",
    )


BALANCERS = {
    "fixed": {"name": "fixed", "lambda": 1.0},
    "mgda_embeddings": {"name": "mgda"},
    "mgda_parameters": {"name": "mgda", "level": "parameters", "normalize": "none"},
    "nash_mtl_parameters": {"name": "nash_mtl"},
}


def bench_balancers(batch, steps, encoders):
    """The proposed objective's step with each balancer, per encoder: what the weighing costs.
    Steps of the variants alternate (load changes hit all alike); median per variant."""
    bf16 = resolve_cpu_amp("auto")  # as train.cpu_amp: auto resolves on this CPU
    for name, kwargs in encoders.items():
        fns = {
            k: make_step(name, kwargs, {**PROPOSED, "balance": b}, batch, 200, mode="eager_bf16" if bf16 else "eager")
            for k, b in BALANCERS.items()
        }
        for fn in fns.values():
            fn()
        times = {k: [] for k in fns}
        for _ in range(steps):
            for k, fn in fns.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        base = statistics.median(times["fixed"])
        for k, ts in times.items():
            m = statistics.median(ts)
            row(
                f"balance_step_ratio_{name}_{k}",
                f"{m / base:.2f}",
                "x fixed",
                f"{m:.3f} s per step against fixed's {base:.3f} s; {batch}x200, eager"
                f"{', bfloat16 autocast' if bf16 else ''}, median of {steps} alternated steps",
            )


def bench_peak_memory(steps):
    from toydata import make_toy_train_dir

    with tempfile.TemporaryDirectory() as tmp:
        make_toy_train_dir(
            f"{tmp}/train", num_speakers=NUM_SPK, utts_per_speaker=4, num_frames=400, feat_dim=80, copies=1
        )
        code = (
            "import logging; logging.disable(logging.INFO)\n"
            "from pyspk.train.config import load_config\n"
            "from pyspk.train.trainer import train\n"
            f"cfg = load_config('{REPO}/conf/synth/proposed.yaml', "
            f"{{'train': {{'epochs': 1, 'steps_per_epoch': {steps}, 'average_last': 1}}}})\n"
            f"train(cfg, '{tmp}/train', '{tmp}/exp', 0)\n"
            # VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork/exec)
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            cwd=REPO,
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        kb = int(out.stdout.split()[-1])
    row(
        "peak_rss_synth_train",
        f"{kb / 1024:.0f}",
        "MiB",
        f"VmHWM of a process training conf/synth/proposed.yaml for {steps} steps on 200 speakers x 8 utts "
        "(with copies) of 400 frames",
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller batches, fewer steps (about a minute)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="skip the compiled rows (each encoder compiles first; slow on a cold cache)",
    )
    p.add_argument(
        "--autotune", action="store_true", help="add compiled rows with mode max-autotune-no-cudagraphs (an experiment)"
    )
    p.add_argument(
        "--modes",
        default=None,
        help="throughput modes, comma-separated: reference, eager, compiled, autotune, each "
        "optionally with _loop or _foreach (that Adam kernel; default fused), _bf16 "
        "(the encoder under bfloat16 autocast) and _mkl or _onednn (train.gemm; "
        "default auto's choice)",
    )
    p.add_argument(
        "--rows",
        default="throughput,optimizer,side_by_side,real_loop,compressed,overhead,balancers,memory,allocator",
        help="which groups of rows, comma-separated (default: all)",
    )
    p.add_argument("--encoders", default=None, help="comma-separated subset of " + ",".join(ENCODERS))
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 64,32)")
    args = p.parse_args(argv)
    logging.disable(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    from pyspk.malloc import keep_freed_memory

    keep_freed_memory()  # as the trainer does; the allocator rows compare
    row(
        "torch_threads",
        torch.get_num_threads(),
        "threads",
        f"cpus {os.cpu_count()}; timings on a shared machine are noisy",
    )
    peak = gemm_peak()
    row(
        "train_gemm_auto",
        default_gemm_backend(),
        "library",
        "train.gemm: auto on this CPU (onednn on AMD, mkl "
        "elsewhere): the rows layout's GEMMs in every mode without _mkl/_onednn",
    )
    modes = ("reference", "eager", "compiled") if args.compile else ("reference", "eager")
    if args.autotune:
        modes += ("autotune",)
    if args.modes:
        modes = tuple(args.modes.split(","))
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [8] if args.quick else [64, 32]
    rows = set(args.rows.split(","))
    if "throughput" in rows:
        bench_throughput(
            batches=batches,
            steps=2 if args.quick else 3,
            peak=peak,
            modes=modes,
            encoders=args.encoders.split(",") if args.encoders else None,
        )
    if "optimizer" in rows:
        bench_optimizer(steps=5 if args.quick else 20, encoders=args.encoders.split(",") if args.encoders else None)
    if "side_by_side" in rows:
        bench_side_by_side(steps=10 if args.quick else 40, cores=max(2, torch.get_num_threads()))
    if "real_loop" in rows:
        bench_real_loop(steps=5 if args.quick else 30)
    if "compressed" in rows:
        bench_compressed_loader(batches=10 if args.quick else 40)
    if "overhead" in rows:
        bench_overhead(batch=32 if args.quick else 128, steps=2 if args.quick else 4)
    if "balancers" in rows:
        encs = {"tdnn": {"channels": 128, "stats_channels": 384, "embed_dim": 128}, "ecapa_tdnn": {"channels": 512}}
        if args.encoders:
            encs = {k: v for k, v in encs.items() if k in args.encoders.split(",")}
        bench_balancers(batch=32 if args.quick else 128, steps=2 if args.quick else 5, encoders=encs)
    if "memory" in rows:
        bench_peak_memory(steps=3 if args.quick else 10)
    if "allocator" in rows:
        bench_allocator(
            batch=16 if args.quick else 64,
            steps=2 if args.quick else 3,
            encoders=args.encoders.split(",") if args.encoders else None,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
