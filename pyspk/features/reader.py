"""Read-time feature post-processing: VAD frame selection, then CMN.

Neither is baked into the ark, so one set of features serves every system.
CMN (cepstral/log-mel mean normalisation) subtracts the mean over the whole
utterance, or, with ``cmn_window=W``, Kaldi ``apply-cmvn-sliding --center=true``
style: each frame minus the mean of the ``W`` frames centred on it (the window
is shifted, not shrunk, at the edges while the utterance is longer than W).
"""

from __future__ import annotations

import numpy as np


def sliding_mean(feats: np.ndarray, window: int) -> np.ndarray:
    """Per-frame mean over a centred window of ``window`` frames (cumulative sums, O(T F))."""
    T = feats.shape[0]
    if T == 0:
        return np.zeros_like(feats)
    if window >= T:
        return np.broadcast_to(feats.mean(axis=0, dtype=np.float64), feats.shape).astype(feats.dtype)
    csum = np.zeros((T + 1, feats.shape[1]), dtype=np.float64)
    np.cumsum(feats, axis=0, dtype=np.float64, out=csum[1:])
    t = np.arange(T)
    start = np.clip(t - window // 2, 0, T - window)
    end = start + window
    return ((csum[end] - csum[start]) / window).astype(feats.dtype)


def load_features(
    feats: np.ndarray,
    cmn: bool = True,
    cmn_window: int | None = None,
    vad: np.ndarray | None = None,
) -> np.ndarray:
    """Apply VAD selection (frames where ``vad > 0.5``) then mean normalisation.

    Raises ValueError on NaN/inf features, on a VAD length that does not match,
    and when VAD keeps no frame (the caller names the utterance).
    """
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2:
        raise ValueError(f"features must be 2-D (frames, dim), got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError("features contain NaN or inf")
    if vad is not None:
        vad = np.asarray(vad).reshape(-1)
        if vad.shape[0] != feats.shape[0]:
            raise ValueError(f"vad has {vad.shape[0]} frames, features have {feats.shape[0]}")
        feats = feats[vad > 0.5]
        if feats.shape[0] == 0:
            raise ValueError("VAD kept no frame")
    if cmn and feats.shape[0] > 0:
        if cmn_window is None or cmn_window <= 0:
            feats = feats - feats.mean(axis=0, keepdims=True)
        else:
            feats = feats - sliding_mean(feats, int(cmn_window))
    return np.ascontiguousarray(feats, dtype=np.float32)
