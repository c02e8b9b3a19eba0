"""Back-end, metric and extraction throughput, each against its target (named in the row's note).

    python bench/bench_backend.py [--quick] [--case NAME]

Prints TSV rows ``figure<TAB>value<TAB>unit<TAB>note``.  Every case runs in a fresh
subprocess so that its peak RSS (``ru_maxrss``, whole process including its inputs)
is its own.  Timings are wall-clock of the operation only (inputs are made first).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np

CASES = ("cosine", "metrics", "plda_train", "plda_score", "asnorm", "score_stage", "extract")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def row(fig, value, unit, note):
    print(f"{fig}\t{value}\t{unit}\t{note}", flush=True)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def trials(rng, n_emb, n_trials):
    return rng.integers(0, n_emb, n_trials), rng.integers(0, n_emb, n_trials)


def case_cosine(q):
    from pyspk.backend.cosine import CosineScorer

    rng = np.random.default_rng(0)
    n_emb, n_tr = (5000, 100_000) if q else (50_000, 1_000_000)
    X = rng.normal(size=(n_emb, 192)).astype(np.float32)
    ei, ti = trials(rng, n_emb, n_tr)
    sc = CosineScorer(X.mean(axis=0))
    dt, _ = timed(lambda: sc.score_trials(X, X, ei, ti))
    row("cosine_scoring_time", f"{dt:.3f}", "s", f"{n_tr} trials over {n_emb}x192; target < 3 s (ratio {dt / 3:.2f})")
    row("cosine_scoring_peak_rss", f"{peak_mib():.0f}", "MiB", "process peak incl. inputs")


def case_metrics(q):
    from pyspk.metrics import compute_eer, compute_metrics, compute_min_dcf

    rng = np.random.default_rng(0)
    n = 100_000 if q else 1_000_000
    lab = rng.random(n) < 0.1
    s = rng.normal(size=n) + 2 * lab
    dt, _ = timed(lambda: (compute_eer(s, lab), compute_min_dcf(s, lab, 0.01), compute_min_dcf(s, lab, 0.001)))
    row(
        "eer_and_two_min_dcf_time",
        f"{dt:.3f}",
        "s",
        f"{n} scores, three calls (three sorts); target < 1 s (ratio {dt:.2f})",
    )
    dt, _ = timed(lambda: compute_metrics(s, lab, (0.01, 0.001)))
    row(
        "compute_metrics_time",
        f"{dt:.3f}",
        "s",
        f"{n} scores, EER + both minDCFs from one sort (used by pyspk score); target < 1 s (ratio {dt:.2f})",
    )
    row("metrics_peak_rss", f"{peak_mib():.0f}", "MiB", "process peak incl. inputs")


def plda_data(q):
    rng = np.random.default_rng(0)
    n_spk, per = (200, 50) if q else (1000, 100)
    centres = rng.normal(size=(n_spk, 192))
    lab = np.repeat(np.arange(n_spk), per)
    return centres[lab] + rng.normal(size=(n_spk * per, 192)) * 0.8, lab


def case_plda_train(q):
    from pyspk.backend.plda import PLDA

    X, lab = plda_data(q)
    dt, _ = timed(lambda: PLDA(n_iter=10).fit(X, lab))
    row(
        "plda_train_time",
        f"{dt:.3f}",
        "s",
        f"{X.shape[0]}x192, {lab.max() + 1} speakers, 10 EM iterations; target < 30 s (ratio {dt / 30:.2f})",
    )
    row("plda_train_peak_rss", f"{peak_mib():.0f}", "MiB", "process peak incl. inputs")


def case_plda_score(q):
    from pyspk.backend.plda import PLDA

    X, lab = plda_data(True)
    plda = PLDA(n_iter=3).fit(X, lab)
    rng = np.random.default_rng(1)
    n_emb, n_tr = (5000, 100_000) if q else (50_000, 1_000_000)
    E = rng.normal(size=(n_emb, 192))
    ei, ti = trials(rng, n_emb, n_tr)
    dt, _ = timed(lambda: plda.score_trials(E, E, ei, ti))
    row("plda_scoring_time", f"{dt:.3f}", "s", f"{n_tr} trials over {n_emb}x192; target < 5 s (ratio {dt / 5:.2f})")
    row("plda_scoring_peak_rss", f"{peak_mib():.0f}", "MiB", "process peak incl. inputs")


def case_asnorm(q):
    from pyspk.backend.cosine import CosineScorer
    from pyspk.backend.norm import ASNorm

    rng = np.random.default_rng(0)
    n_emb, n_tr = (5000, 100_000) if q else (50_000, 1_000_000)
    X = rng.normal(size=(n_emb, 192)).astype(np.float32)
    cohort = rng.normal(size=(1000, 192)).astype(np.float32)
    ei, ti = trials(rng, n_emb, n_tr)
    asn = ASNorm(cohort, CosineScorer(X.mean(axis=0)), top_n=300)
    dt, _ = timed(lambda: asn.score_trials(X, X, ei, ti))
    row("asnorm_scoring_time", f"{dt:.3f}", "s", f"{n_tr} trials over {n_emb}x192, cohort 1000, top 300 (no target)")
    row("asnorm_scoring_peak_rss", f"{peak_mib():.0f}", "MiB", "process peak incl. inputs")


def case_score_stage(q):
    """The whole ``pyspk score`` stage: read trials, score 3 back-ends, write files + metrics."""
    import tempfile
    from pathlib import Path

    from pyspk.backend import Backend, BackendConfig
    from pyspk.backend.scoring import score_data_dir
    from pyspk.data.xvectors import write_vectors

    rng = np.random.default_rng(0)
    n_emb, n_tr = (2000, 50_000) if q else (20_000, 1_000_000)
    X, lab = plda_data(True)
    be = Backend.fit(X, [str(v) for v in lab], BackendConfig(lda_dim=150, plda_iters=3))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        utts = [f"u{i:06d}" for i in range(n_emb)]
        write_vectors(
            t / "xv" / "xvector.ark",
            t / "xv" / "xvector.scp",
            dict(zip(utts, rng.normal(size=(n_emb, 192)).astype(np.float32))),
        )
        (t / "data").mkdir()
        pairs = set()
        while len(pairs) < n_tr:
            pairs.update(zip(rng.integers(0, n_emb, n_tr).tolist(), rng.integers(0, n_emb, n_tr).tolist()))
        pairs = list(pairs)[:n_tr]
        (t / "data" / "trials").write_text(
            "".join(f"{utts[a]} {utts[b]} {'target' if (a + b) % 10 == 0 else 'nontarget'}\n" for a, b in pairs)
        )
        dt, _ = timed(lambda: score_data_dir(be, t / "xv", t / "data", t / "scores"))
    row(
        "score_stage_time",
        f"{dt:.3f}",
        "s",
        f"pyspk score on {n_tr} trials over {n_emb} x-vectors: read, "
        "cosine + AS-norm (cohort 1000) + PLDA, 3 score files, metrics (no target)",
    )
    row("score_stage_peak_rss", f"{peak_mib():.0f}", "MiB", "process peak incl. inputs")


def case_extract(q):
    import torch

    try:
        from pyspk.models import build_encoder
    except ImportError as e:
        row("extract_rtf", "nan", "x", f"skipped: pyspk.models.build_encoder unavailable ({e})")
        return
    from pyspk.embed.extractor import Embedder

    secs = 3.0 if q else 10.0
    feats = np.random.default_rng(0).normal(size=(int(secs * 100), 80)).astype(np.float32)
    for name, kw in (("ecapa_tdnn", {"channels": 512}), ("tdnn", {}), ("resnet34", {})):
        torch.manual_seed(0)
        emb = Embedder(build_encoder(name, **kw), {"cmn": True}, device="cpu")
        emb.embed(feats[:200])  # warm-up
        reps = 1 if q else 3
        dt, _ = timed(lambda: [emb.embed(feats) for _ in range(reps)])
        rtf = dt / reps / secs
        row(
            f"extract_rtf_{name}",
            f"{rtf:.4f}",
            "x",
            f"CPU, {torch.get_num_threads()} threads, {secs:.0f} s "
            f"utterance, random weights {kw or 'defaults'}; compute time / audio time",
        )
    row("extract_peak_rss", f"{peak_mib():.0f}", "MiB", "process peak, three encoders")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10x smaller sizes (smoke run)")
    ap.add_argument("--case", choices=CASES, default=None, help="run one case in this process")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="BLAS/OpenMP/torch threads of each case (0 = library defaults); on a loaded machine "
        "OpenBLAS threads spin against other processes and small-matrix LAPACK slows down a lot",
    )
    args = ap.parse_args()
    if args.case:
        globals()[f"case_{args.case}"](args.quick)
        return 0
    rc = 0
    env = dict(os.environ)
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(args.threads)
        print(f"threads\t{args.threads}\tthreads\tBLAS/OpenMP/torch threads per case", flush=True)
    for c in CASES:
        cmd = [sys.executable, __file__, "--case", c] + (["--quick"] if args.quick else [])
        r = subprocess.run(cmd, env=env)
        if r.returncode:
            print(f"bench_backend: case {c} failed (exit {r.returncode})", file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
