"""Back-end stage tests: AS-norm shift invariance, calibration, stage round trip, unknown ids."""

import json

import numpy as np
import pytest

from pyspk.backend.calibration import LinearCalibration, cllr
from pyspk.backend.config import BackendConfig, load_config
from pyspk.backend.cosine import CosineScorer
from pyspk.backend.model import Backend, fit_backend_dir
from pyspk.backend.norm import as_norm, top_n_stats
from pyspk.backend.scoring import score_data_dir
from pyspk.bin import backend as backend_bin
from pyspk.bin import score as score_bin
from pyspk.data.xvectors import read_vectors, write_xvector_dir


def test_asnorm_invariant_to_shift():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=50)
    ce, ct = rng.normal(size=(50, 40)), rng.normal(size=(50, 40))  # cohort scores per trial side

    def norm(shift):
        em, es = top_n_stats(ce + shift, 10)
        tm, ts = top_n_stats(ct + shift, 10)
        return as_norm(raw + shift, em, es, tm, ts)

    base = norm(0.0)
    for c in (-3.0, 0.5, 100.0):
        np.testing.assert_allclose(norm(c), base, atol=1e-9)
    assert not np.allclose(base, raw)  # it does normalise


def test_top_n_stats_matches_sort():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(7, 30))
    m, sd = top_n_stats(s, 5)
    top = np.sort(s, axis=1)[:, -5:]
    np.testing.assert_allclose(m, top.mean(1))
    np.testing.assert_allclose(sd, top.std(1))


def test_cosine_mean_subtraction():
    mu = np.array([5.0, 5.0])
    sc = CosineScorer(mu)
    np.testing.assert_allclose(sc.score([[6.0, 5.0]], [[5.0, 6.0]]), [0.0], atol=1e-6)
    np.testing.assert_allclose(sc.score([[6.0, 5.0]], [[7.0, 5.0]]), [1.0], atol=1e-6)


def test_calibration_recovers_llr():
    rng = np.random.default_rng(2)
    # scores s with LLR = 2 s - 1 exactly: targets N(0.75, .5^2)... use Gaussian classes with equal var
    mt, mn, sd = 1.0, 0.0, 1.0  # LLR(s) = (mt - mn)/sd^2 * s - (mt^2 - mn^2)/(2 sd^2) = s - 0.5
    s = np.r_[rng.normal(mt, sd, 20000), rng.normal(mn, sd, 20000)]
    lab = np.r_[np.ones(20000), np.zeros(20000)]
    cal = LinearCalibration().fit(3 * s + 7, lab)  # an affine distortion to undo
    assert cal.a * 3 == pytest.approx(1.0, abs=0.05)
    assert cal.a * 7 + cal.b == pytest.approx(-0.5, abs=0.05)
    assert cllr(cal.apply(3 * s + 7), lab) < cllr(3 * s + 7, lab)
    assert cllr(np.zeros(4), [1, 0, 1, 0]) == pytest.approx(1.0)


def make_xvector_dirs(tmp_path, n_spk=12, n_utt=6, dim=16, seed=0):
    """Train and test x-vector dirs + data dirs with Gaussian speaker clusters."""
    rng = np.random.default_rng(seed)
    out = {}
    for part, offset in (("train", 0), ("test", 100)):
        centres = rng.normal(size=(n_spk, dim)) * 2 + 3
        xv, utt2spk = {}, {}
        for s in range(n_spk):
            spk = f"spk{offset + s:03d}"
            for u in range(n_utt):
                utt = f"{spk}-u{u}"
                xv[utt] = centres[s] + rng.normal(size=dim)
                utt2spk[utt] = spk
        spk2utt = {}
        for u, s in sorted(utt2spk.items()):
            spk2utt.setdefault(s, []).append(u)
        d, x = tmp_path / f"data_{part}", tmp_path / f"xv_{part}"
        d.mkdir()
        (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in sorted(utt2spk.items())))
        write_xvector_dir(x, xv, spk2utt)
        out[part] = (d, x, utt2spk)
    d, _, utt2spk = out["test"]
    utts = sorted(utt2spk)
    lines = [
        f"{a} {b} {'target' if utt2spk[a] == utt2spk[b] else 'nontarget'}"
        for i, a in enumerate(utts)
        for b in utts[i + 1 :]
        if a.endswith("u0")
    ]
    (d / "trials").write_text("\n".join(lines) + "\n")
    spk_lines = [
        f"{s} {u} {'target' if utt2spk[u] == s else 'nontarget'}"
        for s in sorted(set(utt2spk.values()))
        for u in utts
        if u.endswith(f"u{n_utt - 1}")
    ]
    (d / "trials_spk").write_text("\n".join(spk_lines) + "\n")
    return out


