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
    (["--backend-set", "train"], "--backend-set takes clean or training, got 'train'"),
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


@pytest.mark.parametrize("backend_set, augment, fitted_on", [("clean", "true", "so762_train"),
                                                             ("training", "true", "so762_train_combined"),
                                                             ("training", "false", "so762_train")])
def test_backend_set_picks_what_stages_4_and_5_fit_on(tmp_path, backend_set, augment, fitted_on):
    """--backend-set training fits the back-end on the set stage 3 trains on (with stage 2: the
    augmented dir, whose features stage 2 stamps); clean, the default, on the clean speakers."""
    r = run_sh(tmp_path, "--corpus", "speechocean762", "--stage", "4", "--stop-stage", "5", "--dry-run", "true",
               "--systems", "aam", "--backend-set", backend_set, "--augment", augment)
    assert r.returncode == 0, r.stderr
    assert f"stage 4: x-vectors of {fitted_on} with aam" in r.stdout
    assert f"xvectors_{fitted_on} is redone by this run" in r.stderr + r.stdout
    others = {"so762_train", "so762_train_combined"} - {fitted_on}
    assert not any(f"x-vectors of {o} " in r.stdout for o in others)
