"""Adaptive symmetric score normalisation (AS-norm).

Cumani et al., "Comparison of speaker recognition approaches for real
applications", Interspeech 2011; Matejka et al., "Analysis of score
normalization in multilingual speaker recognition", Interspeech 2017.

For a trial (e, t) with raw score s, let S_e be the scores of e against the
cohort and T_e its ``top_n`` largest values (likewise T_t for t).  Then

    s_norm = 0.5 * [ (s - mean(T_e)) / std(T_e) + (s - mean(T_t)) / std(T_t) ]

Adding a constant c to every raw score (trial and cohort) adds c to s and to
both means and leaves the stds unchanged, so s_norm is invariant to it.  The
cohort here is the training speakers' mean embeddings (after mean
subtraction), scored with the same cosine scorer as the trials.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Dict

import numpy as np

from pyspk.backend.base import BACKENDS, ScoringBackend
from pyspk.backend.cosine import CosineScorer
from pyspk.io import atomic_path


def top_n_stats(cohort_scores: np.ndarray, top_n: int, eps: float = 1e-8):
    """Mean and std of the ``top_n`` largest scores of each row (rows = embeddings)."""
    cohort_scores = np.asarray(cohort_scores)
    k = min(int(top_n), cohort_scores.shape[1])
    if k < 1:
        raise ValueError(f"AS-norm top_n must be >= 1 (got {top_n})")
    top = np.partition(cohort_scores, cohort_scores.shape[1] - k, axis=1)[:, -k:].astype(np.float64)
    return top.mean(axis=1), np.maximum(top.std(axis=1), eps)


def as_norm(raw, enroll_mean, enroll_std, test_mean, test_std) -> np.ndarray:
    """Apply the AS-norm formula given per-trial cohort statistics."""
    raw = np.asarray(raw, dtype=np.float64)
    return 0.5 * ((raw - enroll_mean) / enroll_std + (raw - test_mean) / test_std)


class ASNorm:
    """AS-norm on top of cosine scoring, with a fixed cohort of embeddings."""

    def __init__(self, cohort: np.ndarray, scorer: CosineScorer, top_n: int = 300, chunk: int = 4096):
        self.cohort = np.asarray(cohort, dtype=np.float32)
        self.scorer, self.top_n, self.chunk = scorer, int(top_n), chunk
        self._cohort_n = scorer.normalise(self.cohort)

    def stats(self, X) -> tuple:
        """Top-N cohort mean/std for every row of X (chunked: |X| x |cohort| at a time)."""
        Xn = self.scorer.normalise(X)
        means, stds = np.empty(len(Xn)), np.empty(len(Xn))
        for s in range(0, len(Xn), self.chunk):
            m, sd = top_n_stats(Xn[s : s + self.chunk] @ self._cohort_n.T, self.top_n)
            means[s : s + self.chunk], stds[s : s + self.chunk] = m, sd
        return means, stds

    def score_trials(self, enroll_vecs, test_vecs, enroll_idx, test_idx, raw=None) -> np.ndarray:
        """Normalised scores; ``raw`` cosine scores are computed when not given."""
        if raw is None:
            raw = self.scorer.score_trials(enroll_vecs, test_vecs, enroll_idx, test_idx)
        em, es = self.stats(enroll_vecs)
        tm, ts = self.stats(test_vecs)
        return as_norm(raw, em[enroll_idx], es[enroll_idx], tm[test_idx], ts[test_idx])


@dataclass
class AsNormSettings:
    top_n: int = 300  # highest cohort scores kept per side (clipped to the cohort size)

    flat_keys: ClassVar[Dict[str, str]] = {"asnorm_top_n": "top_n"}  # the spelling before blocks

    def __post_init__(self):
        if self.top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {self.top_n}")


@BACKENDS.register("asnorm", AsNormSettings)
class AsNormBackend(ScoringBackend):
    """AS-norm of the cosine scores; the cohort is the training speakers' mean x-vectors
    (``cohort.npz``: ``cohort`` float32 (K, d), speaker ``ids``)."""

    single_pair_refusal = "AS-norm needs cohort statistics of both sides; use cosine or plda for single pairs"

    def __init__(self, settings: AsNormSettings, mean, cohort: np.ndarray, cohort_ids):
        super().__init__(settings, mean)
        self.cohort, self.cohort_ids = cohort, list(cohort_ids)
        self.asnorm = ASNorm(cohort, CosineScorer(mean), top_n=settings.top_n)

    @classmethod
    def fit(cls, settings, X, labels, mean):
        spks, idx = np.unique(labels, return_inverse=True)
        sums = np.zeros((len(spks), X.shape[1]))
        np.add.at(sums, idx, X)
        return cls(settings, mean, (sums / np.bincount(idx)[:, None]).astype(np.float32), list(spks))

    def save(self, backend_dir: Path) -> dict:
        with atomic_path(Path(backend_dir) / "cohort.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, cohort=self.cohort, ids=np.array(self.cohort_ids))
        return {}

    @classmethod
    def load(cls, settings, backend_dir, info, mean):
        with np.load(Path(backend_dir) / "cohort.npz") as z:
            return cls(settings, mean, z["cohort"], [str(i) for i in z["ids"]])

    def score_trials(self, enroll_vecs, test_vecs, enroll_idx, test_idx, n_enroll=1):
        return self.asnorm.score_trials(enroll_vecs, test_vecs, enroll_idx, test_idx)
