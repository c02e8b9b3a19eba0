"""Linear (logistic-regression) score calibration and Cllr.

Brummer & du Preez, "Application-independent evaluation of speaker detection",
Computer Speech and Language 2006.  Calibrated LLR = a * s + b, with (a, b)
minimising the prior-weighted cross-entropy at effective prior P:

    C(a, b) = P/N_tar * sum_tar log(1 + exp(-(l + logit P)))
            + (1-P)/N_non * sum_non log(1 + exp(l + logit P)),   l = a s + b

    Cllr = 1 / (2 ln 2) * [ mean_tar log(1 + e^{-l}) + mean_non log(1 + e^{l}) ]

(Cllr = 1 for a system that always outputs 0; lower is better.)
"""

from __future__ import annotations

import numpy as np
import scipy.optimize

from pyspk.metrics.eer import validate_scores


def cllr(llrs, labels) -> float:
    """Log-likelihood-ratio cost in bits (labels 1 = target)."""
    llr, lab = validate_scores(llrs, labels)
    return float((np.logaddexp(0, -llr[lab]).mean() + np.logaddexp(0, llr[~lab]).mean()) / (2 * np.log(2)))


class LinearCalibration:
    """``fit(scores, labels)`` then ``apply(scores)`` -> LLRs (a * s + b)."""

    def __init__(self, p_target: float = 0.5):
        self.p_target, self.a, self.b = p_target, 1.0, 0.0

    def fit(self, scores, labels) -> "LinearCalibration":
        s, lab = validate_scores(scores, labels)
        logit = np.log(self.p_target / (1 - self.p_target))
        st, sn = s[lab], s[~lab]
        P = self.p_target

        def cost(theta):
            a, b = theta
            lt, ln = a * st + b + logit, a * sn + b + logit
            c = P * np.logaddexp(0, -lt).mean() + (1 - P) * np.logaddexp(0, ln).mean()
            gt, gn = -P * _sigmoid(-lt) / len(st), (1 - P) * _sigmoid(ln) / len(sn)
            return c, np.array([gt @ st + gn @ sn, gt.sum() + gn.sum()])

        scale = max(float(s.std()), 1e-6)
        res = scipy.optimize.minimize(cost, np.array([1.0 / scale, 0.0]), jac=True, method="L-BFGS-B")
        self.a, self.b = float(res.x[0]), float(res.x[1])
        return self

    def apply(self, scores) -> np.ndarray:
        return self.a * np.asarray(scores, dtype=np.float64) + self.b

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "p_target": self.p_target}


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))
