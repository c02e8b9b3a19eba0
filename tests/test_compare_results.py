"""studies/compare_results.py: the per-figure EER differences of two results.json files."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _results(path, eers):
    systems = {}
    for (system, trials, backend), eer in eers.items():
        systems.setdefault(system, {"metrics": {}})["metrics"].setdefault(trials, {})[backend] = {"eer": eer}
    path.write_text(json.dumps({"command": "./run.sh", "systems": systems}))
    return path


def _run(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "studies/compare_results.py"), *map(str, args)], capture_output=True, text=True
    )


def test_summary_is_the_mean_and_range_of_after_minus_before(tmp_path):
    before = _results(
        tmp_path / "a.json",
        {("aam", "t1", "cosine"): 0.10, ("aam", "t1", "plda"): 0.05, ("softmax", "t1", "cosine"): 0.12},
    )
    after = _results(
        tmp_path / "b.json",
        {("aam", "t1", "cosine"): 0.11, ("aam", "t1", "plda"): 0.04, ("proposed", "t1", "cosine"): 0.09},
    )
    r = _run(before, after)
    assert r.returncode == 0, r.stderr
    # +1.00 and -1.00 points: mean 0, mean absolute 1
    assert "2 figures: after - before mean +0.00 points, mean absolute 1.00, range -1.00 to +1.00" in r.stdout
    assert "only in before: softmax t1 cosine" in r.stdout
    assert "only in after: proposed t1 cosine" in r.stdout


def test_a_file_that_is_not_results_json_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = _run(bad, bad)
    assert r.returncode != 0 and "bad.json" in r.stderr
