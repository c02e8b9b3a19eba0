"""The back-end registry (pyspk/backend/base.py) and its config blocks (conf/backend.yaml).

Names and keys are checked with the nearest valid one named; the block form and the flat
form of before the blocks are the same config; a back-end registered from a file named by
PYSPK_PLUGINS is fitted by `pyspk backend` and scored by `pyspk score` like a built-in one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tool_env
from test_backend import make_xvector_dirs

from pyspk.backend import BACKENDS, Backend, BackendConfig, load_config
from pyspk.backend.config import from_dict, to_dict
from pyspk.backend.model import fit_backend_dir
from pyspk.backend.scoring import score_data_dir
from pyspk.bin import score as score_bin
from pyspk.bin import verify as verify_bin
from pyspk.data.kaldi_dir import read_trials
from pyspk.data.xvectors import read_vectors

REPO = Path(__file__).resolve().parents[1]

DOT_PLUGIN = '''
"""A back-end from outside the package: the scaled dot product of the raw embeddings."""
from dataclasses import dataclass

import numpy as np

from pyspk.backend import BACKENDS, ScoringBackend


@dataclass
class DotSettings:
    scale: float = 1.0


@BACKENDS.register("dot", DotSettings)
class DotBackend(ScoringBackend):
    def save(self, backend_dir):
        return {"dot_scale": self.settings.scale}

    def score_trials(self, enroll_vecs, test_vecs, enroll_idx, test_idx, n_enroll=1):
        e, t = np.asarray(enroll_vecs)[enroll_idx], np.asarray(test_vecs)[test_idx]
        return self.settings.scale * np.einsum("ij,ij->i", e, t)
'''


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_builtin_backends_and_the_shipped_config():
    assert {"cosine", "asnorm", "plda"} <= set(BACKENDS.names())
    assert BACKENDS.get("plda").settings.__name__ == "PldaSettings" and BACKENDS.get("cosine").settings is None
    assert to_dict(load_config(REPO / "conf/backend.yaml")) == to_dict(BackendConfig())


def test_unknown_backend_names_the_nearest(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown back-end 'pdla' \(did you mean 'plda'\?\)"):
        BackendConfig(backends=("cosine", "pdla"))
    p = write(tmp_path / "b.yaml", "backends: [cosin, plda]\n")
    with pytest.raises(ValueError, match=rf"^{p}: unknown back-end 'cosin' \(did you mean 'cosine'\?\)$"):
        load_config(p)
    rc = score_bin.main(
        ["--backend-dir", "b", "--xvector-dir", "x", "--data-dir", "d", "--out-dir", "s", "--backends", "cosine,pdla"]
    )
    assert rc == 2 and "unknown back-end 'pdla' (did you mean 'plda'?)" in capsys.readouterr().err
    for name, says in (
        ("pdla", "unknown back-end 'pdla' (did you mean 'plda'?)"),
        ("asnorm", "AS-norm needs cohort statistics of both sides"),
    ):
        with pytest.raises(SystemExit) as e:
            verify_bin.main(["--model", "m.pt", "--backend", name, "a.wav", "b.wav"])
        assert e.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, says",
    [
        ("plda:\n  lda_dimm: 3\n", "plda: unknown key 'lda_dimm' (did you mean 'lda_dim'?)"),
        ("asnorm:\n  topn: 3\n", "asnorm: unknown key 'topn' (did you mean 'top_n'?)"),
        ("pdla:\n  lda_dim: 3\n", "unknown key 'pdla' (did you mean 'plda'?)"),
        ("cosine:\n  scale: 3\n", "cosine: unknown key 'scale'"),
        ("plda:\n  init: random\n", "plda: init must be 'moments' or 'identity', got 'random'"),
        ("asnorm:\n  top_n: 0\n", "asnorm: top_n must be >= 1, got 0"),
        ("plda: 3\n", "plda: expected a mapping of its settings, got 3"),
        ("plda_iters: 3\nplda:\n  iters: 4\n", "'plda_iters' and 'plda: iters' are the same setting"),
        ("backends: plda\n", "backends must be a non-empty list of back-end names"),
        ("asnorm:\n  top_n: .nan\n", "asnorm: key 'top_n': expected a finite number"),
    ],
)
def test_config_blocks_are_checked(tmp_path, text, says):
    p = write(tmp_path / "b.yaml", text)
    with pytest.raises(ValueError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: ") and says in str(e.value), str(e.value)


def test_flat_and_block_spellings_are_the_same_config():
    flat = from_dict({"lda_dim": 8, "length_norm": False, "plda_iters": 3, "plda_init": "identity", "asnorm_top_n": 5})
    block = from_dict(
        {"plda": {"lda_dim": 8, "length_norm": False, "iters": 3, "init": "identity"}, "asnorm": {"top_n": 5}}
    )
    assert (
        to_dict(flat)
        == to_dict(block)
        == to_dict(BackendConfig(lda_dim=8, length_norm=False, plda_iters=3, plda_init="identity", asnorm_top_n=5))
    )
    assert to_dict(from_dict(to_dict(block))) == to_dict(block)
    with pytest.raises(TypeError, match="lda_dimm"):
        BackendConfig(lda_dimm=3)


def test_a_dir_fitted_before_the_blocks_loads_and_scores_the_same(tmp_path):
    """backend.yaml of older back-end dirs holds the flat config: it loads, same scores bit for bit."""
    dirs = make_xvector_dirs(tmp_path, n_spk=8, n_utt=4)
    dtr, xtr, _ = dirs["train"]
    be = fit_backend_dir(xtr, dtr, tmp_path / "be", BackendConfig(lda_dim=5, asnorm_top_n=4))
    info = yaml.safe_load((tmp_path / "be/backend.yaml").read_text())
    info["config"] = {
        "lda_dim": 5,
        "length_norm": True,
        "plda_iters": 10,
        "plda_init": "moments",
        "asnorm_top_n": 4,
        "calibration": True,
        "calibration_trials": None,
        "p_targets": [0.01, 0.001],
    }
    (tmp_path / "be/backend.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    old = Backend.load(tmp_path / "be")
    X = np.stack(list(read_vectors(xtr / "xvector.scp").values()))
    idx = np.arange(len(X))
    for name in ("cosine", "asnorm", "plda"):
        assert np.array_equal(be.score_trials(name, X, X[::-1], idx, idx), old.score_trials(name, X, X[::-1], idx, idx))


def test_a_subset_of_backends_is_fitted_and_scored(tmp_path):
    dirs = make_xvector_dirs(tmp_path, n_spk=6, n_utt=3)
    dtr, xtr, _ = dirs["train"]
    dte, xte, _ = dirs["test"]
    be = fit_backend_dir(xtr, dtr, tmp_path / "be", BackendConfig(backends=("cosine",)))
    assert sorted(p.name for p in (tmp_path / "be").iterdir()) == ["backend.yaml", "mean.npz"]
    be = Backend.load(tmp_path / "be")
    assert be.names == ["cosine"]
    metrics = score_data_dir(be, xte, dte, tmp_path / "scores")
    assert set(metrics["trials"]) == {"cosine"} and not (tmp_path / "scores/trials.plda").exists()
    with pytest.raises(ValueError, match=r"back-end 'plda' was not fitted \(fitted: cosine\)"):
        score_data_dir(be, xte, dte, tmp_path / "s2", ["cosine", "plda"])
    with pytest.raises(KeyError, match="did you mean 'plda'"):
        be.score_trials("pdla", np.zeros((1, 16)), np.zeros((1, 16)), [0], [0])


def test_single_pair_scores_match_the_trial_scores(tmp_path):
    dirs = make_xvector_dirs(tmp_path, n_spk=6, n_utt=3)
    dtr, xtr, _ = dirs["train"]
    be = fit_backend_dir(xtr, dtr, tmp_path / "be", BackendConfig(lda_dim=4, asnorm_top_n=3))
    X = np.stack(list(read_vectors(xtr / "xvector.scp").values()))
    for name in ("cosine", "plda"):
        assert (
            be.score_pair(name, X[0], X[1], n_enroll=2)
            == be.score_trials(name, X[:1], X[1:2], [0], [0], np.array([2]))[0]
        )
    with pytest.raises(ValueError, match="AS-norm needs cohort statistics"):
        be.score_pair("asnorm", X[0], X[1])


def test_plugin_backend_is_fitted_and_scored(tmp_path):
    """A back-end in a file named by PYSPK_PLUGINS: its block is checked, pyspk backend fits it,
    pyspk score writes its scores beside the built-in ones."""
    dirs = make_xvector_dirs(tmp_path, n_spk=6, n_utt=3)
    dtr, xtr, _ = dirs["train"]
    dte, xte, _ = dirs["test"]
    env = tool_env(PYSPK_PLUGINS=str(write(tmp_path / "dot_backend.py", DOT_PLUGIN)))
    conf = write(tmp_path / "backend.yaml", "backends: [cosine, dot]\ndot:\n  scale: 2.0\n")

    def pyspk(*args):
        return subprocess.run(
            [sys.executable, "-m", "pyspk.bin.main", *map(str, args)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    r = pyspk("backend", "--config", conf, xtr, dtr, tmp_path / "be")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((tmp_path / "be/backend.yaml").read_text())["dot_scale"] == 2.0
    r = pyspk(
        "score",
        "--backend-dir",
        tmp_path / "be",
        "--xvector-dir",
        xte,
        "--data-dir",
        dte,
        "--out-dir",
        tmp_path / "scores",
    )
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "scores/metrics.json").read_text())
    assert list(metrics["trials"]) == ["cosine", "dot"]
    vecs = read_vectors(xte / "xvector.scp")
    lines = (tmp_path / "scores/trials.dot").read_text().splitlines()
    assert len(lines) == len(read_trials(dte / "trials"))
    for line in lines[:20]:
        e, t, s = line.split()
        assert float(s) == pytest.approx(2.0 * float(np.dot(vecs[e], vecs[t])), rel=1e-6, abs=1e-6)
    write(conf, "backends: [cosine, dot]\ndot:\n  scal: 2.0\n")
    r = pyspk("backend", "--config", conf, xtr, dtr, tmp_path / "be2")
    assert r.returncode == 1 and f"{conf}: dot: unknown key 'scal' (did you mean 'scale'?)" in r.stderr, r.stderr
    assert "dot" not in BACKENDS  # registered in the subprocesses only
