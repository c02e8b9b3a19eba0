#!/usr/bin/env python3
"""Naive speaker-verification baseline, to calibrate the difficulty of a test set.

    synth/naive_baseline.py DATA_DIR_TEST [--nj N] [--json OUT] [--lda-train DATA_DIR_TRAIN]

Each utterance becomes e = [mean_t(F), std_t(F)] of its 80-dim log-mel fbank F
(pyspk.features.fbank.compute_fbank, i.e. Kaldi fbank via Lhotse); a trial's score is
cos(e_enroll, e_test). Three variants are scored: ``raw`` as is; ``centered`` after
subtracting the mean embedding of the test set; ``level_free``: the mean part also minus
its own average over the 80 bins (so a gain change, a constant shift of every log-mel
bin, does not move it), then centered. The last is the strongest of these naive systems.
Prints TSV rows ``trials_name<TAB>variant<TAB>eer_percent<TAB>num_trials`` for every
``trials*`` file of the directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from multiprocessing import get_context
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

from pyspk.bin._args import positive_int  # noqa: E402
from pyspk.data.kaldi_dir import read_table, read_trials, validate_data_dir  # noqa: E402

log = logging.getLogger("naive_baseline")


def _fbank(wave: np.ndarray, sr: int) -> np.ndarray:
    try:
        from pyspk.features.fbank import compute_fbank
    except ImportError:  # features module not there: Lhotse's Fbank directly (same definition)
        from lhotse import Fbank, FbankConfig

        return Fbank(FbankConfig(num_mel_bins=80)).extract(wave.astype(np.float32), sr)
    return compute_fbank(wave, sr)


def utterance_embedding(path: str) -> np.ndarray:
    """[mean, std] over frames of the log-mel fbank of one audio file (160 dims)."""
    import soundfile as sf
    import torch

    torch.set_num_threads(1)
    wave, sr = sf.read(path, dtype="float32", always_2d=True)
    feats = _fbank(wave[:, 0], sr)
    return np.concatenate([feats.mean(axis=0), feats.std(axis=0)]).astype(np.float32)


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """EER (fraction) via pyspk.metrics.compute_eer."""
    from pyspk.metrics import compute_eer

    return compute_eer(scores, labels)[0]


def cosine_scores(emb: dict, trials) -> np.ndarray:
    e = np.stack([emb[t.enroll] for t in trials])
    t = np.stack([emb[t.test] for t in trials])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return np.sum(e * t, axis=1)


def embed_dir(data_dir: Path, nj: int = 1) -> tuple:
    """(utterance ids, (N, 160) embeddings) of a data dir."""
    validate_data_dir(data_dir)
    wav = read_table(data_dir / "wav.scp")
    utts = list(wav)
    if nj > 1:
        with get_context("fork").Pool(nj) as pool:
            vecs = pool.map(utterance_embedding, [wav[u] for u in utts], chunksize=16)
    else:
        vecs = [utterance_embedding(wav[u]) for u in utts]
    return utts, np.stack(vecs)


def level_free(x: np.ndarray) -> np.ndarray:
    """Subtract from the mean part (first half) its own average over bins (removes the gain)."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half] - x[:, :half].mean(axis=1, keepdims=True), x[:, half:]], axis=1)


def lda_projection(x: np.ndarray, labels: list, dim: int = 100) -> tuple:
    """Fisher LDA: (mean, W) with W the top generalised eigenvectors of S_b w = l S_w w
    (S_b: covariance of speaker means, S_w: pooled within-speaker covariance)."""
    from scipy.linalg import eigh

    x = x.astype(np.float64)
    mu = x.mean(axis=0)
    spk = sorted(set(labels))
    idx = {s: i for i, s in enumerate(spk)}
    lab = np.array([idx[s] for s in labels])
    means = np.stack([x[lab == i].mean(axis=0) for i in range(len(spk))])
    within = x - means[lab]
    s_w = within.T @ within / len(x)
    s_w += 1e-3 * np.trace(s_w) / len(s_w) * np.eye(len(s_w))  # ridge: S_w is singular on small sets
    s_b = (means - mu).T @ (means - mu) / len(spk)
    _, vecs = eigh(s_b, s_w)
    return mu, vecs[:, ::-1][:, : min(dim, len(spk) - 1)]


def run(data_dir: Path, nj: int = 1, lda_train: Path | None = None) -> list:
    """Return rows (trials_name, variant, eer_percent, num_trials).

    With ``lda_train`` (a training data dir) a fourth, *trained* variant ``lda_train``
    projects the level-free embeddings with an LDA fitted on that dir's speakers: a
    check that the speaker information is there to be learnt (not a naive system).
    """
    utts, x = embed_dir(data_dir, nj)
    raw = dict(zip(utts, x))
    centered = dict(zip(utts, x - x.mean(axis=0)))
    lf = level_free(x)
    level_free_emb = dict(zip(utts, lf - lf.mean(axis=0)))
    variants = [("raw", raw), ("centered", centered), ("level_free", level_free_emb)]
    if lda_train is not None:
        tr_utts, tr_x = embed_dir(lda_train, nj)
        utt2spk = read_table(lda_train / "utt2spk")
        mu, w = lda_projection(level_free(tr_x), [utt2spk[u] for u in tr_utts])
        variants.append(("lda_train", dict(zip(utts, (lf - mu) @ w))))
    rows = []
    for tf in sorted(data_dir.glob("trials*")):
        trials = read_trials(tf, known_enroll=utts, known_test=utts)
        labels = np.array([t.target for t in trials], dtype=int)
        for name, emb in variants:
            rows.append((tf.name, name, 100.0 * eer(cosine_scores(emb, trials), labels), len(trials)))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--nj", type=positive_int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as json here")
    p.add_argument(
        "--lda-train",
        type=Path,
        default=None,
        help="training data dir: add the trained 'lda_train' variant (learnability check)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    rows = run(args.data_dir, args.nj, args.lda_train)
    print("trials\tvariant\teer_percent\tnum_trials")
    for name, variant, e, n in rows:
        print(f"{name}\t{variant}\t{e:.2f}\t{n}")
    if args.json:
        from pyspk.io import atomic_write_text

        atomic_write_text(
            args.json,
            json.dumps([dict(zip(("trials", "variant", "eer_percent", "num_trials"), r)) for r in rows], indent=1)
            + "\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