def test_stage_round_trip(tmp_path):
    dirs = make_xvector_dirs(tmp_path)
    (tmp_path / "backend.yaml").write_text("lda_dim: 8\nplda_iters: 5\nasnorm_top_n: 5\n")
    dtr, xtr, _ = dirs["train"]
    dte, xte, _ = dirs["test"]
    assert backend_bin.main(["--config", str(tmp_path / "backend.yaml"), str(xtr), str(dtr), str(tmp_path / "be")]) == 0
    for f in ("mean.npz", "lda.npz", "plda.npz", "plda.kaldi", "cohort.npz", "backend.yaml"):
        assert (tmp_path / "be" / f).is_file()
    assert (
        score_bin.main(
            [
                "--backend-dir",
                str(tmp_path / "be"),
                "--xvector-dir",
                str(xte),
                "--data-dir",
                str(dte),
                "--out-dir",
                str(tmp_path / "scores"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    assert set(metrics) == {"trials", "trials_spk"}
    for lst in metrics.values():
        assert set(lst) == {"cosine", "asnorm", "plda"}
        for m in lst.values():
            assert 0.0 <= m["eer"] < 0.1  # well separated clusters
            assert 0.0 <= m["min_dcf_0.01"] <= 1.0 and 0.0 <= m["min_dcf_0.001"] <= 1.0
    lines = (tmp_path / "scores" / "trials_spk.plda").read_text().splitlines()
    assert len(lines) == len((dte / "trials_spk").read_text().splitlines())
    e, t, s = lines[0].split()
    assert e.startswith("spk") and float(s) == float(s)
    thr = json.loads((tmp_path / "scores" / "thresholds.json").read_text())
    assert thr["trials"] == "trials" and set(thr) >= {"cosine", "asnorm", "plda"}


def test_unknown_trial_id_names_it_and_the_line(tmp_path, capsys):
    dirs = make_xvector_dirs(tmp_path, n_spk=6, n_utt=3)
    dtr, xtr, _ = dirs["train"]
    dte, xte, _ = dirs["test"]
    backend = fit_backend_dir(xtr, dtr, tmp_path / "be", BackendConfig(lda_dim=4, asnorm_top_n=3))
    lines = (dte / "trials").read_text().splitlines()
    lines.insert(2, "spk100-u0 ghost-utt nontarget")
    (dte / "trials").write_text("\n".join(lines) + "\n")
    with pytest.raises(KeyError, match=r"trials:3: .*ghost-utt"):
        score_data_dir(backend, xte, dte, tmp_path / "scores")
    rc = score_bin.main(
        [
            "--backend-dir",
            str(tmp_path / "be"),
            "--xvector-dir",
            str(xte),
            "--data-dir",
            str(dte),
            "--out-dir",
            str(tmp_path / "s2"),
        ]
    )
    assert rc == 1 and "ghost-utt" in capsys.readouterr().err


def test_config_misspelled_key(tmp_path):
    p = tmp_path / "b.yaml"
    p.write_text("lda_dimm: 100\n")
    with pytest.raises(ValueError, match="did you mean 'lda_dim'"):
        load_config(p)


def test_backend_save_load_same_scores(tmp_path):
    dirs = make_xvector_dirs(tmp_path, n_spk=8, n_utt=4)
    dtr, xtr, _ = dirs["train"]
    be = fit_backend_dir(xtr, dtr, tmp_path / "be", BackendConfig(lda_dim=5, asnorm_top_n=4))
    be2 = Backend.load(tmp_path / "be")
    X = np.stack(list(read_vectors(xtr / "xvector.scp").values()))
    idx = np.arange(len(X))
    for name in ("cosine", "asnorm", "plda"):
        np.testing.assert_allclose(
            be.score_trials(name, X, X[::-1], idx, idx),
            be2.score_trials(name, X, X[::-1], idx, idx),
            rtol=1e-5,
            atol=1e-6,
        )


def test_report_two_systems_and_missing(tmp_path, capsys):
    from pyspk.bin import report as report_bin

    dirs = make_xvector_dirs(tmp_path, n_spk=8, n_utt=4)
    dtr, xtr, _ = dirs["train"]
    dte, xte, _ = dirs["test"]
    exp = tmp_path / "exp"
    for sys_name, lda in (("sysA", 4), ("sysB", 0)):
        be = fit_backend_dir(xtr, dtr, exp / sys_name / "backend", BackendConfig(lda_dim=lda, asnorm_top_n=4))
        score_data_dir(be, xte, dte, exp / sys_name / "scores")
        (exp / sys_name / "config.yaml").write_text("model: tiny\n")
    (exp / "sysA" / "train.csv").write_text(
        "epoch,step,loss,alpha\n"
        + "".join(f"1,{i},1.0,{a}\n" for i, a in enumerate(["0.1", "0.2", "0.3", "nan", "0.4", "0.5"], 1))
    )
    (exp / "sysB" / "train.csv").write_text("epoch,step,loss,alpha\n1,1,1.0,\n")  # no MGDA
    out = exp / "results.md"
    assert (
        report_bin.main(
            ["--exp-dir", str(exp), "--systems", "sysA sysB", "--command", "./run.sh --x 1", "--out", str(out)]
        )
        == 0
    )
    md = out.read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| sys")]
    assert len(rows) == 2 * 3 * 2  # systems x back-ends x trials lists
    assert "./run.sh --x 1" in md and str(exp / "sysA" / "config.yaml") in md
    assert "MGDA alpha (classifier weight) median 0.300, 5-95 % 0.120-0.480 over 5 steps" in md
    assert md.count("MGDA alpha") == 1
    res = json.loads((exp / "results.json").read_text())
    assert set(res["systems"]) == {"sysA", "sysB"}
    assert (exp / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (exp / "det_trials_spk.png").is_file()
    assert res["histograms"] == ["hist_sysA.png", "hist_sysB.png"] and (exp / "hist_sysA.png").is_file()
    assert "![hist_sysA](hist_sysA.png)" in md
    capsys.readouterr()
    assert report_bin.main(["--exp-dir", str(exp), "--systems", "sysA sysC", "--out", str(out)]) == 1
    assert "sysC" in capsys.readouterr().err


def test_lda_whitens_within_class_and_keeps_discriminant_directions():
    from pyspk.backend.lda import LDA

    rng = np.random.default_rng(3)
    n_spk, per, d = 40, 20, 6
    centres = np.zeros((n_spk, d))
    centres[:, :2] = rng.normal(size=(n_spk, 2)) * 5  # speakers differ in dims 0-1 only
    lab = np.repeat(np.arange(n_spk), per)
    X = centres[lab] + rng.normal(size=(n_spk * per, d)) * np.array([1, 1, 3, 3, 3, 3])
    lda = LDA(2).fit(X, lab)
    Y = lda.transform(X)
    means = np.stack([Y[lab == k].mean(0) for k in range(n_spk)])
    within = np.cov((Y - means[lab]).T, bias=True)
    np.testing.assert_allclose(within, np.eye(2), atol=0.02)
    assert np.all(np.abs(lda.W[2:]) < 0.05 * np.abs(lda.W[:2]).max())  # noise dims ignored
    with pytest.raises(ValueError, match="lda_dim"):
        LDA(7).fit(X, lab)


def test_targets_only_trials_list_is_named_and_leaves_no_score_file(tmp_path, capsys):
    """Issue 12: a list of target trials only fails naming the list, before any score
    file (of it or of another list) is written under its final name."""
    dirs = make_xvector_dirs(tmp_path, n_spk=6, n_utt=3)
    dtr, xtr, _ = dirs["train"]
    dte, xte, _ = dirs["test"]
    fit_backend_dir(xtr, dtr, tmp_path / "be", BackendConfig(lda_dim=4, asnorm_top_n=3))
    targets = [ln for ln in (dte / "trials").read_text().splitlines() if ln.endswith(" target")]
    (dte / "trials_tgt").write_text("\n".join(targets) + "\n")
    rc = score_bin.main(
        [
            "--backend-dir",
            str(tmp_path / "be"),
            "--xvector-dir",
            str(xte),
            "--data-dir",
            str(dte),
            "--out-dir",
            str(tmp_path / "scores"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and f"{dte / 'trials_tgt'}: all {len(targets)} trials are target trials" in err, err
    assert not [p for p in (tmp_path / "scores").iterdir()] if (tmp_path / "scores").exists() else True
