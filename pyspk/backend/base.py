"""The back-end registry and the interface every back-end implements.

A back-end is a :class:`ScoringBackend` subclass registered by name with the dataclass of its
settings block in ``conf/backend.yaml``::

    @BACKENDS.register("plda", PldaSettings)
    class PldaBackend(ScoringBackend): ...

``pyspk backend`` fits every back-end listed under ``backends:`` on the training x-vectors
(:meth:`ScoringBackend.fit`) and saves each into the back-end dir beside the shared training
mean; ``pyspk score`` loads them and scores every trials list with each (:meth:`score_trials`),
``pyspk verify`` one pair. Adding a back-end is one file and one registry line; a module named
by ``PYSPK_PLUGINS`` adds one from outside the package (docs/recipe.md, "Adding a back-end").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from pyspk.registry import Registry

BACKENDS: Registry = Registry("back-end")


class ScoringBackend:
    """One fitted back-end. ``settings`` is its settings dataclass (None when it has none);
    ``mean`` the training mean (float64), which every back-end may subtract."""

    # Why it cannot score a single pair (``pyspk verify``); None: it can.
    single_pair_refusal: ClassVar[Optional[str]] = None

    def __init__(self, settings: Any, mean: np.ndarray):
        self.settings, self.mean = settings, mean

    @classmethod
    def fit(cls, settings: Any, X: np.ndarray, labels: np.ndarray, mean: np.ndarray) -> "ScoringBackend":
        """Fit on the training x-vectors ``X`` (N, d) float64 and their speaker ``labels`` (N,)."""
        return cls(settings, mean)

    def save(self, backend_dir: Path) -> dict:
        """Write what it fitted into ``backend_dir``; returns facts for ``backend.yaml``."""
        return {}

    @classmethod
    def load(cls, settings: Any, backend_dir: Path, info: dict, mean: np.ndarray) -> "ScoringBackend":
        """Read what :meth:`save` wrote; ``info`` is ``backend.yaml`` (with those facts)."""
        return cls(settings, mean)

    def score_trials(self, enroll_vecs, test_vecs, enroll_idx, test_idx, n_enroll=1) -> np.ndarray:
        """Scores of trials ``(enroll_vecs[enroll_idx[i]], test_vecs[test_idx[i]])``; an
        enrolment row may be the mean of ``n_enroll[row]`` embeddings."""
        raise NotImplementedError
