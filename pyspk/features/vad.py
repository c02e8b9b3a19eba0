"""Energy voice-activity detection, Kaldi ``compute-vad`` definition.

With per-frame raw log energies ``e_t`` (T frames):

    threshold = energy_threshold + energy_mean_scale * mean_t(e_t)
    vad[t] = 1  if  #{t' in [t-c, t+c] ∩ [0, T) : e_t' > threshold}
                    >= proportion_threshold * |[t-c, t+c] ∩ [0, T)|
             0  otherwise

with ``c = frames_context``.  Kaldi's speaker recipes (conf/vad.conf of
egs/voxceleb/v2) use threshold 5.5, mean scale 0.5, proportion 0.12, context 2;
those are the defaults of :class:`pyspk.features.fbank.FbankConfig`.
The decision is stored as ``vad.scp`` (float vector of 0/1 per frame) and applied
when features are read (:func:`pyspk.features.reader.load_features`).
"""

from __future__ import annotations

import numpy as np


def compute_vad(
    log_energy: np.ndarray,
    energy_threshold: float = 5.5,
    energy_mean_scale: float = 0.5,
    frames_context: int = 2,
    proportion_threshold: float = 0.12,
) -> np.ndarray:
    """0/1 float32 decision per frame from raw log energies (see module docstring)."""
    e = np.asarray(log_energy, dtype=np.float64).reshape(-1)
    T = e.shape[0]
    if T == 0:
        return np.zeros(0, dtype=np.float32)
    threshold = energy_threshold + (energy_mean_scale * e.mean() if energy_mean_scale != 0 else 0.0)
    above = np.concatenate([[0], np.cumsum(e > threshold)])
    t = np.arange(T)
    lo = np.maximum(t - frames_context, 0)
    hi = np.minimum(t + frames_context + 1, T)
    num = above[hi] - above[lo]
    den = hi - lo
    return (num >= proportion_threshold * den).astype(np.float32)


def vad_from_config(log_energy: np.ndarray, config) -> np.ndarray:
    """compute_vad with the ``vad_*`` settings of an FbankConfig."""
    return compute_vad(
        log_energy,
        config.vad_energy_threshold,
        config.vad_energy_mean_scale,
        config.vad_frames_context,
        config.vad_proportion_threshold,
    )
