"""Linear discriminant analysis and length normalisation for embeddings.

LDA (Fisher; Kaldi ``ivector-compute-lda``): with within-class scatter
S_w = 1/N sum_i (x_i - m_k(i))(x_i - m_k(i))^T and between-class scatter
S_b = 1/N sum_k n_k (m_k - m)(m_k - m)^T, the projection keeps the ``dim``
generalised eigenvectors of S_b v = lambda S_w v with the largest lambda,
scaled so that the projected within-class covariance is the identity.

Length normalisation (Garcia-Romero & Espy-Wilson, Interspeech 2011):
x -> sqrt(d) x / ||x|| (``scale_sqrt_dim``) or x / ||x||.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.linalg

from pyspk.backend.plda import class_stats
from pyspk.io import atomic_path


def length_norm(X, scale_sqrt_dim: bool = False, eps: float = 1e-10) -> np.ndarray:
    """Row-wise x / ||x|| (times sqrt(d) when ``scale_sqrt_dim``)."""
    X = np.asarray(X)
    norm = np.linalg.norm(X, axis=-1, keepdims=True)
    out = X / np.maximum(norm, eps)
    return out * np.sqrt(X.shape[-1]) if scale_sqrt_dim else out


class LDA:
    """``fit(X, labels)`` then ``transform(X)`` = (x - mean) W, W of shape (d, dim)."""

    def __init__(self, dim: int, reg: float = 1e-6):
        self.dim, self.reg = int(dim), reg
        self.mean: Optional[np.ndarray] = None
        self.W: Optional[np.ndarray] = None
        self.eigvals: Optional[np.ndarray] = None

    def fit(self, X, labels) -> "LDA":
        X = np.asarray(X, dtype=np.float64)
        classes, n, m, s_within = class_stats(X, labels)
        d = X.shape[1]
        if not 0 < self.dim <= d:
            raise ValueError(f"lda_dim={self.dim} must be in 1..{d} (the embedding dimension)")
        if classes.shape[0] <= self.dim:
            raise ValueError(
                f"lda_dim={self.dim} needs more than {self.dim} training speakers (got {classes.shape[0]})"
            )
        self.mean = X.mean(axis=0)
        sw = s_within / X.shape[0] + self.reg * np.eye(d)
        mc = m - self.mean
        sb = (mc.T * n) @ mc / X.shape[0]
        vals, vecs = scipy.linalg.eigh(sb, sw)  # vecs^T Sw vecs = I
        order = np.argsort(vals)[::-1][: self.dim]
        self.W, self.eigvals = vecs[:, order], vals[order]
        return self

    def transform(self, X) -> np.ndarray:
        if self.W is None:
            raise RuntimeError("LDA is not fitted")
        return (np.asarray(X, dtype=np.float64) - self.mean) @ self.W

    def save(self, path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, mean=self.mean, W=self.W, eigvals=self.eigvals)

    @classmethod
    def load(cls, path) -> "LDA":
        with np.load(path) as z:
            lda = cls(int(z["W"].shape[1]))
            lda.mean, lda.W, lda.eigvals = z["mean"], z["W"], z["eigvals"]
        return lda
