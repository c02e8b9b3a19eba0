"""The tiny SynthCeleb recipe, run once per test session and shared.

``tiny_recipe`` runs a bare ``./run.sh`` (stages 0-7) on the tiny corpus with a
seconds-long training config, under a test-only audit hook (tests/trace/) that records
which files every Python process of every stage opens, writes and lists. Tests that only
read the tree use it as it is (tests/test_recipe_e2e.py runs first, by file order);
tests/test_stage_inputs.py then edits inputs and reruns, so it must come after them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "tests" / "trace"


def tiny_config(tmp_path: Path) -> Path:
    """conf/synth/proposed.yaml shrunk to seconds: the same loss and balance blocks."""
    from pyspk.train.config import load_config

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


class Tree:
    """One tiny recipe tree: data/, exp/, fbank/ and the config under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.config = tiny_config(root)

    def args(self, *extra):
        return ["./run.sh", "--synth-size", "tiny", "--config", str(self.config), "--nj", "2",
                "--data", str(self.root / "data"), "--exp", str(self.root / "exp"),
                "--fbank-dir", str(self.root / "fbank"), *map(str, extra)]

    def run(self, *extra, env=None, timeout=900) -> subprocess.CompletedProcess:
        env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        return subprocess.run(self.args(*extra), cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def rel(self, p) -> str:
        return os.path.relpath(os.path.join(REPO, p), self.root)

    def would_redo(self) -> set:
        """The stamps (relative to root) that `./run.sh --dry-run true` says a rerun redoes."""
        r = self.run("--dry-run", "true")
        assert r.returncode == 0, r.stderr[-3000:]
        return {self.rel(m) for m in re.findall(r"would redo (\S+) \(", r.stderr)}


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory) -> Tree:
    t = Tree(tmp_path_factory.mktemp("tiny_recipe"))
    trace = t.root / "trace"
    env = dict(os.environ, PYSPK_TRACE_FILE=str(trace),
               PYTHONPATH=os.pathsep.join(filter(None, [str(TRACE), os.environ.get("PYTHONPATH")])))
    r = t.run(env=env)
    assert r.returncode == 0, f"run.sh failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    t.events = [ln.split("\t", 2) for ln in trace.read_text().splitlines()]
    return t
