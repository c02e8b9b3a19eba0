"""Verification metrics: EER, minDCF (vectorised, tie-safe) and DET curves.

Entry points: ``compute_eer(scores, labels) -> (eer, threshold)`` and
``compute_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0) -> (min_dcf, threshold)``;
labels 1 = target, accept when score >= threshold.
"""

from pyspk.metrics.dcf import compute_metrics, compute_min_dcf
from pyspk.metrics.eer import compute_eer, operating_points, validate_scores

__all__ = ["compute_eer", "compute_min_dcf", "compute_metrics", "operating_points", "validate_scores"]
