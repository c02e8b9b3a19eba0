"""Cosine scoring with training-set mean subtraction.

    s(e, t) = <e - mu, t - mu> / (||e - mu|| ||t - mu||)

where mu is the mean of the training embeddings (WeSpeaker / Kaldi recipes
subtract it before cosine or PLDA scoring to remove the dataset offset).
Trials are given as index arrays into an embedding table: each table is
centred and normalised once, then the row-wise dot products are taken in
chunks (small enough to stay in cache), so 1M trials over 50k embeddings need one
pass and bounded memory.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from pyspk.backend.base import BACKENDS, ScoringBackend
from pyspk.backend.lda import length_norm


class CosineScorer:
    """Cosine similarity after subtracting ``mean`` (None = no subtraction)."""

    def __init__(self, mean: Optional[np.ndarray] = None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)

    def normalise(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if self.mean is not None:
            X = X - self.mean
        return length_norm(X).astype(np.float32, copy=False)

    def score(self, enroll, test) -> np.ndarray:
        """Row-wise scores of paired rows."""
        return np.einsum("ij,ij->i", self.normalise(np.atleast_2d(enroll)), self.normalise(np.atleast_2d(test)))

    def score_trials(self, enroll_vecs, test_vecs, enroll_idx, test_idx, chunk: int = 20_000) -> np.ndarray:
        """Scores of trials ``(enroll_vecs[enroll_idx[i]], test_vecs[test_idx[i]])``."""
        e, t = self.normalise(enroll_vecs), self.normalise(test_vecs)
        out = np.empty(len(enroll_idx), dtype=np.float32)
        for s in range(0, len(enroll_idx), chunk):
            out[s : s + chunk] = np.einsum("ij,ij->i", e[enroll_idx[s : s + chunk]], t[test_idx[s : s + chunk]])
        return out


@BACKENDS.register("cosine")
class CosineBackend(ScoringBackend):
    """Cosine of the mean-subtracted embeddings; nothing to fit beyond the shared mean."""

    def __init__(self, settings, mean):
        super().__init__(settings, mean)
        self.scorer = CosineScorer(mean)

    def score_trials(self, enroll_vecs, test_vecs, enroll_idx, test_idx, n_enroll=1):
        return self.scorer.score_trials(enroll_vecs, test_vecs, enroll_idx, test_idx)
