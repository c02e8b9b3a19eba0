"""Scoring back-ends: cosine (mean-subtracted), AS-norm, LDA + length norm + PLDA, calibration.

Library classes: :class:`CosineScorer`, :class:`ASNorm`, :class:`LDA`, :class:`PLDA`,
:class:`LinearCalibration`. The back-ends of the recipe are registered by name in
:data:`BACKENDS` (``cosine``, ``asnorm``, ``plda``; pyspk/backend/base.py says how to add one);
the fitted bundle is :class:`Backend` (``pyspk backend`` fits and saves it, ``pyspk score``
loads and applies it).
"""

from pyspk.backend.base import BACKENDS, ScoringBackend
from pyspk.backend.calibration import LinearCalibration, cllr
from pyspk.backend.config import BackendConfig, load_config
from pyspk.backend.cosine import CosineBackend, CosineScorer
from pyspk.backend.lda import LDA, length_norm
from pyspk.backend.lda_plda import PldaBackend, PldaSettings
from pyspk.backend.model import Backend
from pyspk.backend.norm import ASNorm, AsNormBackend, AsNormSettings, as_norm
from pyspk.backend.plda import PLDA

__all__ = [
    "ASNorm",
    "AsNormBackend",
    "AsNormSettings",
    "BACKENDS",
    "Backend",
    "BackendConfig",
    "CosineBackend",
    "CosineScorer",
    "LDA",
    "LinearCalibration",
    "PLDA",
    "PldaBackend",
    "PldaSettings",
    "ScoringBackend",
    "as_norm",
    "cllr",
    "length_norm",
    "load_config",
]
