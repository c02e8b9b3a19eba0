"""The whole recipe, end to end, on a tiny SynthCeleb: ./run.sh stages 0-7 for real.

Tiny corpus -> fbank -> augmentation -> one short training run of a tiny encoder with the
proposed loss (AAM + AM-SupCon + CAA + MGDA) -> x-vector extraction -> cosine, AS-norm and
PLDA scores -> metrics and results.md. Asserts every artefact exists and is well formed,
then that a rerun of the finished recipe does no work.
"""

from __future__ import annotations

import json

import kaldiio
import numpy as np
import pytest

from pyspk.data.kaldi_dir import read_table, read_trials, validate_data_dir

pytestmark = pytest.mark.slow


def test_tiny_recipe_end_to_end(tiny_recipe):
    """tiny_recipe (tests/conftest.py) ran a bare ./run.sh; check what it made."""
    data, exp = tiny_recipe.root / "data", tiny_recipe.root / "exp"

    # stages 0-2: data dirs with features, augmented copies combined with utt2orig
    for name in ("synth_train", "synth_test", "synth_train_combined"):
        counts = validate_data_dir(data / name, need_feats=True)
        assert counts["utts"] > 0
    combined = read_table(data / "synth_train_combined/utt2orig")
    clean = read_table(data / "synth_train/utt2spk")
    assert set(combined.values()) == set(clean), "every augmented copy maps to a clean utterance"
    assert len(combined) > len(clean)
    feats = dict(kaldiio.load_scp(str(data / "synth_test/feats.scp")))
    first = next(iter(feats.values()))
    assert first.ndim == 2 and first.shape[1] == 80 and np.isfinite(first).all()

    # stage 3: a trained model with its resolved config and per-step log
    sysdir = exp / "proposed"
    for f in ("final.pt", "config.yaml", "train.csv"):
        assert (sysdir / f).is_file(), f
    header = (sysdir / "train.csv").read_text().splitlines()[0]
    assert "alpha" in header

    # stage 4: x-vectors for every test utterance and speaker
    xv = dict(kaldiio.load_scp(str(sysdir / "xvectors_synth_test/xvector.scp")))
    assert set(xv) == set(read_table(data / "synth_test/utt2spk"))
    dims = {v.shape for v in xv.values()}
    assert dims == {(32,)} and all(np.isfinite(v).all() for v in xv.values())
    spk = dict(kaldiio.load_scp(str(sysdir / "xvectors_synth_test/spk_xvector.scp")))
    assert len(spk) == 4

    # stages 5-6: one score per trial and back-end, metrics in range
    metrics = json.loads((sysdir / "scores/metrics.json").read_text())
    for trials in ("trials_en", "trials_cmn", "trials_cross"):
        n = len(read_trials(data / "synth_test" / trials))
        for backend in ("cosine", "asnorm", "plda"):
            lines = (sysdir / "scores" / f"{trials}.{backend}").read_text().splitlines()
            assert len(lines) == n
            assert all(np.isfinite(float(l.split()[2])) for l in lines)
            m = metrics[trials][backend]
            # An encoder trained for 6 steps may still be worse than chance on a
            # list of 200 trials; the metric itself is bounded by [0, 1].
            assert 0.0 <= m["eer"] <= 1.0 and 0.0 <= m["min_dcf_0.01"] <= 1.0 + 1e-9

    # stage 7: the report
    report = (exp / "results.md").read_text()
    assert "proposed" in report and "trials_cross" in report and "plda" in report
    assert json.loads((exp / "results.json").read_text())
    assert (exp / "det.png").stat().st_size > 1000

    # A rerun of the finished recipe skips every stage (stamps are up to date).
    before = (sysdir / "final.pt").stat().st_mtime_ns
    p2 = tiny_recipe.run("--stage", "0", "--stop-stage", "6")
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert p2.stderr.count("up to date; skipping") >= 8, p2.stderr[-3000:]
    assert (sysdir / "final.pt").stat().st_mtime_ns == before
