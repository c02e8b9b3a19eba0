#!/usr/bin/env python3
"""Naive speaker-verification baseline, to calibrate the difficulty of a test set.

    local/naive_baseline.py DATA_DIR_TEST [--nj N] [--json OUT]

Each utterance becomes e = [mean_t(F), std_t(F)] of its 80-dim log-mel fbank F
(pyspk.features.fbank.compute_fbank, i.e. Kaldi fbank via Lhotse); a trial's score is
cos(e_enroll, e_test). Two variants are scored: ``raw`` as is, and ``centered`` after
subtracting the mean embedding of the test set (a stronger, still naive, baseline).
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


def run(data_dir: Path, nj: int = 1) -> list:
    """Return rows (trials_name, variant, eer_percent, num_trials)."""
    validate_data_dir(data_dir)
    wav = read_table(data_dir / "wav.scp")
    utts = list(wav)
    if nj > 1:
        with get_context("fork").Pool(nj) as pool:
            vecs = pool.map(utterance_embedding, [wav[u] for u in utts], chunksize=16)
    else:
        vecs = [utterance_embedding(wav[u]) for u in utts]
    raw = dict(zip(utts, vecs))
    mean = np.mean(np.stack(vecs), axis=0)
    centered = {u: v - mean for u, v in raw.items()}
    rows = []
    for tf in sorted(data_dir.glob("trials*")):
        trials = read_trials(tf, known_enroll=utts, known_test=utts)
        labels = np.array([t.target for t in trials], dtype=int)
        for name, emb in (("raw", raw), ("centered", centered)):
            rows.append((tf.name, name, 100.0 * eer(cosine_scores(emb, trials), labels), len(trials)))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as json here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    rows = run(args.data_dir, args.nj)
    print("trials\tvariant\teer_percent\tnum_trials")
    for name, variant, e, n in rows:
        print(f"{name}\t{variant}\t{e:.2f}\t{n}")
    if args.json:
        from pyspk.io import atomic_write_text

        atomic_write_text(args.json, json.dumps([dict(zip(("trials", "variant", "eer_percent", "num_trials"), r))
                                                 for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
