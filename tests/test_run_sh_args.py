"""run.sh refuses bad stage numbers and a missing config at once (issue 12, item 6)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_sh(tmp_path, *args):
    return subprocess.run(
        [
            "./run.sh",
            "--data",
            str(tmp_path / "data"),
            "--exp",
            str(tmp_path / "exp"),
            "--fbank-dir",
            str(tmp_path / "fbank"),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stage", "9"], "--stage 9: there is no such stage (stages 0-7)"),
        (["--stage", "abc"], "--stage takes a stage number 0-7, got 'abc'"),
        (["--stop-stage", "-1"], "--stop-stage takes a stage number 0-7, got '-1'"),
        (["--stage", "5", "--stop-stage", "3"], "--stop-stage 3 is before --stage 5"),
        (["--force", "yes"], "--force takes true or false, got 'yes'"),
        (["--config", "conf/synth/nope.yaml"], "config conf/synth/nope.yaml (system nope) does not exist"),
        (["--augment-config", "conf/nope.yaml"], "--augment-config conf/nope.yaml does not exist"),
        (["--backend-set", "train"], "--backend-set takes clean or training, got 'train'"),
        (["--train-jobs", "two"], "--train-jobs takes auto or a number of systems, got 'two'"),
        (["--compress-feats", "yes"], "--compress-feats takes true or false, got 'yes'"),
        (["--augment-subset", "1e6"], "--augment-subset takes a whole number, got '1e6'"),
        (["--online", "true", "--augment-subset", "100"], "--online true stores none"),
        (["--online", "true", "--compress-feats", "true"], "--online true stores none"),
        (["--lmft", "yes"], "--lmft takes true or false, got 'yes'"),
        (["--lmft", "true", "--lmft-config", "conf/nope.yaml"], "--lmft-config conf/nope.yaml does not exist"),
    ],
)
def test_bad_arguments_fail_before_any_stage(tmp_path, args, message):
    r = run_sh(tmp_path, *args)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert "stage 0:" not in r.stdout and not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "corpus, config", [("synth", "conf/augment.yaml"), ("speechocean762", "conf/speechocean762/augment.yaml")]
)
def test_stage2_takes_the_corpus_augment_config(tmp_path, corpus, config):
    """conf/<corpus>/augment.yaml when there is one (speechocean762: clean + speed copies), else
    conf/augment.yaml; the stamp lists the config, so changing it redoes the stage."""
    r = run_sh(tmp_path, "--corpus", corpus, "--stage", "2", "--stop-stage", "2", "--dry-run", "true")
    assert r.returncode == 0, r.stderr
    assert f"stage 2: augmentation of {'so762' if corpus != 'synth' else 'synth'}_train ({config})" in r.stdout


@pytest.mark.parametrize(
    "backend_set, augment, fitted_on",
    [
        ("clean", "true", "so762_train"),
        ("training", "true", "so762_train_combined"),
        ("training", "false", "so762_train"),
    ],
)
def test_backend_set_picks_what_stages_4_and_5_fit_on(tmp_path, backend_set, augment, fitted_on):
    """--backend-set training fits the back-end on the set stage 3 trains on (with stage 2: the
    augmented dir, whose features stage 2 stamps); clean, the default, on the clean speakers."""
    r = run_sh(
        tmp_path,
        "--corpus",
        "speechocean762",
        "--stage",
        "4",
        "--stop-stage",
        "5",
        "--dry-run",
        "true",
        "--systems",
        "aam",
        "--backend-set",
        backend_set,
        "--augment",
        augment,
    )
    assert r.returncode == 0, r.stderr
    assert f"stage 4: x-vectors of {fitted_on} with aam" in r.stdout
    assert f"xvectors_{fitted_on} is redone by this run" in r.stderr + r.stdout
    others = {"so762_train", "so762_train_combined"} - {fitted_on}
    assert not any(f"x-vectors of {o} " in r.stdout for o in others)


FAKE_TRAIN = """#!/usr/bin/env bash
# a stand-in for $train_cmd LOG COMMAND...: records when it ran and on how many threads
log=$1; shift
exp=$(dirname "$(dirname "$log")")
mkdir -p "$(dirname "$log")"
echo "$@" > "$exp/args"
echo "start $(date +%s.%N) ${OMP_NUM_THREADS:-unset}" > "$exp/ran"
sleep 1.5
echo "end $(date +%s.%N)" >> "$exp/ran"
[ "$(basename "$exp")" = "${FAKE_FAIL:-}" ] && { echo "fake training failed" > "$log"; exit 3; }
echo ok > "$log"
"""


def _stage3(tmp_path, systems, *extra, fail=""):
    fake = tmp_path / "fake_train.sh"
    fake.write_text(FAKE_TRAIN)
    fake.chmod(0o755)
    (tmp_path / "data" / "synth_train_combined").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / "synth_train_combined" / "utt2spk").write_text("a s\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["FAKE_FAIL"] = fail
    return subprocess.run(
        [
            "./run.sh",
            "--data",
            str(tmp_path / "data"),
            "--exp",
            str(tmp_path / "exp"),
            "--fbank-dir",
            str(tmp_path / "fbank"),
            "--stage",
            "3",
            "--stop-stage",
            "3",
            "--systems",
            " ".join(systems),
            "--train-cmd",
            str(fake),
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _ran(tmp_path, s):
    words = (tmp_path / "exp" / s / "ran").read_text().split()
    return float(words[1]), float(words[4]), words[2]


SYSTEMS = ["aam", "supcon", "proposed"]  # conf/synth/<name>.yaml


def test_stage3_trains_systems_side_by_side(tmp_path):
    """--train-jobs 2: two systems train at once, each on half the cores (OMP_NUM_THREADS), the
    third waits for a free slot; every one is stamped; a rerun skips them all."""
    r = _stage3(tmp_path, SYSTEMS, "--train-jobs", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    (s1, e1, t1), (s2, e2, t2), (s3, e3, t3) = (_ran(tmp_path, s) for s in SYSTEMS)
    assert s2 < e1 and s1 < e2, "the first two did not overlap"
    assert s3 >= min(e1, e2) - 0.05, "the third started before a slot was free"
    assert t1 == t2 == t3 == str(max(1, len(os.sched_getaffinity(0)) // 2))  # what nproc counts
    assert all((tmp_path / "exp" / s / ".done.train").exists() for s in SYSTEMS)
    r = _stage3(tmp_path, SYSTEMS, "--train-jobs", "2")
    assert r.returncode == 0, r.stderr
    assert all(_ran(tmp_path, s)[0] in (s1, s2, s3) for s in SYSTEMS), "a stamped system was retrained"


def test_stage3_one_at_a_time_keeps_the_threads(tmp_path):
    """--train-jobs 1: in order, one after another, torch's own thread count (no OMP_NUM_THREADS)."""
    r = _stage3(tmp_path, SYSTEMS[:2], "--train-jobs", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    (s1, e1, t1), (s2, e2, t2) = (_ran(tmp_path, s) for s in SYSTEMS[:2])
    assert e1 <= s2 and t1 == t2 == "unset"


def test_a_failed_system_fails_stage3_and_stops_the_rest(tmp_path):
    """One failing training fails the stage (non-zero exit, no stamp for it, no later stage);
    a system still waiting for a slot is not started; the one that succeeded keeps its stamp."""
    r = _stage3(tmp_path, SYSTEMS, "--train-jobs", "2", fail="aam")
    assert r.returncode != 0
    assert "a stage-3 job failed" in r.stderr, r.stderr
    assert not (tmp_path / "exp" / "aam" / ".done.train").exists()
    assert not (tmp_path / "exp" / "proposed" / "ran").exists(), "the third system started after a failure"


def test_lmft_fine_tunes_each_trained_system_and_scores_both(tmp_path):
    """--lmft true: after the systems train, each is fine-tuned into <system>_lmft from its own
    exp dir with the corpus's lmft config (stamped; a rerun skips it), and stages 4-7 score both."""
    r = _stage3(tmp_path, ["aam", "proposed"], "--train-jobs", "1", "--lmft", "true")
    assert r.returncode == 0, r.stdout + r.stderr
    starts = {}
    for s in ("aam", "proposed"):
        starts[s] = _ran(tmp_path, s + "_lmft")[0]
        assert starts[s] >= _ran(tmp_path, "proposed")[1] - 0.05, "fine-tuning started before training ended"
        assert (tmp_path / "exp" / f"{s}_lmft" / ".done.train").exists()
        args = (tmp_path / "exp" / f"{s}_lmft" / "args").read_text()
        assert f"--config conf/synth/{s}.yaml" in args
        assert f"--lmft conf/synth/lmft.yaml --lmft-from {tmp_path}/exp/{s}" in args
        assert "--lmft" not in (tmp_path / "exp" / s / "args").read_text()
        assert f"large-margin fine-tuning of {s} (conf/synth/lmft.yaml) -> {tmp_path}/exp/{s}_lmft" in r.stdout
    r = _stage3(tmp_path, ["aam", "proposed"], "--train-jobs", "1", "--lmft", "true")
    assert r.returncode == 0, r.stderr
    assert {s: _ran(tmp_path, s + "_lmft")[0] for s in starts} == starts, "a stamped fine-tuning was redone"
    dry = run_sh(
        tmp_path, "--stage", "4", "--stop-stage", "4", "--dry-run", "true", "--systems", "aam", "--lmft", "true"
    )
    assert dry.returncode == 0, dry.stderr
    assert "x-vectors of synth_test with aam ->" in dry.stdout
    assert "x-vectors of synth_test with aam_lmft ->" in dry.stdout
