"""The whole recipe, end to end, on a tiny SynthCeleb: ./run.sh stages 0-7 for real.

Tiny corpus -> fbank -> augmentation -> one short training run of a tiny encoder with the
proposed loss (AAM + AM-SupCon + CAA + MGDA) -> x-vector extraction -> cosine, AS-norm and
PLDA scores -> metrics and results.md. Asserts every artefact exists and is well formed,
then that a rerun of the finished recipe does no work.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import yaml

from pyspk.data.kaldi_dir import read_table, read_trials, validate_data_dir
from pyspk.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def tiny_config(tmp_path: Path) -> Path:
    """conf/synth/proposed.yaml shrunk to seconds: the same loss and balance blocks."""
    cfg = yaml.safe_load((REPO / "conf/synth/proposed.yaml").read_text())
    cfg["encoder"] = {"name": "tdnn", "kwargs": {"channels": 32, "stats_channels": 64, "embed_dim": 32}}
    cfg["features"]["crop_frames"] = 100
    cfg["sampler"].update(speakers_per_batch=4, utts_per_speaker=2)
    cfg["optim"]["warmup_steps"] = 1
    cfg["train"].update(epochs=3, steps_per_epoch=5, average_last=2, log_interval=1)
    path = tmp_path / "proposed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    load_config(path)  # the shrunk config is still a valid one
    return path


def run_recipe(tmp_path: Path, config: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        "./run.sh", "--synth-size", "tiny", "--config", str(config), "--nj", "2",
        "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
        "--fbank-dir", str(tmp_path / "fbank"), *extra,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_tiny_recipe_end_to_end(tmp_path):
    config = tiny_config(tmp_path)
    p = run_recipe(tmp_path, config)
    assert p.returncode == 0, f"run.sh failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    data, exp = tmp_path / "data", tmp_path / "exp"

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
    p2 = run_recipe(tmp_path, config, "--stage", "0", "--stop-stage", "6")
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert p2.stderr.count("up to date; skipping") >= 8, p2.stderr[-3000:]
    assert (sysdir / "final.pt").stat().st_mtime_ns == before
