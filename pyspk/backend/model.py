"""The fitted back-end bundle: training mean, LDA, PLDA and the AS-norm cohort.

Pipeline (as Kaldi's sre16/voxceleb recipes): cosine and AS-norm score
x - mu; PLDA scores length_norm(LDA(x - mu)) (sqrt(dim)-scaled).  A back-end
directory holds ``mean.npz``, ``lda.npz`` (when lda_dim > 0), ``plda.npz``,
``plda.kaldi`` (Kaldi binary Plda, unverified), ``cohort.npz`` (training speaker
means and ids) and ``backend.yaml`` (the config and the fitted dimensions).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml

from pyspk.backend.config import BackendConfig, from_dict, to_dict
from pyspk.backend.cosine import CosineScorer
from pyspk.backend.lda import LDA, length_norm
from pyspk.backend.norm import ASNorm
from pyspk.backend.plda import PLDA
from pyspk.io import atomic_path, atomic_write_text
from pyspk.yamlio import safe_load

log = logging.getLogger(__name__)
BACKENDS = ("cosine", "asnorm", "plda")


class Backend:
    def __init__(self, config: BackendConfig, mean: np.ndarray, lda: Optional[LDA], plda: PLDA,
                 cohort: np.ndarray, cohort_ids: Sequence[str]):
        self.config, self.mean, self.lda, self.plda = config, mean, lda, plda
        self.cohort, self.cohort_ids = cohort, list(cohort_ids)
        self.cosine = CosineScorer(mean)
        self.asnorm = ASNorm(cohort, self.cosine, top_n=config.asnorm_top_n)

    @classmethod
    def fit(cls, X: np.ndarray, spk_labels: Sequence[str], config: BackendConfig) -> "Backend":
        X = np.asarray(X, dtype=np.float64)
        labels = np.asarray(spk_labels)
        spks, idx = np.unique(labels, return_inverse=True)
        mean = X.mean(axis=0)
        lda = None
        if config.lda_dim > 0:
            dim = min(config.lda_dim, X.shape[1], len(spks) - 1)
            if dim != config.lda_dim:
                log.warning("lda_dim %d clipped to %d (%d speakers, embedding dim %d)",
                            config.lda_dim, dim, len(spks), X.shape[1])
            lda = LDA(dim).fit(X - mean, labels)
        plda = PLDA(config.plda_iters, init=config.plda_init).fit(_plda_input(X - mean, lda, config), labels)
        sums = np.zeros((len(spks), X.shape[1]))
        np.add.at(sums, idx, X)
        cohort = (sums / np.bincount(idx)[:, None]).astype(np.float32)
        return cls(config, mean, lda, plda, cohort, list(spks))

    def plda_input(self, X) -> np.ndarray:
        return _plda_input(np.asarray(X, dtype=np.float64) - self.mean, self.lda, self.config)

    def score_trials(self, backend: str, enroll_vecs, test_vecs, enroll_idx, test_idx, n_enroll=1):
        """Scores of one back-end for trials given as index arrays into the two tables."""
        if backend == "cosine":
            return self.cosine.score_trials(enroll_vecs, test_vecs, enroll_idx, test_idx)
        if backend == "asnorm":
            return self.asnorm.score_trials(enroll_vecs, test_vecs, enroll_idx, test_idx)
        if backend == "plda":
            return self.plda.score_trials(self.plda_input(enroll_vecs), self.plda_input(test_vecs),
                                          enroll_idx, test_idx, n_enroll=n_enroll)
        raise ValueError(f"unknown back-end '{backend}' (known: {', '.join(BACKENDS)})")

    def save(self, out_dir) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _savez(out / "mean.npz", mean=self.mean)
        if self.lda is not None:
            self.lda.save(out / "lda.npz")
        self.plda.save(out / "plda.npz")
        self.plda.save_kaldi(out / "plda.kaldi")
        _savez(out / "cohort.npz", cohort=self.cohort, ids=np.array(self.cohort_ids))
        info = {"config": to_dict(self.config), "embed_dim": int(self.mean.shape[0]),
                "lda_dim": None if self.lda is None else int(self.lda.W.shape[1]),
                "num_speakers": len(self.cohort_ids)}
        atomic_write_text(out / "backend.yaml", yaml.safe_dump(info, sort_keys=False))

    @classmethod
    def load(cls, in_dir) -> "Backend":
        d = Path(in_dir)
        if not (d / "backend.yaml").is_file():
            raise FileNotFoundError(f"{d}/backend.yaml not found: run 'pyspk backend' first")
        info = safe_load((d / "backend.yaml").read_text())
        cfg = dict(info["config"])
        cfg["p_targets"] = tuple(cfg.get("p_targets", (0.01, 0.001)))
        config = from_dict(cfg, where=str(d / "backend.yaml"))
        with np.load(d / "mean.npz") as z:
            mean = z["mean"]
        lda = LDA.load(d / "lda.npz") if info.get("lda_dim") else None
        with np.load(d / "cohort.npz") as z:
            cohort, ids = z["cohort"], [str(i) for i in z["ids"]]
        return cls(config, mean, lda, PLDA.load(d / "plda.npz"), cohort, ids)


def _plda_input(Xc, lda, config):
    Y = lda.transform(Xc) if lda is not None else Xc
    return length_norm(Y, scale_sqrt_dim=True) if config.length_norm else Y


def _savez(path, **arrays):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def fit_backend_dir(xvector_dir, data_dir, out_dir, config: BackendConfig) -> Backend:
    """Stage 5: fit on the x-vectors of ``data_dir``'s utterances and save to ``out_dir``."""
    from pyspk.data.kaldi_dir import read_table
    from pyspk.embed.store import read_vectors

    xvecs = read_vectors(Path(xvector_dir) / "xvector.scp")
    utt2spk = read_table(Path(data_dir) / "utt2spk")
    missing = [u for u in utt2spk if u not in xvecs]
    if missing:
        raise KeyError(f"{data_dir}/utt2spk: utterance '{missing[0]}' has no x-vector in "
                       f"{xvector_dir}/xvector.scp ({len(missing)} missing)")
    utts = list(utt2spk)
    X = np.stack([xvecs[u] for u in utts])
    backend = Backend.fit(X, [utt2spk[u] for u in utts], config)
    backend.save(out_dir)
    log.info("back-end fitted on %d x-vectors of %d speakers -> %s", len(utts), len(backend.cohort_ids), out_dir)
    return backend
