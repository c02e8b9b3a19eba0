"""PLDA against a known two-covariance model and the direct Gaussian formula."""

import struct

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from pyspk.backend.plda import PLDA
from pyspk.metrics import compute_eer

D = 6


def true_model(seed=0):
    rng = np.random.default_rng(seed)
    A, B = rng.normal(size=(D, D)), rng.normal(size=(D, D))
    return rng.normal(size=D) * 2, A @ A.T / D * 1.5, B @ B.T / D + 0.1 * np.eye(D)


def draw(rng, mu, sb, sw, n_spk, n_utt):
    y = rng.multivariate_normal(np.zeros(D), sb, n_spk)
    lab = np.repeat(np.arange(n_spk), n_utt)
    return mu + y[lab] + rng.multivariate_normal(np.zeros(D), sw, n_spk * n_utt), lab


def direct_llr(e, t, mu, sb, sw, n=1):
    """log N([e;t] | same) - log N([e;t] | diff), e the mean of n enrolment vectors."""
    tot_e, tot_t = sb + sw / n, sb + sw
    same = np.block([[tot_e, sb], [sb, tot_t]])
    diff = np.block([[tot_e, np.zeros((D, D))], [np.zeros((D, D)), tot_t]])
    z = np.concatenate([e - mu, t - mu])
    return multivariate_normal(np.zeros(2 * D), same).logpdf(z) - multivariate_normal(np.zeros(2 * D), diff).logpdf(z)


def oracle(mu, sb, sw):
    p = PLDA()
    p.mean, p.sigma_b, p.sigma_w = mu, sb, sw
    from pyspk.backend.plda import simultaneous_diag

    p.transform, p.psi = simultaneous_diag(sw, sb)
    return p


def test_fitted_llrs_match_true_model():
    rng = np.random.default_rng(1)
    mu, sb, sw = true_model()
    X, lab = draw(rng, mu, sb, sw, 600, 8)
    plda = PLDA(n_iter=10).fit(X, lab)
    Xt, lt = draw(rng, mu, sb, sw, 2000, 2)
    e, t = Xt[0::2], Xt[1::2]  # 2000 target pairs
    e = np.concatenate([e, e])
    t = np.concatenate([t, np.roll(t, 1, axis=0)])  # + 2000 non-target pairs
    labels = np.r_[np.ones(2000), np.zeros(2000)]
    fitted = plda.score(e, t)
    true = oracle(mu, sb, sw).score(e, t)
    assert np.corrcoef(fitted, true)[0, 1] > 0.99
    assert abs(compute_eer(fitted, labels)[0] - compute_eer(true, labels)[0]) <= 0.005


@pytest.mark.parametrize("n", [1, 3])
def test_score_equals_direct_gaussian_formula(n):
    rng = np.random.default_rng(2)
    mu, sb, sw = true_model(3)
    X, lab = draw(rng, mu, sb, sw, 50, 5)
    plda = PLDA(n_iter=5).fit(X, lab)
    e, t = rng.normal(size=(10, D)) + mu, rng.normal(size=(10, D)) + mu
    got = plda.score(e, t, n_enroll=n)
    want = [direct_llr(a, b, plda.mean, plda.sigma_b, plda.sigma_w, n) for a, b in zip(e, t)]
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)
    # score_trials (index form, per-row counts) agrees with score
    idx = np.arange(10)
    np.testing.assert_allclose(plda.score_trials(e, t, idx, idx, n_enroll=np.full(10, n), dtype=np.float64), got)
    np.testing.assert_allclose(plda.score_trials(e, t, idx, idx, n_enroll=n), got, rtol=1e-4, atol=1e-4)


def test_transform_diagonalises():
    rng = np.random.default_rng(4)
    mu, sb, sw = true_model(5)
    X, lab = draw(rng, mu, sb, sw, 100, 4)
    p = PLDA(n_iter=3).fit(X, lab)
    np.testing.assert_allclose(p.transform @ p.sigma_w @ p.transform.T, np.eye(D), atol=1e-8)
    np.testing.assert_allclose(p.transform @ p.sigma_b @ p.transform.T, np.diag(p.psi), atol=1e-8)


def test_em_from_identity_reaches_same_fixed_point():
    rng = np.random.default_rng(6)
    mu, sb, sw = true_model(7)
    X, lab = draw(rng, mu, sb, sw, 200, 5)
    a = PLDA(n_iter=300, init="identity").fit(X, lab)
    b = PLDA(n_iter=300, init="moments").fit(X, lab)
    np.testing.assert_allclose(a.sigma_b, b.sigma_b, atol=1e-4)
    np.testing.assert_allclose(a.sigma_w, b.sigma_w, atol=1e-4)


def test_save_load_and_kaldi_layout(tmp_path):
    rng = np.random.default_rng(8)
    mu, sb, sw = true_model()
    X, lab = draw(rng, mu, sb, sw, 30, 4)
    p = PLDA(n_iter=2).fit(X, lab)
    p.save(tmp_path / "plda.npz")
    q = PLDA.load(tmp_path / "plda.npz")
    np.testing.assert_array_equal(p.score(X[:5], X[5:10]), q.score(X[:5], X[5:10]))
    p.save_kaldi(tmp_path / "plda.kaldi")
    blob = (tmp_path / "plda.kaldi").read_bytes()
    assert blob.startswith(b"\0B<Plda> DV \x04") and blob.endswith(b"</Plda> ")
    off = len(b"\0B<Plda> DV ")
    assert struct.unpack("<bi", blob[off : off + 5]) == (4, D)
    np.testing.assert_array_equal(np.frombuffer(blob[off + 5 : off + 5 + 8 * D], "<f8"), p.mean)


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        PLDA().fit(np.full((4, 2), np.nan), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="2 classes"):
        PLDA().fit(np.ones((4, 2)), [0, 0, 0, 0])
