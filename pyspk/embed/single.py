"""Single-file embedding and verification (``pyspk embed`` / ``pyspk verify``).

The waveform goes through the same front end as the recipe (``compute_fbank``, VAD
when the encoder was trained with it, CMN) and the encoder.  Verification scores the
pair with the chosen back-end (cosine with the training mean when a back-end dir is
given, plain cosine otherwise, or PLDA) and decides *same speaker* when
score >= threshold, the threshold being the EER threshold the score stage stored in
``<scores_dir>/thresholds.json`` for that back-end (or one given explicitly).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from pyspk.embed.extractor import Embedder


def embed_file(embedder: Embedder, path, fbank_config=None) -> np.ndarray:
    from pyspk.features.audio import read_audio
    from pyspk.features.fbank import FbankConfig

    cfg = fbank_config or FbankConfig()
    wave = read_audio(Path(path).name, str(path), cfg.sample_rate)
    return embedder.embed_wave(wave, cfg.sample_rate, cfg, utt=str(path))


def pair_score(a: np.ndarray, b: np.ndarray, backend_dir=None, backend: str = "cosine") -> float:
    """Score of one pair with 'cosine' (mean-subtracted when a back-end dir is given) or 'plda'."""
    if backend_dir is None:
        if backend != "cosine":
            raise ValueError(f"back-end '{backend}' needs --backend-dir")
        from pyspk.backend.cosine import CosineScorer

        return float(CosineScorer(None).score(a[None], b[None])[0])
    from pyspk.backend.model import Backend

    be = Backend.load(backend_dir)
    idx = np.zeros(1, dtype=np.int64)
    if backend == "asnorm":
        raise ValueError("AS-norm needs cohort statistics of both sides; use cosine or plda for single pairs")
    return float(be.score_trials(backend, a[None], b[None], idx, idx)[0])


def load_threshold(scores_dir, backend: str) -> Optional[float]:
    """EER threshold of ``backend`` from ``scores_dir/thresholds.json`` (None when absent)."""
    path = Path(scores_dir) / "thresholds.json"
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    if backend not in table:
        raise KeyError(f"{path}: no threshold for back-end '{backend}' (have {', '.join(k for k in table if k != 'trials')})")
    return float(table[backend])
