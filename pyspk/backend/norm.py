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

import numpy as np

from pyspk.backend.cosine import CosineScorer


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
            m, sd = top_n_stats(Xn[s:s + self.chunk] @ self._cohort_n.T, self.top_n)
            means[s:s + self.chunk], stds[s:s + self.chunk] = m, sd
        return means, stds

    def score_trials(self, enroll_vecs, test_vecs, enroll_idx, test_idx, raw=None) -> np.ndarray:
        """Normalised scores; ``raw`` cosine scores are computed when not given."""
        if raw is None:
            raw = self.scorer.score_trials(enroll_vecs, test_vecs, enroll_idx, test_idx)
        em, es = self.stats(enroll_vecs)
        tm, ts = self.stats(test_vecs)
        return as_norm(raw, em[enroll_idx], es[enroll_idx], tm[test_idx], ts[test_idx])
