"""Read-time feature post-processing: VAD frame selection, then CMN.

Neither is baked into the ark, so one set of features serves every system.
CMN is :func:`pyspk.features.cmvn.apply_cmn` (whole utterance, or a sliding
window of ``cmn_window`` frames as Kaldi's ``apply-cmvn-sliding --center=true``).
"""

from __future__ import annotations

import numpy as np

from pyspk.features.cmvn import apply_cmn, sliding_mean, utterance_mean  # noqa: F401  (re-exported)


def voiced_frames(feats: np.ndarray, vad: np.ndarray | None = None, check_finite: bool = True) -> np.ndarray:
    """``feats`` as float32 after the checks and VAD selection of :func:`load_features`,
    not mean-normalised. ``check_finite=False`` leaves the NaN/inf check to the caller (the
    training loader checks the mean of the frames it keeps instead of every value)."""
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2:
        raise ValueError(f"features must be 2-D (frames, dim), got shape {feats.shape}")
    if check_finite and not np.isfinite(feats).all():
        raise ValueError("features contain NaN or inf")
    if vad is not None:
        vad = np.asarray(vad).reshape(-1)
        if vad.shape[0] != feats.shape[0]:
            raise ValueError(f"vad has {vad.shape[0]} frames, features have {feats.shape[0]}")
        keep = np.flatnonzero(vad > 0.5)
        if keep.size == 0:
            raise ValueError("VAD kept no frame")
        feats = feats.take(keep, axis=0)  # a copy, as boolean indexing made; faster
    return feats


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
    feats = voiced_frames(feats, vad)
    if cmn and feats.shape[0] > 0:
        feats = apply_cmn(feats, cmn_window)
    return np.ascontiguousarray(feats, dtype=np.float32)
