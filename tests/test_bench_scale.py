"""The scaling table (bench/bench_scale.py, issue 30 item 4) and run.sh --synth-num-train-spk,
the flag it scales SynthCeleb with."""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import bench_scale  # noqa: E402

from pyspk.corpora import Context, get_corpus  # noqa: E402


def run_sh(tmp_path, *args, timeout=120):
    return subprocess.run(
        [
            "./run.sh",
            "--data",
            str(tmp_path / "data"),
            "--exp",
            str(tmp_path / "exp"),
            "--fbank-dir",
            str(tmp_path / "fbank"),
            *map(str, args),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--synth-num-train-spk", "ten"], "--synth-num-train-spk takes a positive whole number, got 'ten'"),
        (["--synth-num-train-spk", "0"], "--synth-num-train-spk takes a positive whole number, got '0'"),
        (
            ["--corpus", "folder", "--synth-num-train-spk", "10"],
            "--synth-num-train-spk is for --corpus synth, not folder",
        ),
    ],
)
def test_synth_num_train_spk_is_checked_before_any_stage(tmp_path, args, message):
    r = run_sh(tmp_path, *args)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "data").exists()


def test_synthceleb_passes_the_speaker_count_to_make_synth():
    corpus = get_corpus("synth")
    ctx = Context(
        "synth", "d", corpus.train_set, corpus.test_set, synth_size="tiny", options={"synth-num-train-spk": "12"}
    )
    (cmd,) = corpus.commands(ctx)
    assert cmd[0] == "synth/make_synth.py" and cmd[-2:] == ["--num-train-spk", "12"]
    ctx.options["synth-num-train-spk"] = ""
    assert "--num-train-spk" not in corpus.commands(ctx)[0]


@pytest.mark.slow
def test_stage0_makes_that_many_speakers_and_its_stamp_records_the_count(tmp_path):
    """A changed count redoes stage 0; no flag gives the stamp params of before the flag."""
    r = run_sh(tmp_path, "--synth-size", "tiny", "--synth-num-train-spk", 10, "--stage", 0, "--stop-stage", 0)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "data/synth_train/spk2utt").read_text().splitlines()) == 10
    stamp = json.loads((tmp_path / "data/.done.stage0_synth").read_text().splitlines()[-1])
    assert stamp["params"]["synth_num_train_spk"] == "10"
    for count, redo in (("10", False), ("12", True), ("", True)):
        extra = ["--synth-num-train-spk", count] if count else []
        r = run_sh(tmp_path, "--synth-size", "tiny", *extra, "--stage", 0, "--stop-stage", 0, "--dry-run", "true")
        assert r.returncode == 0, r.stderr
        assert ("param synth_num_train_spk was '10'" in r.stdout + r.stderr) == redo, r.stdout + r.stderr


def test_fit_is_least_squares_and_one_scale_goes_through_the_origin():
    a, b = bench_scale.fit([1, 2, 4], [3, 5, 9])
    assert a == pytest.approx(1) and b == pytest.approx(2)
    assert bench_scale.fit([2], [10]) == (0.0, 5.0)
    assert bench_scale.fit([2], [10], origin=False) == (10.0, 0.0)  # memory: a constant
    assert bench_scale.fit([], []) is None


def fake_scale(k):
    hours, utts, spk = 10.0 * k, 8000 * k, 200 * k
    stages = {
        str(n): {
            "wall_s": 5.0 + 60 * hours * (n in (1, 2, 4)),
            "peak_rss_mib": 300.0 + n,
            "disk_mib": 100.0 * hours * (n in (1, 2)),
        }
        for n in range(1, 8)
    }
    stages["3"].update(steps=240, median_frames_per_s=40_000.0)
    stages["5"]["wall_s"] = 2.0 + utts / 1000
    stages["6"]["trials"] = 24_000
    return {
        "k": k,
        "spk": spk,
        "size": "default",
        "train": {"hours": hours, "utts": utts, "speakers": spk},
        "stage0": {"wall_s": 6.0 * hours, "peak_rss_mib": 200.0, "disk_mib": 50.0 * hours},
        "paths": {
            "offline": {
                "complete": True,
                "stages": stages,
                "probe": {"wall_s": 10.0, "trials": 1_000_000, "cohort": spk},
            }
        },
    }


