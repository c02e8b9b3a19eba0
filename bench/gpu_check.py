#!/usr/bin/env python
"""GPU readiness: does pyspk train, feed and extract on a GPU, and how fast?

    bench/gpu_check.sh [--cpu] [--out DIR]      (this script under the project's python)

One prepared run of a few minutes that answers, on the machine it runs on:

1. **Steps**: training-step throughput (forward, AAM head, backward, Adam) of ECAPA-TDNN C=512 and
   C=1024 and ResNet34 on a batch of 128 x 200 frames, in float32, float16 autocast with gradient
   scaling, and bfloat16 autocast; frames/s, ms/step and peak GPU memory.
2. **Loader**: the online loader (``data.source: audio``: crop decode, every augmentation kind,
   fbank, VAD, CMN, SpecAugment) with 2 workers, alone (frames/s) and feeding ECAPA C=512 steps
   in float16: the fraction of the wall time the GPU waits for the next batch.
3. **Recipe**: a tiny system trained by ``pyspk.bin.train`` under ``torchrun`` (DDP, one process
   per GPU) from audio with the online loader and workers, in float16 and in bfloat16; checks
   that final.pt is written and every logged loss is finite.
4. **Extraction**: ``pyspk extract --device`` of the tiny set's x-vectors with that model.

``--cpu`` is the reduced mode CI runs so the script cannot rot: tiny encoders, small batches,
float32 and (where the CPU has it) bfloat16, the same code paths otherwise. Prints one markdown
table (``check | setting | value | unit``) and writes it to OUT/gpu_check.md; exits non-zero if
any check fails.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyspk.losses.margin_softmax import MarginSoftmax  # noqa: E402
from pyspk.models import build_encoder  # noqa: E402

SR = 16000
ROWS: list = []
FAILED: list = []


def row(check, setting, value, unit):
    ROWS.append((check, setting, value, unit))
    print(f"| {check} | {setting} | {value} | {unit} |", flush=True)


def checked(name):
    """Run one check; a failure is a row and a non-zero exit, not the end of the script."""

    def wrap(fn):
        def run(*a, **k):
            try:
                return fn(*a, **k)
            except Exception as e:  # noqa: BLE001 - every failure is reported, the rest still runs
                traceback.print_exc()
                FAILED.append(name)
                row(name, "FAILED", type(e).__name__, str(e).splitlines()[0][:120] if str(e) else "")

        return run

    return wrap


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- 1. steps
def step_fn(encoder_name, kwargs, batch, frames, device, precision, classes=1000):
    torch.manual_seed(0)
    enc = build_encoder(encoder_name, feat_dim=80, **kwargs).to(device)
    head = MarginSoftmax(enc.embed_dim, classes, kind="aam", margin=0.2, scale=30.0).to(device)
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    x = torch.randn(batch, frames, 80, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "float16")

    def step():
        with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            z = enc(x).float()
        loss, _ = head(z, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    return step


def time_steps(step, device, warmup, steps):
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync(device)
    if not math.isfinite(float(loss.detach())):
        raise RuntimeError("non-finite loss")
    return (time.perf_counter() - t0) / steps


def check_steps(device, encoders, precisions, batch, frames, warmup, steps):
    for name, label, kwargs in encoders:
        for prec in precisions:

            @checked(f"step {label} {prec}")
            def one():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sec = time_steps(step_fn(name, kwargs, batch, frames, device, prec), device, warmup, steps)
                row("train step", f"{label}, {prec}, {batch} x {frames}", f"{batch * frames / sec:,.0f}", "frames/s")
                row("train step", f"{label}, {prec}, {batch} x {frames}", f"{1000 * sec:.1f}", "ms/step")
                if device.type == "cuda":
                    row(
                        "train step",
                        f"{label}, {prec}, {batch} x {frames}",
                        f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}",
                        "GiB peak",
                    )

            one()


# --------------------------------------------------------------------------- corpus
def make_corpus(root: Path, speakers: int, per_spk: int, seconds: float) -> Path:
    """Harmonic tones with pauses, one pitch per speaker: enough for loaders and a smoke training."""
    data, wav = root / "data", root / "wav"
    data.mkdir(parents=True)
    wav.mkdir()
    rng = np.random.default_rng(0)
    scp, u2s = [], []
    for s in range(speakers):
        for u in range(per_spk):
            n = int((seconds + 0.5 * u) * SR)
            t = np.arange(n) / SR
            f0 = 100 + 12 * s
            x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 6))
            x = 0.2 * x * (np.sin(2 * np.pi * 1.3 * t) > -0.4) + 0.003 * rng.standard_normal(n)
            path = wav / f"s{s:03d}_{u}.flac"
            sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
            scp.append(f"s{s:03d}-u{u} {path}\n")
            u2s.append(f"s{s:03d}-u{u} s{s:03d}\n")
    (data / "wav.scp").write_text("".join(scp))
    (data / "utt2spk").write_text("".join(u2s))
    spk2utt = {}
    for line in u2s:
        u, s = line.split()
        spk2utt.setdefault(s, []).append(u)
    (data / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
    (root / "augment.yaml").write_text("num_rooms: 4\nspeed: false\n")
    return data


def recipe_config(root: Path, encoder: dict, p: int, k: int, crop: int, epochs: int, steps: int) -> Path:
    import yaml

    from pyspk.train.config import config_to_dict, load_config

    d = config_to_dict(load_config(ROOT / "conf" / "synth" / "proposed.yaml"))
    d["encoder"] = encoder
    d["features"].update(crop_frames=crop, short_utts="pad")
    d["sampler"].update(speakers_per_batch=p, utts_per_speaker=k)
    d["optim"].update(warmup_steps=1)
    d["train"].update(epochs=epochs, steps_per_epoch=steps, average_last=1, log_interval=1, compile=False)
    d["data"] = {
        "source": "audio",
        "augment_config": str(root / "augment.yaml"),
        "rir_dir": str(root / "rirs"),
        "fbank_config": str(ROOT / "conf" / "fbank.yaml"),
    }
    path = root / "online.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    load_config(path)
    return path


# --------------------------------------------------------------------------- 2. loader
def check_loader(root, data, config, device, workers, batches, enc_kwargs, precision):
    from pyspk.online import load_online_data
    from pyspk.train.config import load_config

    cfg = load_config(config)
    cfg.train.num_workers = workers

    @checked("loader alone")
    def alone():
        td = load_online_data(data, cfg, seed=1, work_dir=root)
        td.sampler.set_epoch(0)
        it = iter(td.loader())
        feats, _ = next(it)  # worker start-up is not the rate
        frames, t0 = 0, time.perf_counter()
        for i, (feats, _) in enumerate(it):
            frames += feats.shape[0] * feats.shape[1]
            if i + 2 >= batches:
                break
        sec = time.perf_counter() - t0
        row(
            "online loader",
            f"{workers} workers, all augmentations, {feats.shape[0]} x {feats.shape[1]}",
            f"{frames / sec:,.0f}",
            "frames/s",
        )

    alone()

    @checked("loader feeding steps")
    def feeding():
        td = load_online_data(data, cfg, seed=1, work_dir=root)
        td.sampler.set_epoch(0)
        enc = build_encoder("ecapa_tdnn", feat_dim=80, **enc_kwargs).to(device)
        head = MarginSoftmax(enc.embed_dim, len(td.speakers), kind="aam", margin=0.2, scale=30.0).to(device)
        opt = torch.optim.Adam(list(enc.parameters()) + list(head.parameters()), lr=1e-3)
        dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(precision)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "float16")
        wait = busy = 0.0
        it = iter(td.loader())
        n = 0
        while n < batches:
            t0 = time.perf_counter()
            try:
                feats, labels = next(it)
            except StopIteration:
                break
            feats, labels = feats.to(device, non_blocking=True), labels.to(device)
            t1 = time.perf_counter()
            with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                z = enc(feats).float()
            loss, _ = head(z, labels)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sync(device)
            t2 = time.perf_counter()
            if n:  # the first batch waits for worker start-up
                wait += t1 - t0
                busy += t2 - t1
            n += 1
        row(
            "loader feeding ECAPA",
            f"{workers} workers, {precision}",
            f"{wait / max(wait + busy, 1e-9):.2f}",
            "idle fraction of the device",
        )

    feeding()


# --------------------------------------------------------------------------- 3-4. recipe, extraction
def check_recipe(root, data, config, device, nproc, workers):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for prec in ("float16", "bfloat16") if device.type == "cuda" else ("float32",):

        @checked(f"recipe {prec}")
        def one():
            exp = root / f"exp_{prec}"
            over = ["--set", f"train.device={device.type}", "--set", f"train.num_workers={workers}"]
            if device.type == "cuda":
                over += ["--set", f"train.amp_dtype={prec}", "--set", "train.amp=true"]
            else:
                over += ["--set", "train.cpu_amp=false", "--set", "train.threads=1"]
            cmd = [
                str(ROOT / "utils" / "torchrun.sh"),
                "--nproc",
                str(nproc),
                "pyspk.bin.train",
                "--config",
                str(config),
                "--seed",
                "3",
                "--train-dir",
                str(data),
                "--exp-dir",
                str(exp),
                *over,
            ]
            t0 = time.perf_counter()
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"training failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
            with open(exp / "train.csv", newline="") as f:
                losses = [float(r["loss"]) for r in csv.DictReader(f)]
            if not losses or not all(math.isfinite(v) for v in losses):
                raise RuntimeError(f"non-finite or no losses in {exp / 'train.csv'}")
            if not (exp / "final.pt").is_file():
                raise RuntimeError("no final.pt")
            row(
                "tiny recipe (torchrun, DDP, online loader)",
                f"{nproc} process(es), {workers} workers, {prec}",
                f"{time.perf_counter() - t0:.1f}",
                f"s, {len(losses)} steps, last loss {losses[-1]:.3f}",
            )

        one()


def check_extract(root, data, device):
    @checked("extraction")
    def run():
        exp = next(
            (
                root / f"exp_{p}"
                for p in ("bfloat16", "float16", "float32")
                if (root / f"exp_{p}" / "final.pt").is_file()
            ),
            None,
        )
        if exp is None:
            raise RuntimeError("no trained model to extract with")
        feats = root / "fbank"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for cmd in (
            ["pyspk", "fbank", "--config", str(ROOT / "conf" / "fbank.yaml"), "--nj", "1", str(data), str(feats)],
            [
                "pyspk",
                "extract",
                "--nj",
                "1",
                "--device",
                device.type,
                str(exp / "final.pt"),
                str(data),
                str(root / "xvectors"),
            ],
        ):
            t0 = time.perf_counter()
            p = subprocess.run(
                [sys.executable, "-m", "pyspk.bin.main", *cmd[1:]],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if p.returncode != 0:
                raise RuntimeError(f"{cmd[1]} failed: {p.stderr.strip().splitlines()[-1:]}")
            sec = time.perf_counter() - t0
        n = sum(1 for _ in open(root / "xvectors" / "xvector.scp"))
        row("extraction", f"{n} utterances on {device.type}", f"{sec:.1f}", "s (process start included)")

    run()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="the reduced mode: CPU, tiny sizes (what CI runs)")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="write gpu_check.md here")
    args = ap.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --cpu for the reduced mode", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (reduced mode)"
    print(f"# gpu_check: {name}, torch {torch.__version__}\n\n| check | setting | value | unit |\n|---|---|---|---|")
    if args.cpu:
        encoders = [
            (
                "ecapa_tdnn",
                "ECAPA C=32",
                {"channels": 32, "embed_dim": 32, "attention_channels": 16, "se_channels": 16},
            ),
            ("resnet34", "ResNet34 w=4", {"base_channels": 4, "embed_dim": 32}),
        ]
        from pyspk.train.trainer import resolve_cpu_amp

        precisions = ["float32"] + (["bfloat16"] if resolve_cpu_amp("auto") else [])
        batch, frames, warmup, steps = 4, 200, 1, 2
        spk, per, seconds, workers, loader_batches, nproc = 6, 3, 3.0, 2, 4, 2  # 2 CPU ranks: DDP over gloo
        recipe = dict(
            encoder={"name": "tdnn", "kwargs": {"channels": 16, "stats_channels": 32, "embed_dim": 16}},
            p=3,
            k=2,
            crop=100,
            epochs=1,
            steps=3,
        )
        loader_enc = {"channels": 32, "embed_dim": 32, "attention_channels": 16, "se_channels": 16}
    else:
        encoders = [
            ("ecapa_tdnn", "ECAPA C=512", {"channels": 512}),
            ("ecapa_tdnn", "ECAPA C=1024", {"channels": 1024}),
            ("resnet34", "ResNet34", {}),
        ]
        precisions = ["float32", "float16", "bfloat16"]
        batch, frames, warmup, steps = 128, 200, 5, 20
        spk, per, seconds, workers, loader_batches = 64, 4, 6.0, min(8, os.cpu_count() or 2), 30
        nproc = torch.cuda.device_count()
        recipe = dict(
            encoder={"name": "ecapa_tdnn", "kwargs": {"channels": 512}}, p=32, k=4, crop=200, epochs=1, steps=20
        )
        loader_enc = {"channels": 512}
    check_steps(device, encoders, precisions, batch, frames, warmup, steps)
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as tmp:
        root = Path(tmp)
        data = make_corpus(root, spk, per, seconds)
        config = recipe_config(
            root, recipe["encoder"], recipe["p"], recipe["k"], recipe["crop"], recipe["epochs"], recipe["steps"]
        )
        check_loader(
            root, data, config, device, workers, loader_batches, loader_enc, "float32" if args.cpu else "float16"
        )
        check_recipe(root, data, config, device, nproc, workers)
        check_extract(root, data, device)
    table = ["| check | setting | value | unit |", "|---|---|---|---|"] + [
        f"| {' | '.join(map(str, r))} |" for r in ROWS
    ]
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Path(args.out, "gpu_check.md").write_text(
            f"# gpu_check: {name}, torch {torch.__version__}\n\n" + "\n".join(table) + "\n"
        )
    if FAILED:
        print(f"gpu_check: {len(FAILED)} check(s) failed: {', '.join(FAILED)}", file=sys.stderr)
        return 1
    print("gpu_check: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
