"""The fitted back-end bundle: the training mean and every back-end of the config.

Each back-end (cosine, AS-norm, PLDA, or one registered by a plugin: pyspk/backend/base.py)
is fitted on the same training x-vectors and shares their mean. A back-end directory holds
``mean.npz``, the files of each back-end (``lda.npz``, ``plda.npz``, ``plda.kaldi``,
``cohort.npz`` for the built-in ones) and ``backend.yaml`` (the config, the embedding
dimension, the number of training speakers and what the back-ends record, e.g. ``lda_dim``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import yaml

from pyspk.backend.base import BACKENDS, ScoringBackend
from pyspk.backend.config import BackendConfig, from_dict, to_dict
from pyspk.io import atomic_path, atomic_write_text
from pyspk.yamlio import safe_load

log = logging.getLogger(__name__)


class Backend:
    def __init__(self, config: BackendConfig, mean: np.ndarray, scorers: Dict[str, ScoringBackend], num_speakers: int):
        self.config, self.mean, self.scorers, self.num_speakers = config, mean, dict(scorers), int(num_speakers)

    @property
    def names(self) -> List[str]:
        """The fitted back-ends, in the config's order."""
        return list(self.scorers)

    @classmethod
    def fit(cls, X: np.ndarray, spk_labels: Sequence[str], config: BackendConfig) -> "Backend":
        X = np.asarray(X, dtype=np.float64)
        labels = np.asarray(spk_labels)
        mean = X.mean(axis=0)
        scorers = {
            name: BACKENDS.get(name).obj.fit(config.settings_of(name), X, labels, mean) for name in config.backends
        }
        return cls(config, mean, scorers, len(np.unique(labels)))

    def scorer(self, backend: str) -> ScoringBackend:
        if backend not in self.scorers:
            BACKENDS.get(backend)  # an unknown name: the nearest registered one
            raise ValueError(
                f"back-end '{backend}' was not fitted (fitted: {', '.join(self.names)}); "
                f"list it under backends: in the back-end config and rerun pyspk backend"
            )
        return self.scorers[backend]

    def score_trials(self, backend: str, enroll_vecs, test_vecs, enroll_idx, test_idx, n_enroll=1):
        """Scores of one back-end for trials given as index arrays into the two tables."""
        return self.scorer(backend).score_trials(enroll_vecs, test_vecs, enroll_idx, test_idx, n_enroll=n_enroll)

    def score_pair(self, backend: str, a: np.ndarray, b: np.ndarray, n_enroll: int = 1) -> float:
        """Score of one pair; ``a`` may be the mean of ``n_enroll`` enrolment embeddings."""
        scorer = self.scorer(backend)
        if scorer.single_pair_refusal:
            raise ValueError(scorer.single_pair_refusal)
        idx = np.zeros(1, dtype=np.int64)
        return float(scorer.score_trials(a[None], b[None], idx, idx, n_enroll=np.array([n_enroll]))[0])

    def save(self, out_dir) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "mean.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, mean=self.mean)
        info = {"config": to_dict(self.config), "embed_dim": int(self.mean.shape[0])}
        for scorer in self.scorers.values():
            info.update(scorer.save(out))
        info["num_speakers"] = self.num_speakers
        atomic_write_text(out / "backend.yaml", yaml.safe_dump(info, sort_keys=False))

    @classmethod
    def load(cls, in_dir) -> "Backend":
        d = Path(in_dir)
        if not (d / "backend.yaml").is_file():
            raise FileNotFoundError(f"{d}/backend.yaml not found: run 'pyspk backend' first")
        info = safe_load((d / "backend.yaml").read_text())
        config = from_dict(dict(info["config"]), where=str(d / "backend.yaml"))
        with np.load(d / "mean.npz") as z:
            mean = z["mean"]
        scorers = {
            name: BACKENDS.get(name).obj.load(config.settings_of(name), d, info, mean) for name in config.backends
        }
        return cls(config, mean, scorers, info.get("num_speakers", 0))


def fit_backend_dir(xvector_dir, data_dir, out_dir, config: BackendConfig) -> Backend:
    """Stage 5: fit on the x-vectors of ``data_dir``'s utterances and save to ``out_dir``."""
    from pyspk.data.kaldi_dir import read_table
    from pyspk.data.xvectors import read_vectors

    xvecs = read_vectors(Path(xvector_dir) / "xvector.scp")
    utt2spk = read_table(Path(data_dir) / "utt2spk")
    missing = [u for u in utt2spk if u not in xvecs]
    if missing:
        raise KeyError(
            f"{data_dir}/utt2spk: utterance '{missing[0]}' has no x-vector in "
            f"{xvector_dir}/xvector.scp ({len(missing)} missing)"
        )
    utts = list(utt2spk)
    X = np.stack([xvecs[u] for u in utts])
    backend = Backend.fit(X, [utt2spk[u] for u in utts], config)
    backend.save(out_dir)
    log.info(
        "back-end fitted on %d x-vectors of %d speakers (%s) -> %s",
        len(utts),
        backend.num_speakers,
        ", ".join(backend.names),
        out_dir,
    )
    return backend
