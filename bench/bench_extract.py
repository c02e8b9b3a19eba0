#!/usr/bin/env python
"""x-vector extraction speed: utterances/s of one extraction job, before and after.

    python bench/bench_extract.py [--quick] [--utts N] [--repeats R]

A generated test set of the default recipe's shape (SynthCeleb's synth_test: 1600
utterances of 200-800 frames with VAD, 80-dim fbank in an ark; 400 with --quick), the
encoder of conf/synth/aam.yaml (untrained weights: speed does not depend on them), one
thread, as each of the recipe's ``--nj`` jobs runs. Rows, all timed in this process
(interpreter start-up excluded):

* ``extract_utts_per_s_before``: pyspk's earlier extraction algorithm, kept here as the
  baseline: kaldiio reads, one utterance at a time in feats.scp order, the (B, C, T)
  reference layout (oneDNN convolutions, a kernel compiled per new utterance length);
* ``extract_utts_per_s_job``: ``pyspk.stages.extract.run_job`` as the stage runs it
  (ArkReader, length-sorted windows, the folded TDNN on many utterances per call,
  Winograd convolutions: pyspk.models.fold, pyspk.models.winograd);
* ``extract_speedup``: their ratio; target >= 2. The two alternate ``--repeats``
  times (default 5) in this process: a shared VM's speed can move from minute to
  minute, and one before/after pair can land in different phases. The utts/s rows are medians;
  the speed-up is the median of the rounds' ratios (a round's before and job run back to back),
  every round's ratio in the note, and ``extract_speedup_of_medians`` the medians' ratio;
* ``extract_gflop_per_utt``, ``extract_gemm_gflops_1thread``, ``extract_speedup_bound``: the
  encoder's FLOPs per utterance (FlopCounterMode over every prepared input), this CPU's
  one-thread float32 GEMM peak (the faster of MKL and oneDNN, 2048^3) in the same run, and the
  speed-up a job would reach if its encoder ran at that peak and reading, VAD, CMN and writing
  cost nothing: ``before``'s time over FLOPs / peak. Where it is under 2, the target cannot be
  met with these FLOPs on this CPU; ``extract_job_of_gemm_peak`` is the job's model FLOP/s over
  that peak, in those (direct convolution) FLOPs. The job's Winograd convolutions do fewer:
  ``extract_job_gflop_per_utt`` counts what it multiplies, ``extract_job_own_flops_of_gemm_peak``
  is that over the peak;
* ``extract_utts_per_s_ecapa512_*``: the same two for ECAPA-TDNN C=512 on 200 utterances;
* ``extract_ms_per_utt_*`` (the encoder alone on the prepared synth_test-shaped utterances):
  reference and rows layouts and the folded TDNN one utterance per call, in feats.scp order,
  sorted by length, and on one repeated length (what oneDNN's per-shape kernels cost); the
  folded TDNN as the job calls it (``folded_ragged``: sorted, ``Embedder.RAGGED_FRAMES``
  frames per call); rows at batch 1/4/16 on one length (what batching buys at one thread);
  ``torch.compile(dynamic=True)`` of the rows model and its compile time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))  # toydata, the tests' fixture

from bench_train import matmul_flops  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from toydata import make_toy_train_dir  # noqa: E402

from pyspk.embed.extractor import ChunkConfig, Embedder  # noqa: E402
from pyspk.models import build_encoder, save_encoder  # noqa: E402
from pyspk.stages.extract import run_job, write_splits  # noqa: E402
from pyspk.train.config import load_config  # noqa: E402


def row(figure, value, unit, note=""):
    print(f"{figure}\t{value}\t{unit}\t{note}", flush=True)


def before(model_path, data_dir) -> float:
    """Seconds for the baseline loop over data_dir (``before`` in the module docstring)."""
    emb = Embedder.from_checkpoint(model_path, ChunkConfig(), "cpu")
    emb.model.to(memory_format=torch.contiguous_format)
    emb.model.forward = emb.model.forward_reference
    emb.infer = emb.model  # no BatchNorm folding either
    t = time.perf_counter()
    feats = kaldiio.load_scp(f"{data_dir}/feats.scp")
    vad = kaldiio.load_scp(f"{data_dir}/vad.scp")
    for utt in feats.keys():
        x = emb.prepare(feats[utt], vad[utt])
        with torch.inference_mode():
            emb.model(torch.from_numpy(x[None])).float().numpy()
    return time.perf_counter() - t


def job(model_path, data_dir, out_dir) -> float:
    write_splits(data_dir, out_dir, 1)
    t = time.perf_counter()
    run_job(model_path, data_dir, out_dir, 1, ChunkConfig(), "cpu")
    return time.perf_counter() - t


def measure(tag, encoder, kwargs, n_utts, tmp, repeats=1):
    data = Path(tmp) / f"data_{tag}"
    # synth_test: 200-800 frames before VAD (543 distinct lengths in 1600 utterances)
    make_toy_train_dir(
        data,
        num_speakers=max(1, n_utts // 8),
        utts_per_speaker=8,
        num_frames=200,
        feat_dim=80,
        vad=True,
        frame_jitter=600,
        seed=1,
    )
    torch.manual_seed(0)
    model_path = Path(tmp) / f"{tag}.pt"
    save_encoder(
        model_path,
        build_encoder(encoder, **kwargs),
        encoder,
        kwargs,
        {"features": {"cmn": True, "cmn_window": None, "vad": True}},
    )
    n = len((data / "utt2spk").read_text().splitlines())
    rounds = [(before(model_path, data), job(model_path, data, Path(tmp) / f"out_{tag}")) for _ in range(repeats)]
    t_before = float(np.median([b for b, _ in rounds]))
    t_job = float(np.median([j for _, j in rounds]))
    return n, t_before, t_job, [b / j for b, j in rounds]


def prepared(model_path, data_dir):
    """The embedder of model_path and data_dir's utterances as it feeds them to the encoder
    (VAD, CMN), each (1, T, 80), in feats.scp order."""
    emb = Embedder.from_checkpoint(model_path, ChunkConfig(), "cpu")
    feats = kaldiio.load_scp(f"{data_dir}/feats.scp")
    vad = kaldiio.load_scp(f"{data_dir}/vad.scp")
    return emb, [torch.from_numpy(emb.prepare(feats[u], vad[u])[None]) for u in feats.keys()]


def bound(emb, xs, t_before, t_job):
    """The speed-up bound of the module docstring, from the FLOPs of the prepared inputs xs."""
    n, flops = len(xs), 0
    with torch.inference_mode():
        for x in xs:
            with FlopCounterMode(display=False) as fc:
                emb.model.forward_reference(x)
            flops += fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:  # the job's calls: sorted, as embed_prepared batches them
        emb.embed_prepared([("u", x[0].numpy()) for x in sorted(xs, key=lambda x: x.shape[1])])
    job_flops = fc.get_total_flops()
    peak = max(matmul_flops(), matmul_flops(via="onednn"))
    floor = flops / peak
    row("extract_gflop_per_utt", f"{flops / n / 1e9:.3f}", "GFLOP", f"encoder FLOPs, mean over {n} utts")
    row(
        "extract_gemm_gflops_1thread",
        f"{peak / 1e9:.1f}",
        "GFLOP/s",
        "float32 2048^3, faster of torch.matmul and oneDNN 1x1 conv, 1 thread, this run",
    )
    row(
        "extract_speedup_bound",
        f"{t_before / floor:.2f}",
        "x",
        f"before's time / (FLOPs / GEMM peak): encoder at the peak, everything else free "
        f"({1e3 * floor / n:.2f} ms/utt); target 2 {'attainable' if t_before / floor >= 2 else 'NOT attainable'}",
    )
    row(
        "extract_job_of_gemm_peak",
        f"{floor / t_job:.2f}",
        "ratio",
        "the job's model FLOP/s / GEMM peak (the direct convolutions' FLOPs: what the job does per second in them)",
    )
    row(
        "extract_job_gflop_per_utt",
        f"{job_flops / n / 1e9:.3f}",
        "GFLOP",
        "what the job's encoder multiplies (Winograd F(4,5), F(6,3) and their transforms), mean per utt",
    )
    row(
        "extract_job_own_flops_of_gemm_peak",
        f"{job_flops / peak / t_job:.2f}",
        "ratio",
        "the job's own FLOP/s / GEMM peak (reading, VAD, CMN, writing and every non-GEMM pass included)",
    )


def detail(model_path, emb, xs):
    one = [torch.zeros(1, int(np.median([x.shape[1] for x in xs])), 80)] * len(xs)
    rows_model = emb.model
    ref = Embedder.from_checkpoint(model_path, ChunkConfig(), "cpu").model

    def per_utt(fn, inputs):
        with torch.inference_mode():
            fn(inputs[0])
            t = time.perf_counter()
            for x in inputs:
                fn(x)
        return 1e3 * (time.perf_counter() - t) / len(inputs)

    by_len = sorted(xs, key=lambda x: x.shape[1])
    for label, fn in (("reference", ref.forward_reference), ("rows", rows_model), ("folded", emb.infer)):
        row(f"extract_ms_per_utt_{label}_listed", f"{per_utt(fn, xs):.2f}", "ms", f"{len(xs)} utts in feats.scp order")
        row(f"extract_ms_per_utt_{label}_sorted", f"{per_utt(fn, by_len):.2f}", "ms", "sorted by length")
        row(
            f"extract_ms_per_utt_{label}_one_length",
            f"{per_utt(fn, one):.2f}",
            "ms",
            f"every input {one[0].shape[1]} frames: no new shape after the first",
        )
    items = [("u", x[0].numpy()) for x in by_len]
    emb.embed_prepared(items[:16])
    t = time.perf_counter()
    emb.embed_prepared(items)
    row(
        "extract_ms_per_utt_folded_ragged",
        f"{1e3 * (time.perf_counter() - t) / len(xs):.2f}",
        "ms",
        f"sorted, Embedder.embed_prepared: ~{emb.RAGGED_FRAMES} frames per call of the folded TDNN",
    )
    block = torch.cat(one[:64])
    for b in (1, 4, 16):
        t = per_utt(rows_model, [block[i : i + b] for i in range(0, 64, b)]) / b
        row(f"extract_ms_per_utt_rows_batch{b}", f"{t:.2f}", "ms", f"batches of {b} utts of {one[0].shape[1]} frames")
    compiled = torch.compile(rows_model, dynamic=True)
    t = time.perf_counter()
    with torch.inference_mode():
        compiled(xs[0])
    row("extract_compile_s_dynamic", f"{time.perf_counter() - t:.1f}", "s", "first call of torch.compile(dynamic=True)")
    row("extract_ms_per_utt_rows_compiled", f"{per_utt(compiled, xs):.2f}", "ms", "feats.scp order, after the compile")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--utts", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5, help="before/job rounds, alternated (medians reported)")
    args = p.parse_args(argv)
    logging.disable(logging.INFO)
    torch.set_num_threads(1)
    n_utts = args.utts or (400 if args.quick else 1600)
    cfg = load_config(REPO / "conf/synth/aam.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        n, tb, tj, per_round = measure("synth", cfg.encoder.name, dict(cfg.encoder.kwargs), n_utts, tmp, args.repeats)
        row(
            "extract_utts_per_s_before",
            f"{n / tb:.0f}",
            "utts/s",
            f"{cfg.encoder.name} {cfg.encoder.kwargs}, {n} utts, 1 thread: kaldiio, one at a time, reference layout; "
            f"median of {args.repeats}",
        )
        row(
            "extract_utts_per_s_job",
            f"{n / tj:.0f}",
            "utts/s",
            f"pyspk.stages.extract.run_job, 1 thread; median of {args.repeats}",
        )
        paired = float(np.median(per_round))
        row(
            "extract_speedup",
            f"{paired:.2f}",
            "x",
            f"median of the rounds' ratios (each round's before and job back to back), target >= 2 "
            f"({'met' if paired >= 2 else 'NOT met'}); rounds: {' '.join(f'{r:.2f}' for r in per_round)}",
        )
        row("extract_speedup_of_medians", f"{tb / tj:.2f}", "x", "median before / median job")
        emb, xs = prepared(Path(tmp) / "synth.pt", Path(tmp) / "data_synth")
        if not args.quick:
            detail(Path(tmp) / "synth.pt", emb, xs)
        bound(emb, xs, tb, tj)  # after detail: counting runs every shape, warming oneDNN's kernel cache
        n, tb, tj, _ = measure("ecapa512", "ecapa_tdnn", {"channels": 512}, 64 if args.quick else 200, tmp)
        row("extract_utts_per_s_ecapa512_before", f"{n / tb:.1f}", "utts/s", f"ECAPA-TDNN C=512, {n} utts, 1 thread")
        row("extract_utts_per_s_ecapa512_job", f"{n / tj:.1f}", "utts/s", f"speed-up {tb / tj:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
