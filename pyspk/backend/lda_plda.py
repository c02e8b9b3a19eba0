"""The PLDA back-end: LDA, length normalisation and two-covariance PLDA, as Kaldi's recipes.

PLDA scores length_norm(LDA(x - mu)) (sqrt(dim)-scaled), mu the training mean. Its files in the
back-end dir: ``lda.npz`` (when lda_dim > 0), ``plda.npz`` and ``plda.kaldi`` (Kaldi's binary
Plda, unverified); ``backend.yaml`` records the fitted ``lda_dim``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Dict, Optional

import numpy as np

from pyspk.backend.base import BACKENDS, ScoringBackend
from pyspk.backend.lda import LDA, length_norm
from pyspk.backend.plda import PLDA

log = logging.getLogger(__name__)


@dataclass
class PldaSettings:
    lda_dim: int = 150  # 0 = no LDA; clipped to min(dim, speakers - 1)
    length_norm: bool = True  # length-normalise after LDA, before PLDA
    iters: int = 10  # EM iterations (Kaldi's ivector-compute-plda default is 10)
    init: str = "moments"  # moments | identity (Kaldi starts EM from identity matrices)

    # the spelling of before the back-end blocks (old backend.yaml files, BackendConfig(lda_dim=...))
    flat_keys: ClassVar[Dict[str, str]] = {
        "lda_dim": "lda_dim",
        "length_norm": "length_norm",
        "plda_iters": "iters",
        "plda_init": "init",
    }

    def __post_init__(self):
        if self.lda_dim < 0 or self.iters < 1:
            raise ValueError(f"lda_dim >= 0 and iters >= 1 required, got lda_dim {self.lda_dim}, iters {self.iters}")
        if self.init not in ("moments", "identity"):
            raise ValueError(f"init must be 'moments' or 'identity', got {self.init!r}")


@BACKENDS.register("plda", PldaSettings)
class PldaBackend(ScoringBackend):
    def __init__(self, settings: PldaSettings, mean, lda: Optional[LDA], plda: PLDA):
        super().__init__(settings, mean)
        self.lda, self.plda = lda, plda

    @classmethod
    def fit(cls, settings, X, labels, mean):
        lda = None
        if settings.lda_dim > 0:
            n_spk = len(np.unique(labels))
            dim = min(settings.lda_dim, X.shape[1], n_spk - 1)
            if dim != settings.lda_dim:
                log.warning(
                    "lda_dim %d clipped to %d (%d speakers, embedding dim %d)", settings.lda_dim, dim, n_spk, X.shape[1]
                )
            lda = LDA(dim).fit(X - mean, labels)
        plda = PLDA(settings.iters, init=settings.init).fit(_plda_input(X - mean, lda, settings), labels)
        return cls(settings, mean, lda, plda)

    def plda_input(self, X) -> np.ndarray:
        return _plda_input(np.asarray(X, dtype=np.float64) - self.mean, self.lda, self.settings)

    def score_trials(self, enroll_vecs, test_vecs, enroll_idx, test_idx, n_enroll=1):
        return self.plda.score_trials(
            self.plda_input(enroll_vecs), self.plda_input(test_vecs), enroll_idx, test_idx, n_enroll=n_enroll
        )

    def save(self, backend_dir: Path) -> dict:
        d = Path(backend_dir)
        if self.lda is not None:
            self.lda.save(d / "lda.npz")
        self.plda.save(d / "plda.npz")
        self.plda.save_kaldi(d / "plda.kaldi")
        return {"lda_dim": None if self.lda is None else int(self.lda.W.shape[1])}

    @classmethod
    def load(cls, settings, backend_dir, info, mean):
        d = Path(backend_dir)
        lda = LDA.load(d / "lda.npz") if info.get("lda_dim") else None
        return cls(settings, mean, lda, PLDA.load(d / "plda.npz"))


def _plda_input(Xc, lda, settings: PldaSettings):
    Y = lda.transform(Xc) if lda is not None else Xc
    return length_norm(Y, scale_sqrt_dim=True) if settings.length_norm else Y