def test_table_fits_extrapolates_and_counts_loader_cores():
    train = {
        "ecapa512": {
            "frames_per_s": 20_000.0,
            "s_per_step": 1.28,
            "mflop_per_frame": 28.0,
            "fwd_mflop_per_frame": 9.5,
            "peak_rss_mib": 6000.0,
            "batch": 128,
            "mode": "compiled",
        },
        "ecapa1024": {"error": "out of memory"},
        "resnet34": {
            "frames_per_s": 5_000.0,
            "s_per_step": 5.1,
            "mflop_per_frame": 135.0,
            "fwd_mflop_per_frame": 45.0,
            "peak_rss_mib": 9000.0,
            "batch": 128,
            "mode": "compiled",
        },
        "head": {"ms": 12.0, "gflop": 2.65, "classes": 17_982, "state_mib": 40.0},
        "loader": {"frames_per_cpu_s": 50_000.0, "frames_per_wall_s": 45_000.0},
    }
    args = Namespace(
        paths=["offline"],
        gpu_check=None,
        gpu_peak_tflops=1000.0,
        gpu_mfu=0.28,
        step_batch=128,
        epochs=100,
        gpus=8,
        nj=2,
    )
    scales = [fake_scale(1), fake_scale(4)]
    f = bench_scale.fits(scales, "offline")
    assert f[1, "wall_s"] == pytest.approx((5.0, 60.0)) and f[5, "wall_s"] == pytest.approx((2.0, 1.0))
    assert f[0, "disk_mib"] == pytest.approx((0.0, 50.0))
    table = bench_scale.build_table(scales, train, args)
    lines = table.lines
    gpu_fps = 1000e12 * 0.28 / 28e6  # 10M frames/s
    cores = next(ln for ln in lines if ln.startswith("| loader cores per GPU"))
    assert f"| {gpu_fps / 50_000:,.0f} |" in cores
    vox2 = next(ln for ln in lines if ln.startswith("| VoxCeleb2") and "| wall |" in ln)
    cells = [c.strip() for c in vox2.split("|")]
    assert cells[5] == bench_scale.dur(5.0 + 60 * (2442 + 351.6))  # stage 1 over training + test audio
    assert cells[6] == bench_scale.dur(5.0 + 60 * 2442)  # stage 2 over the training audio
    assert bench_scale.dur(1_092_009 * 200 / 20_000) in cells[7]  # an epoch of ECAPA C=512 on this CPU
    assert cells[9] == bench_scale.dur(2.0 + 1_092.009)  # back-end per 1k x-vectors
    assert cells[10] == bench_scale.dur(1_168_323 / 100_000)  # the probe's trials/s
    assert any("| failed |" in ln and "out of memory" in ln for ln in lines)
    gpu_hours = next(ln for ln in table.needs if ln.startswith("| GPU-hours: 100 epochs"))
    assert f"| {100 * 1_092_009 * 200 / gpu_fps / 3600:,.1f} |" in gpu_hours


@pytest.mark.slow
def test_quick_run_measures_both_paths_and_writes_the_page(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "bench/bench_scale.py", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    rows = dict(ln.split("\t", 1) for ln in p.stdout.splitlines() if "\t" in ln)
    for figure in (
        "scale_offline_x1_s2_disk_mib",
        "scale_online_x1_s3_wall_s",
        "scale_voxceleb2_epoch_gpu_s",
        "scale_loader_cores_per_gpu",
        "scale_offline_score_trials_per_s",
    ):
        assert figure in rows, figure
    assert float(rows["scale_online_x1_s1_disk_mib"].split("\t")[0]) == 0  # online: no stored features
    rec = json.loads((out / "x1.json").read_text())
    assert rec["paths"]["offline"]["complete"] and rec["paths"]["online"]["complete"]
    assert rec["train"]["speakers"] == 8 and not (out / "x1").exists()  # trees deleted once measured
    page = (out / "scale.md").read_text()
    assert page.startswith("# Scaling table\n\nCommit ") and "| VoxCeleb2: 2,442 h" in page
    # a second run reuses every measurement
    again = subprocess.run(
        [sys.executable, "bench/bench_scale.py", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and ": stage " not in again.stderr, again.stderr


def test_gpu_check_rows_replace_the_flop_estimate(tmp_path):
    """bench/gpu_check.sh's table: the faster of the float16 and bfloat16 steps per encoder (float32
    rows and other shapes are not the recipe's), and its loader row per worker."""
    md = tmp_path / "gpu_check.md"
    md.write_text(
        "| check | setting | value | unit |\n|---|---|---|---|\n"
        "| train step | ECAPA C=512, float32, 128 x 200 | 900,000 | frames/s |\n"
        "| train step | ECAPA C=512, float16, 128 x 200 | 2,000,000 | frames/s |\n"
        "| train step | ECAPA C=512, bfloat16, 128 x 200 | 1,800,000 | frames/s |\n"
        "| train step | ECAPA C=512, bfloat16, 128 x 200 | 12.8 | ms/step |\n"
        "| train step | ECAPA C=1024, bfloat16, 128 x 200 | 700,000 | frames/s |\n"
        "| online loader | 8 workers, all augmentations, 128 x 200 | 400,000 | frames/s |\n"
    )
    train = {"ecapa512": {"mflop_per_frame": 28.0}, "resnet34": {"mflop_per_frame": 135.0}}
    args = Namespace(gpu_check=str(md), gpu_peak_tflops=1000.0, gpu_mfu=0.3)
    gpu = bench_scale.gpu_rates(args, train)
    assert gpu["ecapa512"]["frames_per_s"] == 2_000_000 and "float16" in gpu["ecapa512"]["source"]
    assert gpu["ecapa1024"]["frames_per_s"] == 700_000
    assert gpu["resnet34"]["source"].startswith("estimate")  # not in the check: still the estimate
    assert gpu["loader_host"]["frames_per_s"] == 50_000
    assert bench_scale.loader_cores(gpu, 40_000) == 50
