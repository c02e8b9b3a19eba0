#!/usr/bin/env python3
"""Export speed, file size and runtime parity per encoder (pyspk export, sherpa-onnx).

    python bench/bench_export.py [--quick]

Builds short-trained systems on the tiny SynthCeleb (bench/tiny_systems.py: ``--size
recipe`` = the default recipe's TDNN 128, ECAPA-TDNN 512, ResNet34 32; ``--quick`` the
narrow test encoders), then per encoder: ONNX and TorchScript export time (the export
call alone: tracing/translation and writing) and file size; max abs difference of
onnxruntime and TorchScript from eager PyTorch over 1, 3 and 10 s inputs; onnxruntime
vs PyTorch inference real-time factor on a 10 s input (1 thread); and sherpa-onnx's
extractor vs pyspk's embedding path on the 24 test recordings: min per-file cosine
(against pyspk as trained, with energy VAD, and without VAD) and the largest EER
difference over the three trial lists. Prints TSV rows for bench/run.sh.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def row(figure, value, unit, note=""):
    print(f"{figure}\t{value}\t{unit}\t{note}", flush=True)


def rtf(fn, frames: int, repeats: int = 5) -> float:
    fn()  # warm-up
    best = min(_timed(fn) for _ in range(repeats))
    return best / (frames / 100.0)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from pyspk.export.exporter import (
        export,
        fbank_like,
        load_export_module,
        max_abs_diff_vs_eager,
        onnx_session,
        run_onnx,
    )
    from pyspk.export.parity import compare
    from pyspk.features.fbank import load_config

    size, steps = ("test", "10") if args.quick else ("recipe", "40")
    import os

    row("load_avg_at_start", f"{os.getloadavg()[0]:.1f}", "", f"{os.cpu_count()} cpus; timings scale with load")
    out = REPO / "bench" / "out" / f"export_systems_{size}"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "bench/tiny_systems.py", "--out", str(out), "--size", size, "--steps", steps],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    row(
        "tiny_systems_build",
        f"{time.perf_counter() - t0:.0f}",
        "s",
        f"tiny SynthCeleb, fbank, 3 encoders x {steps} AAM steps ({size} sizes); 0 when already built",
    )
    fbank = load_config(REPO / "conf" / "fbank.yaml")
    lengths = ((1, 100), (3, 300), (1, 1000))
    for enc in ("tdnn", "ecapa_tdnn", "resnet34"):
        ckpt = out / "exp" / enc / "final.pt"
        module, ck = load_export_module(ckpt)
        params = sum(p.numel() for p in module.parameters())
        kw = ck["encoder_kwargs"] or "defaults"
        with tempfile.TemporaryDirectory() as tmp:
            res = {fmt: export(ckpt, Path(tmp) / f"m.{fmt}", fmt, fbank) for fmt in ("onnx", "torchscript")}
            for fmt, r in res.items():
                row(f"export_{fmt}_time_{enc}", f"{r.seconds:.2f}", "s", f"{kw}, {params / 1e6:.2f} M parameters")
                row(f"export_{fmt}_size_{enc}", f"{r.size_bytes / 1e6:.2f}", "MB", f"{r.size_bytes} bytes")
                diff = max_abs_diff_vs_eager(module, r.path, fmt, lengths)
                row(
                    f"{fmt}_max_abs_diff_{enc}",
                    f"{diff:.2e}",
                    "abs",
                    "vs eager PyTorch, 1/3/10 s inputs; target <= 1e-4",
                )
            x = fbank_like(1, 1000, 80)
            sess = onnx_session(res["onnx"].path)
            xt = torch.from_numpy(x)
            with torch.no_grad():
                r_torch = rtf(lambda: module(xt), 1000)
            r_onnx = rtf(lambda: run_onnx(None, x, sess), 1000)
            row(f"onnxruntime_rtf_{enc}", f"{r_onnx:.4f}", "x", f"10 s input, 1 thread; PyTorch eager {r_torch:.4f}")
            par = compare(ckpt, res["onnx"].path, out / "data" / "synth_test", fbank)
        c, cn = par["cosine"]["pyspk"], par["cosine"]["pyspk_novad"]
        row(
            f"sherpa_cos_min_{enc}",
            f"{c['min']:.6f}",
            "cos",
            f"sherpa-onnx vs pyspk embed (VAD), {par['files']} files; median {c['median']:.6f}, "
            f"centred min {c['centred_min']:.6f}; worst {c['worst_utt']}; target >= 0.995",
        )
        row(
            f"sherpa_cos_min_novad_{enc}",
            f"{cn['min']:.6f}",
            "cos",
            f"vs pyspk without VAD; centred min {cn['centred_min']:.6f}; "
            f"different files median {par['between_files_median']:.3f}",
        )
        gaps = {t: 100 * abs(par["eer"]["sherpa_onnx"][t] - par["eer"]["pyspk"][t]) for t in par["eer"]["pyspk"]}
        eers = ", ".join(
            f"{t} {100 * par['eer']['pyspk'][t]:.1f}/{100 * par['eer']['sherpa_onnx'][t]:.1f}" for t in sorted(gaps)
        )
        row(
            f"sherpa_eer_gap_{enc}",
            f"{max(gaps.values()):.2f}",
            "points",
            f"max |EER sherpa - pyspk| over lists; EER % pyspk/sherpa: {eers}; target <= 0.3",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
