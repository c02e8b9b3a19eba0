"""Cepstral (here log-mel) mean normalisation.

Per utterance:  y_t = x_t - (1/T) sum_s x_s.
Sliding window (Kaldi ``apply-cmvn-sliding --center=true --norm-vars=false``):
y_t = x_t - mean of the W frames centred on t; near the edges the window is
shifted to stay inside the utterance; an utterance shorter than W uses its mean.
"""

from __future__ import annotations

import numpy as np


def sliding_mean(feats: np.ndarray, window: int) -> np.ndarray:
    """Per-frame mean over a centred window of ``window`` frames (cumulative sums, O(T F))."""
    T = feats.shape[0]
    if T == 0:
        return np.zeros_like(feats)
    if window >= T:
        return np.broadcast_to(utterance_mean(feats), feats.shape).copy()
    csum = np.zeros((T + 1, feats.shape[1]), dtype=np.float64)
    np.cumsum(feats, axis=0, dtype=np.float64, out=csum[1:])
    t = np.arange(T)
    start = np.clip(t - window // 2, 0, T - window)
    end = start + window
    return ((csum[end] - csum[start]) / window).astype(feats.dtype)


def utterance_mean(feats: np.ndarray) -> np.ndarray:
    """The (1, F) mean over the frames of (T, F) ``feats``, accumulated in float64, in their dtype.
    The sum of a float64 copy: the bits of ``mean(axis=0, dtype=float64)`` (the same row-by-row
    sums, tests/test_vad_cmn.py), in fewer passes than its casting reduction."""
    return (feats.astype(np.float64).sum(axis=0, keepdims=True) / feats.shape[0]).astype(feats.dtype)


def apply_cmn(feats: np.ndarray, window: int | None = None) -> np.ndarray:
    """Mean-normalise (T, F) features over the utterance, or a sliding window of ``window`` frames."""
    if feats.shape[0] == 0:
        return feats
    if window is None or window <= 0:
        return feats - utterance_mean(feats)
    return feats - sliding_mean(feats, int(window))
