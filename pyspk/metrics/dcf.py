"""Minimum normalised detection cost (NIST SRE minDCF).

    DCF(t)      = c_miss * p_target * P_miss(t) + c_fa * (1 - p_target) * P_fa(t)
    minDCF      = min_t DCF(t) / min(c_miss * p_target, c_fa * (1 - p_target))

over the operating points of :func:`pyspk.metrics.eer.operating_points`
(thresholds only between distinct score values; accept when score >= t).  The
normaliser is the cost of the best trivial system (accept all or reject all),
so minDCF <= 1.  Reference: NIST SRE evaluation plans; Kaldi
``sid/compute_min_dcf.py`` uses the same definition.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from pyspk.metrics.eer import eer_from_points, operating_points


def compute_min_dcf(scores, labels, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> Tuple[float, float]:
    """Return (normalised minDCF, threshold at the minimum); labels 1 = target."""
    return min_dcf_from_points(*operating_points(scores, labels), p_target, c_miss, c_fa)


def min_dcf_from_points(
    p_miss, p_fa, thr, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0
) -> Tuple[float, float]:
    """:func:`compute_min_dcf` on precomputed operating points."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"c_miss and c_fa must be positive (got {c_miss}, {c_fa})")
    dcf = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    i = int(np.argmin(dcf))
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf[i] / norm), float(thr[i])


def compute_metrics(scores, labels, p_targets: Sequence[float] = (0.01, 0.001)) -> dict:
    """EER and minDCF at every ``p_targets`` from one sort: ``{"eer", "eer_threshold",
    "min_dcf_<p>", "min_dcf_<p>_threshold"}`` (``<p>`` formatted with ``:g``)."""
    pts = operating_points(scores, labels)
    eer, thr = eer_from_points(*pts)
    out = {"eer": eer, "eer_threshold": thr}
    for p in p_targets:
        out[f"min_dcf_{p:g}"], out[f"min_dcf_{p:g}_threshold"] = min_dcf_from_points(*pts, p)
    return out
