"""EER / minDCF against brute-force definitions (every threshold tried, O(n^2))."""

import math

import numpy as np
import pytest

from pyspk.metrics import compute_eer, compute_min_dcf


def brute_points(scores, labels):
    """Every distinct decision (accept score >= t) with plain Python loops."""
    vals = sorted(set(float(s) for s in scores))
    gap = (vals[-1] - vals[0]) / (len(vals) - 1) if len(vals) > 1 else 1.0
    ts = [vals[0] - gap] + [(a + b) / 2 for a, b in zip(vals, vals[1:])] + [vals[-1] + gap]
    n_tar = sum(1 for l in labels if l == 1)
    n_non = len(labels) - n_tar
    pts = []
    for t in ts:
        miss = sum(1 for s, l in zip(scores, labels) if l == 1 and s < t)
        fa = sum(1 for s, l in zip(scores, labels) if l == 0 and s >= t)
        pts.append((miss / n_tar, fa / n_non, t))
    return pts


def brute_eer(scores, labels):
    pts = brute_points(scores, labels)
    for (m0, f0, t0), (m1, f1, t1) in zip(pts, pts[1:]):
        if m0 == f0:
            return m0, t0
        if m0 < f0 and m1 >= f1:
            a = (f0 - m0) / ((m1 - m0) - (f1 - f0))
            return m0 + a * (m1 - m0), t0 + a * (t1 - t0)
    raise AssertionError("no crossing")


def brute_min_dcf(scores, labels, p, cm=1.0, cf=1.0):
    pts = brute_points(scores, labels)
    costs = [(cm * p * m + cf * (1 - p) * f, t) for m, f, t in pts]
    best = min(c for c, _ in costs)
    return best / min(cm * p, cf * (1 - p)), [t for c, t in costs if c == best]


def random_case(rng, n_tar, n_non, ties):
    s = np.r_[rng.normal(1.0, 1.0, n_tar), rng.normal(0.0, 1.0, n_non)]
    if ties:
        s = np.round(s * 2) / 2  # many equal scores across classes
    lab = np.r_[np.ones(n_tar, int), np.zeros(n_non, int)]
    perm = rng.permutation(len(s))
    return s[perm], lab[perm]


@pytest.mark.parametrize("seed", range(30))
def test_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_tar, n_non = int(rng.integers(1, 40)), int(rng.integers(1, 80))
    s, lab = random_case(rng, n_tar, n_non, ties=seed % 2 == 0)
    eer, thr = compute_eer(s, lab)
    beer, bthr = brute_eer(list(s), list(lab))
    assert eer == pytest.approx(beer, abs=1e-12) and thr == pytest.approx(bthr, abs=1e-12)
    for p, cm, cf in [(0.01, 1, 1), (0.001, 1, 1), (0.05, 10, 1), (0.5, 1, 3)]:
        dcf, t = compute_min_dcf(s, lab, p, cm, cf)
        bdcf, bts = brute_min_dcf(list(s), list(lab), p, cm, cf)
        assert dcf == pytest.approx(bdcf, abs=1e-12)
        assert any(t == pytest.approx(bt) for bt in bts)
        assert 0.0 <= dcf <= 1.0 + 1e-12


def test_tiny_lists():
    assert compute_eer([2.0, 1.0], [1, 0]) == (0.0, 1.5)
    assert compute_eer([1.0, 2.0], [1, 0])[0] == 1.0
    assert compute_eer([1.0, 1.0], [1, 0])[0] == 0.5  # a tie cannot be split
    assert compute_min_dcf([2.0, 1.0], [1, 0], 0.01) == (0.0, 1.5)
    assert compute_min_dcf([1.0, 1.0], [True, False], 0.01)[0] == 1.0


def test_all_ties_and_bool_labels():
    s = np.zeros(10)
    lab = np.arange(10) < 3
    eer, _ = compute_eer(s, lab)
    assert eer == pytest.approx(0.5)


def test_gaussian_eer_close_to_theory():
    rng = np.random.default_rng(0)
    s = np.r_[rng.normal(2, 1, 20000), rng.normal(0, 1, 20000)]
    lab = np.r_[np.ones(20000), np.zeros(20000)]
    eer, thr = compute_eer(s, lab)
    assert eer == pytest.approx(0.5 * math.erfc(1 / math.sqrt(2)), abs=0.01)  # Phi(-1)
    assert thr == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    "scores,labels,msg",
    [
        ([0.1, 0.2], [0, 0], "no target"),
        ([0.1, 0.2], [1, 1], "no non-target"),
        ([0.1, float("nan")], [1, 0], "NaN"),
        ([0.1, float("inf")], [1, 0], "NaN or infinite"),
        ([0.1, 0.2, 0.3], [1, 0], "length mismatch"),
        ([0.1, 0.2], [1, 2], "labels must be 0/1"),
        ([], [], "no target"),
    ],
)
def test_invalid_input(scores, labels, msg):
    with pytest.raises(ValueError, match=msg):
        compute_eer(scores, labels)
    with pytest.raises(ValueError, match=msg):
        compute_min_dcf(scores, labels, 0.01)


def test_bad_p_target():
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf([1.0, 0.0], [1, 0], 1.5)


def test_det_plot_several_systems(tmp_path):
    from pyspk.metrics.det import det_points, plot_det

    rng = np.random.default_rng(5)
    curves = {}
    for name, sep in (("good", 3.0), ("bad", 1.0)):
        s, lab = random_case(rng, 200, 2000, ties=False)
        curves[name] = (s + sep * lab, lab)
    path = plot_det(curves, tmp_path / "det.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p_fa, p_miss = det_points(*curves["good"])
    assert np.all(np.diff(p_fa) <= 0) and np.all(np.diff(p_miss) >= 0)


def test_det_panels_and_histograms(tmp_path):
    """One panel per back-end side by side (legends below, not on the curves); histograms per list x back-end."""
    import matplotlib.image as mpimg

    from pyspk.metrics.det import plot_det_panels, plot_score_histograms

    rng = np.random.default_rng(6)
    panels = {}
    for backend in ("cosine", "asnorm", "plda"):
        panels[backend] = {}
        for k in range(7):
            s, lab = random_case(rng, 100, 500, ties=False)
            panels[backend][f"system{k}"] = (s + (1 + 0.3 * k) * lab, lab)
    img = mpimg.imread(plot_det_panels(panels, tmp_path / "det.png", title="DET: trials"))
    height, width = img.shape[:2]
    assert width > 2.5 * height * 0.8  # three square panels in a row, the legends under them
    hist = {(t, b): panels[b]["system0"] for t in ("trials_a", "trials_b") for b in panels}
    img = mpimg.imread(plot_score_histograms(hist, tmp_path / "hist.png", title="scores"))
    assert img.shape[1] > img.shape[0]  # 3 back-end columns x 2 list rows


def test_compute_metrics_equals_separate_calls():
    from pyspk.metrics import compute_metrics

    rng = np.random.default_rng(9)
    s, lab = random_case(rng, 30, 70, ties=True)
    m = compute_metrics(s, lab, (0.01, 0.001))
    assert (m["eer"], m["eer_threshold"]) == compute_eer(s, lab)
    assert (m["min_dcf_0.01"], m["min_dcf_0.01_threshold"]) == compute_min_dcf(s, lab, 0.01)
    assert (m["min_dcf_0.001"], m["min_dcf_0.001_threshold"]) == compute_min_dcf(s, lab, 0.001)
