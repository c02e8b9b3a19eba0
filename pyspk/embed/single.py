"""Single-file embedding and verification (``pyspk embed`` / ``pyspk verify``).

The waveform goes through the same front end as the recipe (``compute_fbank``, VAD
when the encoder was trained with it, CMN) and the encoder.  Verification scores the
pair with the chosen back-end (cosine with the training mean when a back-end dir is
given, plain cosine otherwise, PLDA, or a plugin's) and decides *same speaker* when
score >= threshold, the threshold being the EER threshold the score stage stored in
``<scores_dir>/thresholds.json`` for that back-end (or one given explicitly).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from pyspk.embed.extractor import Embedder

MIN_SPEECH_S = 1.0  # peers refuse or warn below 1-2 s of speech; an x-vector of less is noise


class TooLittleSpeech(ValueError):
    """Less speech after VAD than the minimum: the score would be meaningless."""


def file_rate(path) -> Optional[int]:
    """The sample rate of an audio file (None for a pipe or an unreadable header)."""
    import soundfile as sf

    try:
        return int(sf.info(str(path)).samplerate)
    except Exception:  # a 'cmd |' entry or a format soundfile cannot probe: read_audio decides
        return None


def embed_file(
    embedder: Embedder,
    path,
    fbank_config=None,
    min_speech_s: float = 0.0,
    warn_only: bool = False,
    warnings: Optional[list] = None,
) -> np.ndarray:
    """Embedding of one file. Speech after VAD (frames kept x frame shift) below
    ``min_speech_s`` raises :class:`TooLittleSpeech`, or with ``warn_only`` is appended to
    ``warnings``, as is audio resampled up from below the model's rate (its upper mel
    bins are empty, so its scores are not comparable with the recipe's)."""
    from pyspk.features.audio import read_audio
    from pyspk.features.fbank import FbankConfig

    cfg = fbank_config or FbankConfig()
    notes = warnings if warnings is not None else []
    rate = file_rate(path)
    if rate is not None and rate < cfg.sample_rate:
        notes.append(
            f"{path}: {rate} Hz audio resampled up to the model's {cfg.sample_rate} Hz: mel bins above "
            f"{rate / 2:.0f} Hz are empty, scores are not comparable with {cfg.sample_rate} Hz audio"
        )
    wave = read_audio(Path(path).name, str(path), cfg.sample_rate)
    feats, mask = embedder.front_end(wave, cfg.sample_rate, cfg)
    frames = int(np.sum(mask)) if mask is not None else int(feats.shape[0])
    speech = frames * cfg.frame_shift_ms / 1000.0
    if speech < min_speech_s:
        msg = (
            f"{path}: {speech:.2f} s of speech after VAD, less than the minimum {min_speech_s:g} s "
            f"(--min-speech); too little to judge a speaker"
        )
        if not warn_only:
            raise TooLittleSpeech(msg)
        notes.append(msg)
    return embedder.embed(feats, mask, utt=str(path)) if mask is not None else embedder.embed(feats, utt=str(path))


def pair_score(a: np.ndarray, b: np.ndarray, backend_dir=None, backend: str = "cosine", n_enroll: int = 1) -> float:
    """Score of one pair with a back-end of ``backend_dir`` (cosine with the training mean,
    plda, or any registered one that scores single pairs); without a back-end dir, plain
    cosine. ``a`` may be the mean of ``n_enroll`` enrolment embeddings (PLDA uses the count)."""
    if backend_dir is None:
        if backend != "cosine":
            raise ValueError(f"back-end '{backend}' needs --backend-dir")
        from pyspk.backend.cosine import CosineScorer

        return float(CosineScorer(None).score(a[None], b[None])[0])
    from pyspk.backend.model import Backend

    return Backend.load(backend_dir).score_pair(backend, a, b, n_enroll)


def load_threshold(scores_dir, backend: str) -> Optional[float]:
    """EER threshold of ``backend`` from ``scores_dir/thresholds.json`` (None when absent)."""
    path = Path(scores_dir) / "thresholds.json"
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    if backend not in table:
        raise KeyError(
            f"{path}: no threshold for back-end '{backend}' (have {', '.join(k for k in table if k != 'trials')})"
        )
    return float(table[backend])
