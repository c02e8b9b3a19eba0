"""Two-covariance PLDA (Kaldi's ``ivector-compute-plda`` / ``ivector-plda-scoring``).

Model (Ioffe 2006; Sizov, Lee & Kinnunen 2014, "Unifying PLDA variants"):

    x = mu + y + e,    y ~ N(0, Sigma_b)  (speaker),    e ~ N(0, Sigma_w)  (session)

**Training** is EM on the speaker variables y_k, as Kaldi's ``PldaEstimator``: with
class k holding n_k vectors of mean m_k, the E-step posterior of y_k is

    C_k = (Sigma_b^-1 + n_k Sigma_w^-1)^-1,   y_k = C_k n_k Sigma_w^-1 (m_k - mu)

and the M-step

    Sigma_b = 1/K sum_k (y_k y_k^T + C_k)
    Sigma_w = 1/N [ S_within + sum_k n_k ((m_k - mu - y_k)(m_k - mu - y_k)^T + C_k) ]

with S_within = sum_i (x_i - m_k(i))(x_i - m_k(i))^T.  Each iteration works in the
basis that simultaneously diagonalises the current (Sigma_w, Sigma_b), where every
C_k is diagonal, so an iteration costs O(K d^2 + d^3) rather than K inversions.

**Scoring**: ``transform`` T maps x to u = T (x - mu) with Cov_w(u) = I and
Cov_b(u) = diag(psi).  For n enrolment vectors with mean ubar (Kaldi's
``--num-utts``) and one test vector u, per dimension

    same speaker:  u ~ N( n psi/(n psi + 1) ubar,  1 + psi/(n psi + 1) )
    different:     u ~ N( 0, 1 + psi )

and LLR = log N(u | same) - log N(u | different), summed over dimensions.  This
equals the full-covariance Gaussian ratio of the pair (x_enroll_mean, x_test) that
``tests/test_plda.py`` checks against.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.linalg

from pyspk.io import atomic_open, atomic_path

log = logging.getLogger(__name__)


def class_stats(X: np.ndarray, labels):
    """Return (classes, counts n_k, class means m_k (K, d), within scatter S_within)."""
    X = np.asarray(X, dtype=np.float64)
    classes, idx, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    sums = np.zeros((classes.shape[0], X.shape[1]))
    np.add.at(sums, idx, X)
    means = sums / counts[:, None]
    centred = X - means[idx]
    return classes, counts, means, centred.T @ centred


def simultaneous_diag(sigma_w: np.ndarray, sigma_b: np.ndarray):
    """Return (T, psi) with T Sigma_w T^T = I and T Sigma_b T^T = diag(psi), psi descending."""
    psi, vecs = scipy.linalg.eigh(sigma_b, sigma_w)  # vecs^T Sigma_w vecs = I
    order = np.argsort(psi)[::-1]
    return vecs[:, order].T, np.maximum(psi[order], 0.0)


class PLDA:
    """Two-covariance PLDA: ``fit(X, labels)``, ``score(enroll, test)`` -> LLRs.

    Parameters after fitting: ``mean`` (d,), ``sigma_w``, ``sigma_b`` (d, d) and the
    scoring form ``transform`` (d, d), ``psi`` (d,) (Kaldi's mean_/transform_/psi_).
    """

    def __init__(self, n_iter: int = 10, init: str = "moments", floor: float = 1e-6):
        if init not in ("moments", "identity"):
            raise ValueError(f"PLDA init must be 'moments' or 'identity', got {init!r}")
        self.n_iter, self.init, self.floor = int(n_iter), init, floor
        self.mean: Optional[np.ndarray] = None
        self.sigma_w = self.sigma_b = self.transform = self.psi = None

    # ---------------------------------------------------------------- training
    def fit(self, X, labels) -> "PLDA":
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] != len(labels):
            raise ValueError(f"PLDA.fit: X must be (N, d) with one label per row (got {X.shape}, {len(labels)} labels)")
        if not np.isfinite(X).all():
            raise ValueError("PLDA.fit: X contains NaN or inf")
        classes, n, m, s_within = class_stats(X, labels)
        K, d = m.shape
        if K < 2 or n.sum() <= K:
            raise ValueError(
                f"PLDA.fit needs >= 2 classes and some class with >= 2 vectors (got {K} classes, {X.shape[0]} vectors)"
            )
        self.mean = X.mean(axis=0)
        mc = m - self.mean
        if self.init == "identity":  # Kaldi's PldaEstimator starts from I, I
            sw, sb = np.eye(d), np.eye(d)
        else:  # moment estimates: faster convergence from the same EM
            sw = s_within / max(X.shape[0] - K, 1) + self.floor * np.eye(d)
            sb = np.cov(mc.T, bias=True).reshape(d, d) + self.floor * np.eye(d)
        for it in range(self.n_iter):
            sw, sb = self._em_step(sw, sb, s_within, n, mc)
            log.debug("PLDA EM iteration %d: trace(Sw)=%.4g trace(Sb)=%.4g", it + 1, np.trace(sw), np.trace(sb))
        self.sigma_w, self.sigma_b = sw, sb
        self.transform, self.psi = simultaneous_diag(sw, sb)
        return self

    def _em_step(self, sw, sb, s_within, n, mc):
        T, psi = simultaneous_diag(sw, sb)
        Tinv = sw @ T.T  # T Sigma_w T^T = I  =>  T^-1 = Sigma_w T^T
        u = mc @ T.T  # class means in the diagonal basis
        gain = n[:, None] * psi / (n[:, None] * psi + 1.0)  # C_k n_k Sigma_w^-1 per dimension
        y = gain * u  # posterior means (K, d)
        c = psi / (n[:, None] * psi + 1.0)  # posterior variances (K, d)
        K, N = mc.shape[0], n.sum()
        sb_new = (y.T @ y + np.diag(c.sum(axis=0))) / K
        r = u - y
        sw_new_u = (r.T * n) @ r + np.diag((n[:, None] * c).sum(axis=0))
        sb_out = Tinv @ sb_new @ Tinv.T
        sw_out = (s_within + Tinv @ sw_new_u @ Tinv.T) / N
        return 0.5 * (sw_out + sw_out.T), 0.5 * (sb_out + sb_out.T)

    # ----------------------------------------------------------------- scoring
    def project(self, X) -> np.ndarray:
        """u = T (x - mu): within-class identity, between-class diag(psi)."""
        self._check_fitted()
        return (np.asarray(X, dtype=np.float64) - self.mean) @ self.transform.T

    def score_projected(self, u_enroll, u_test, n_enroll=1) -> np.ndarray:
        """Row-wise LLRs of projected enrolment means (with counts n) and test vectors."""
        psi = self.psi
        n = np.broadcast_to(np.asarray(n_enroll, dtype=np.float64), (u_enroll.shape[0],))[:, None]
        a = n * psi / (n * psi + 1.0)
        v_same = 1.0 + psi / (n * psi + 1.0)
        v_diff = 1.0 + psi
        same = -0.5 * (np.log(v_same) + (u_test - a * u_enroll) ** 2 / v_same).sum(axis=1)
        diff = -0.5 * (np.log(v_diff) + u_test**2 / v_diff).sum(axis=1)
        return same - diff

    def score(self, enroll, test, n_enroll=1, chunk: int = 200_000) -> np.ndarray:
        """LLRs of trial pairs (row i of ``enroll`` against row i of ``test``).

        ``enroll`` rows are single vectors or means of ``n_enroll`` vectors (scalar or
        one count per row), as Kaldi's ``ivector-plda-scoring --num-utts``.
        """
        enroll, test = np.atleast_2d(enroll), np.atleast_2d(test)
        if enroll.shape != test.shape:
            raise ValueError(f"PLDA.score: enroll {enroll.shape} and test {test.shape} differ")
        n = np.broadcast_to(np.asarray(n_enroll, dtype=np.float64), (enroll.shape[0],))
        out = np.empty(enroll.shape[0])
        for s in range(0, enroll.shape[0], chunk):
            sl = slice(s, s + chunk)
            out[sl] = self.score_projected(self.project(enroll[sl]), self.project(test[sl]), n[sl])
        return out

    def trial_features(self, u_enroll, u_test, n_enroll=1, dtype=np.float64):
        """Per-table features so that LLR(e, t) = <F_e[e], G_t[t]> + c_e[e].

        Expanding the per-dimension Gaussians of :meth:`score_projected`:
        F_e = [ (1/v_diff - 1/v_same)/2,  a u_e / v_same ],   G_t = [ u_t^2,  u_t ],
        c_e = sum_d [ (log v_diff - log v_same)/2 - a^2 u_e^2 / (2 v_same) ],
        with a, v_same computed once per distinct enrolment count n.
        """
        psi, d = self.psi, self.psi.shape[0]
        n = np.broadcast_to(np.asarray(n_enroll, dtype=np.float64), (u_enroll.shape[0],))
        n_values, which = np.unique(n, return_inverse=True)
        nn = n_values[:, None]
        a = nn * psi / (nn * psi + 1.0)  # (distinct n, d)
        v_same = 1.0 + psi / (nn * psi + 1.0)
        v_diff = 1.0 + psi
        F = np.empty((u_enroll.shape[0], 2 * d), dtype=dtype)
        F[:, :d] = (0.5 * (1.0 / v_diff - 1.0 / v_same))[which]
        F[:, d:] = u_enroll * (a / v_same)[which]
        const = 0.5 * (np.log(v_diff) - np.log(v_same)).sum(axis=1)
        c = const[which] - 0.5 * np.einsum("ij,ij->i", u_enroll**2, (a**2 / v_same)[which])
        G = np.empty((u_test.shape[0], 2 * d), dtype=dtype)
        G[:, :d] = u_test**2
        G[:, d:] = u_test
        return F, G, c

    def score_trials(
        self, enroll_vecs, test_vecs, enroll_idx, test_idx, n_enroll=1, chunk: int = 20_000, dtype=np.float32
    ) -> np.ndarray:
        """LLRs for trials given as index arrays into enrolment/test vector tables.

        Projects each table once (:meth:`trial_features`), then every trial is one
        dot product of gathered rows, in cache-sized chunks (``dtype`` float32 by
        default: ~1e-6 relative error, half the memory traffic).
        """
        F, G, c = self.trial_features(self.project(enroll_vecs), self.project(test_vecs), n_enroll, dtype)
        out = np.empty(len(enroll_idx))
        for s in range(0, len(enroll_idx), chunk):
            ei, ti = enroll_idx[s : s + chunk], test_idx[s : s + chunk]
            out[s : s + chunk] = np.einsum("ij,ij->i", F[ei], G[ti]) + c[ei]
        return out

    # ----------------------------------------------------------------- storage
    def _check_fitted(self):
        if self.mean is None:
            raise RuntimeError("PLDA is not fitted")

    def save(self, path) -> None:
        """npz with mean, sigma_w, sigma_b, transform, psi (atomic)."""
        self._check_fitted()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    mean=self.mean,
                    sigma_w=self.sigma_w,
                    sigma_b=self.sigma_b,
                    transform=self.transform,
                    psi=self.psi,
                )

    @classmethod
    def load(cls, path) -> "PLDA":
        with np.load(path) as z:
            p = cls()
            p.mean, p.sigma_w, p.sigma_b = z["mean"], z["sigma_w"], z["sigma_b"]
            p.transform, p.psi = z["transform"], z["psi"]
        return p

    def save_kaldi(self, path) -> None:
        """Kaldi binary ``Plda`` object: ``\\0B<Plda> DV mean DM transform DV psi </Plda> ``.

        Written from Kaldi's documented binary layout (tokens followed by a space,
        int32 sizes prefixed by the byte 4, little-endian doubles).  NOT verified with
        Kaldi's own tools (none are installed here).
        """
        self._check_fitted()

        def vec(v):
            return b"DV " + struct.pack("<bi", 4, v.shape[0]) + np.asarray(v, "<f8").tobytes()

        def mat(m):
            return b"DM " + struct.pack("<bibi", 4, m.shape[0], 4, m.shape[1]) + np.asarray(m, "<f8").tobytes()

        blob = b"\0B" + b"<Plda> " + vec(self.mean) + mat(self.transform) + vec(self.psi) + b"</Plda> "
        with atomic_open(Path(path), "wb") as f:
            f.write(blob)
