"""run.sh refuses bad stage numbers and a missing config at once (issue 12, item 6)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_sh(tmp_path, *args):
    return subprocess.run(["./run.sh", "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"),
                           "--fbank-dir", str(tmp_path / "fbank"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["--stage", "9"], "--stage 9: there is no such stage (stages 0-7)"),
    (["--stage", "abc"], "--stage takes a stage number 0-7, got 'abc'"),
    (["--stop-stage", "-1"], "--stop-stage takes a stage number 0-7, got '-1'"),
    (["--stage", "5", "--stop-stage", "3"], "--stop-stage 3 is before --stage 5"),
    (["--force", "yes"], "--force takes true or false, got 'yes'"),
    (["--config", "conf/synth/nope.yaml"], "config conf/synth/nope.yaml (system nope) does not exist"),
    (["--augment-config", "conf/nope.yaml"], "--augment-config conf/nope.yaml does not exist"),
])
def test_bad_arguments_fail_before_any_stage(tmp_path, args, message):
    r = run_sh(tmp_path, *args)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert "stage 0:" not in r.stdout and not (tmp_path / "data").exists()


@pytest.mark.parametrize("corpus, config", [("synth", "conf/augment.yaml"),
                                            ("speechocean762", "conf/speechocean762/augment.yaml")])
def test_stage2_takes_the_corpus_augment_config(tmp_path, corpus, config):
    """conf/<corpus>/augment.yaml when there is one (speechocean762: clean + speed copies), else
    conf/augment.yaml; the stamp lists the config, so changing it redoes the stage."""
    r = run_sh(tmp_path, "--corpus", corpus, "--stage", "2", "--stop-stage", "2", "--dry-run", "true")
    assert r.returncode == 0, r.stderr
    assert f"stage 2: augmentation of {'so762' if corpus != 'synth' else 'synth'}_train ({config})" in r.stdout
