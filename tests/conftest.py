"""Shared fixtures: the tiny SynthCeleb recipe run once per session, optional wheels that CI
must have (``need``), and one tiny set of trained systems per encoder (``tiny_systems``).

The tiny recipe:

``tiny_recipe`` runs a bare ``./run.sh`` (stages 0-7) on the tiny corpus with a
seconds-long training config, under a test-only audit hook (tests/trace/) that records
which files every Python process of every stage opens, writes and lists. Tests that only
read the tree use it as it is (tests/test_recipe_e2e.py runs first, by file order);
tests/test_stage_inputs.py then edits inputs and reruns, so it must come after them.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "tests" / "trace"


def tiny_config(tmp_path: Path) -> Path:
    """conf/synth/proposed.yaml (resolved: its base merged, every default filled in) shrunk to
    seconds: the same objective blocks."""
    from pyspk.train.config import config_to_dict, load_config

    cfg = config_to_dict(load_config(REPO / "conf/synth/proposed.yaml"))
    cfg["encoder"] = {"name": "tdnn", "kwargs": {"channels": 32, "stats_channels": 64, "embed_dim": 32}}
    cfg["features"]["crop_frames"] = 100
    cfg["sampler"].update(speakers_per_batch=4, utts_per_speaker=2)
    cfg["optim"]["warmup_steps"] = 1
    cfg["train"].update(epochs=3, steps_per_epoch=5, average_last=2, log_interval=1, compile=False)
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
        return [
            "./run.sh",
            "--synth-size",
            "tiny",
            "--config",
            str(self.config),
            "--nj",
            "2",
            "--data",
            str(self.root / "data"),
            "--exp",
            str(self.root / "exp"),
            "--fbank-dir",
            str(self.root / "fbank"),
            *map(str, extra),
        ]

    def run(self, *extra, env=None, timeout=900) -> subprocess.CompletedProcess:
        env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        return subprocess.run(self.args(*extra), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)

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
    env = dict(
        os.environ,
        PYSPK_TRACE_FILE=str(trace),
        PYTHONPATH=os.pathsep.join(filter(None, [str(TRACE), os.environ.get("PYTHONPATH")])),
    )
    r = t.run(env=env)
    assert r.returncode == 0, f"run.sh failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    t.events = [ln.split("\t", 2) for ln in trace.read_text().splitlines()]
    return t


def tool_env(**extra) -> dict:
    """The environment path.sh gives the tools: this venv's python and utils/ on PATH, the
    checkout importable, the C locale; ``extra`` on top."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(REPO / "utils"), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["LC_ALL"] = "C"
    env.update(extra)
    return env


def noise_data_dir(path: Path, audio: Path, n: int = 2) -> None:
    """A data dir of ``n`` short noise wavs (under ``audio``) of two speakers, spk0 and spk1."""
    import numpy as np
    import soundfile as sf

    path.mkdir(parents=True)
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    wav, u2s = [], []
    for i in range(n):
        f = audio / f"u{i}.wav"
        sf.write(f, (0.1 * rng.standard_normal(4000)).astype(np.float32), 16000)
        wav.append(f"spk{i % 2}-u{i} {f}\n")
        u2s.append(f"spk{i % 2}-u{i} spk{i % 2}\n")
    (path / "wav.scp").write_text("".join(sorted(wav)))
    (path / "utt2spk").write_text("".join(sorted(u2s)))
    (path / "spk2utt").write_text("".join(f"spk{s} spk{s}-u{i}\n" for s in (0, 1) for i in range(n) if i % 2 == s))


def need(module: str):
    """Import ``module`` or skip saying why; fail instead under PYSPK_REQUIRE_WHEELS=1 (.ci/run)."""
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or a wheel whose native library does not load here
        reason = f"{module} is not importable on this platform ({type(e).__name__}: {e})"
        if os.environ.get("PYSPK_REQUIRE_WHEELS") == "1":
            pytest.fail(f"PYSPK_REQUIRE_WHEELS=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_systems(tmp_path_factory) -> Path:
    """bench/tiny_systems.py --size test: tiny SynthCeleb, fbank, one short-trained system per
    encoder, x-vectors and back-end of the first (tdnn). Built once per test session."""
    out = tmp_path_factory.mktemp("tiny_systems")
    p = subprocess.run(
        [sys.executable, "bench/tiny_systems.py", "--out", str(out), "--size", "test", "--steps", "4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, f"tiny_systems failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return out


# Session fixtures that run a recipe or train systems: a test using one is in the slow tier.
SLOW_FIXTURES = frozenset({"tiny_recipe", "tiny_systems"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
