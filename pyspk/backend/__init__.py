"""Scoring back-ends: cosine (mean-subtracted), AS-norm, LDA + length norm + PLDA, calibration.

Library classes: :class:`CosineScorer`, :class:`ASNorm`, :class:`LDA`, :class:`PLDA`,
:class:`LinearCalibration`; the fitted bundle of the recipe is :class:`Backend`
(``pyspk backend`` fits and saves it, ``pyspk score`` loads and applies it).
"""

from pyspk.backend.calibration import LinearCalibration, cllr
from pyspk.backend.config import BackendConfig, load_config
from pyspk.backend.cosine import CosineScorer
from pyspk.backend.lda import LDA, length_norm
from pyspk.backend.model import BACKENDS, Backend
from pyspk.backend.norm import ASNorm, as_norm
from pyspk.backend.plda import PLDA

__all__ = ["ASNorm", "BACKENDS", "Backend", "BackendConfig", "CosineScorer", "LDA", "LinearCalibration", "PLDA",
           "as_norm", "cllr", "length_norm", "load_config"]
