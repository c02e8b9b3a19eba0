"""./run.sh --online true on the tiny SynthCeleb: no stored features, training from the audio (and
from shards with --shards true), extraction from the audio, every stage stamped and reused."""

from __future__ import annotations

import json

import pytest
from conftest import Tree

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("shards", [False, True])
def test_online_recipe_runs_end_to_end_and_stores_no_features(tmp_path, shards):
    t = Tree(tmp_path)
    extra = ["--online", "true"] + (["--shards", "true", "--shard-size", "10"] if shards else [])
    p = t.run(*extra)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "stage 1: online: no stored features" in p.stdout
    res = json.loads((t.root / "exp" / "results.json").read_text())
    assert res["systems"]["proposed"]["metrics"]["trials_en"]["cosine"]["eer"] >= 0
    assert not list((t.root / "fbank").glob("synth_t*/*.ark"))  # no feature arks at all
    assert not (t.root / "data" / "synth_train" / "feats.scp").exists()
    assert (t.root / "data" / "synth_train_shards" / "shards.json").is_file() == shards
    again = t.run(*extra, "--dry-run", "true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "would redo" not in again.stderr and "would be redone" not in again.stderr, again.stderr[-2000:]


def test_online_training_ignores_the_feature_stamps_an_offline_run_left(tmp_path):
    """A tree first run offline (stage 1) whose features were then deleted to save disk trains
    online: stage 3 reads the clean set's tables, not the stale feature stamp in its directory."""
    import shutil

    t = Tree(tmp_path)
    p = t.run("--stop-stage", "1")
    assert p.returncode == 0, p.stderr[-3000:]
    shutil.rmtree(t.root / "fbank")
    p = t.run("--online", "true", "--stage", "3", "--stop-stage", "3")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert (t.root / "exp" / "proposed" / "final.pt").is_file()
