"""One file and one registry line suffice: a toy pair loss and a toy corpus, both defined in files
outside the package and named by PYSPK_PLUGINS, run the whole recipe (stages 0-7) through
./run.sh with the stock stages, trainer, extraction, back-ends and report."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import REPO, tiny_config, tool_env
from test_corpora_registry import TOY_PLUGIN
from test_registry import PLUGIN as LOSS_PLUGIN

pytestmark = pytest.mark.slow


def speakers(root, n_spk=6, n_utt=4, seconds=2.5, sr=16000):
    """A folder per speaker of harmonic tones, one pitch per speaker, with pauses for VAD."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    for s in range(n_spk):
        for u in range(n_utt):
            f0 = 110 + 30 * s
            x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 5))
            x = 0.2 * x * (np.sin(2 * np.pi * 1.5 * t) > -0.3) + 0.003 * rng.standard_normal(t.size)
            p = root / f"s{s}" / f"u{u}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, x.astype(np.float32), sr)
    return root


def test_toy_loss_and_toy_corpus_from_outside_run_the_whole_recipe(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "toy_corpus.py").write_text(
        TOY_PLUGIN.replace(
            "[(f\"{a}-u0\", f\"{a}-u1\", True), (f\"{a}-u0\", f\"{b}-u0\", False)]",
            "[(f\"{a}-u0\", f\"{a}-u1\", True), "
            "(f\"{a}-u2\", f\"{a}-u3\", True), "
            "(f\"{a}-u0\", f\"{b}-u0\", False), "
            "(f\"{a}-u1\", f\"{b}-u2\", False)]",
        )
    )
    (plugins / "toy_loss.py").write_text(LOSS_PLUGIN)
    cfg = yaml.safe_load(tiny_config(tmp_path).read_text())
    cfg["pair_loss"] = {"name": "toy_gap", "scale": 2.0}  # the plugin's loss, beside the stock head
    cfg.pop("pair_weights", None)
    cfg["sampler"].update(speakers_per_batch=2, utts_per_speaker=2)
    config = tmp_path / "toy_system.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = tool_env(PYSPK_PLUGINS=f"{plugins / 'toy_corpus.py'},{plugins / 'toy_loss.py'}")
    p = subprocess.run(
        [
            "./run.sh",
            "--corpus",
            "toy",
            "--toy-root",
            str(speakers(tmp_path / "audio")),
            "--config",
            str(config),
            "--nj",
            "2",
            "--augment",
            "false",
            "--data",
            str(tmp_path / "data"),
            "--exp",
            str(tmp_path / "exp"),
            "--fbank-dir",
            str(tmp_path / "fbank"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    trained = yaml.safe_load((tmp_path / "exp" / "toy_system" / "config.yaml").read_text())
    assert trained["pair_loss"] == {"name": "toy_gap", "scale": 2.0}
    res = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert set(res["systems"]["toy_system"]["metrics"]["trials"]) == {"cosine", "asnorm", "plda"}
