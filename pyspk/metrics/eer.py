"""Equal error rate and the detection operating points it shares with minDCF.

Convention (Kaldi's ``compute-eer`` / NIST SRE): a trial is *accepted* when
``score >= threshold``; labels are 1 for target trials, 0 for non-target.

Operating points are taken only *between distinct score values*, so tied scores
are always accepted or rejected together.  With the distinct sorted values
``v_0 < ... < v_{m-1}`` the m+1 operating points have thresholds

    t_0 = v_0 - d,   t_j = (v_{j-1} + v_j) / 2  (0 < j < m),   t_m = v_{m-1} + d

with ``d`` the mean gap between distinct values (1.0 when all scores are equal),
so t_0 accepts everything and t_m rejects everything.  At each point

    P_miss(t) = #{targets with score < t} / N_tar
    P_fa(t)   = #{non-targets with score >= t} / N_non

P_miss rises from 0 to 1 and P_fa falls from 1 to 0 along the points.  The EER
is where the two piecewise-linear curves cross (linear interpolation between the
two neighbouring points), and the EER threshold is interpolated the same way.
Everything is vectorised: one sort, cumulative sums.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def validate_scores(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    """Return (scores float64, labels bool) or raise ValueError saying what is wrong."""
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels)
    if s.ndim != 1 or lab.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D (got shapes {s.shape} and {lab.shape})")
    if s.shape[0] != lab.shape[0]:
        raise ValueError(f"length mismatch: {s.shape[0]} scores but {lab.shape[0]} labels")
    bad = ~np.isfinite(s)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{int(bad.sum())} score(s) are NaN or infinite (first at index {i}: {s[i]})")
    if lab.dtype != bool:
        ok = (lab == 0) | (lab == 1)
        if not np.all(ok):
            i = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"labels must be 0/1 or bool (index {i} is {lab[i]!r})")
        lab = lab == 1
    n_tar = int(lab.sum())
    if n_tar == 0:
        raise ValueError("no target trials (label 1): EER/minDCF are undefined")
    if n_tar == lab.shape[0]:
        raise ValueError("no non-target trials (label 0): EER/minDCF are undefined")
    return s, lab


def operating_points(scores, labels) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (p_miss, p_fa, thresholds), each of length m+1, for validated input.

    See the module docstring for the definition of the points.
    """
    s, lab = validate_scores(scores, labels)
    order = np.argsort(s)  # stability is not needed: tied values are grouped below
    s = s[order]
    lab = lab[order]
    n_tar = int(lab.sum())
    n_non = lab.shape[0] - n_tar
    # Reject counts r: 0, every boundary between distinct values, n.
    boundary = np.flatnonzero(s[1:] != s[:-1]) + 1
    reject = np.concatenate(([0], boundary, [s.shape[0]]))
    tar_below = np.concatenate(([0], np.cumsum(lab)))[reject]
    non_below = reject - tar_below
    p_miss = tar_below / n_tar
    p_fa = (n_non - non_below) / n_non
    values = s[np.concatenate(([0], boundary))]  # distinct values v_0..v_{m-1}
    m = values.shape[0]
    d = (values[-1] - values[0]) / (m - 1) if m > 1 else 1.0
    thresholds = np.empty(m + 1)
    thresholds[0] = values[0] - d
    thresholds[1:m] = 0.5 * (values[:-1] + values[1:])
    thresholds[m] = values[-1] + d
    return p_miss, p_fa, thresholds


def compute_eer(scores, labels) -> Tuple[float, float]:
    """Equal error rate (a fraction in [0, 1]) and its threshold.

    ``labels``: 1/True = target.  The EER is the value at which the
    piecewise-linear P_miss and P_fa curves over the operating points cross:
    with i the first point where P_miss[i] >= P_fa[i],

        a   = (P_fa[i-1] - P_miss[i-1]) / ((P_miss[i] - P_miss[i-1]) - (P_fa[i] - P_fa[i-1]))
        EER = P_miss[i-1] + a (P_miss[i] - P_miss[i-1]),  thr = t[i-1] + a (t[i] - t[i-1]).

    Raises ValueError on empty classes, NaN/inf scores, a length mismatch or
    labels other than 0/1.
    """
    return eer_from_points(*operating_points(scores, labels))


def eer_from_points(p_miss: np.ndarray, p_fa: np.ndarray, thr: np.ndarray) -> Tuple[float, float]:
    """The EER interpolation of :func:`compute_eer` on precomputed operating points."""
    i = int(np.argmax(p_miss >= p_fa))  # exists: the last point has P_miss=1, P_fa=0
    if p_miss[i] == p_fa[i]:
        return float(p_miss[i]), float(thr[i])
    # i >= 1 because the first point has P_miss=0 < P_fa=1.
    dm = p_miss[i] - p_miss[i - 1]
    df = p_fa[i] - p_fa[i - 1]
    a = (p_fa[i - 1] - p_miss[i - 1]) / (dm - df)
    eer = p_miss[i - 1] + a * dm
    return float(eer), float(thr[i - 1] + a * (thr[i] - thr[i - 1]))
