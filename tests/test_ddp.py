"""DDP: two CPU processes (gloo) under torchrun train the proposed system end to end."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from toydata import make_toy_train_dir, toy_config

from pyspk.models import load_encoder
from pyspk.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def run_torchrun(nproc, cfg_path, train_dir, exp_dir, timeout=120):
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
        PATH=f"{Path(sys.executable).parent}:" + os.environ.get("PATH", ""),
    )
    cmd = [
        str(REPO / "utils" / "torchrun.sh"),
        "--nproc",
        str(nproc),
        "pyspk.bin.train",
        "--config",
        str(cfg_path),
        "--seed",
        "4",
        "--train-dir",
        str(train_dir),
        "--exp-dir",
        str(exp_dir),
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
@pytest.mark.parametrize("balance", [{"name": "mgda"}, {"name": "nash_mtl", "level": "parameters"}])
def test_two_process_torchrun_trains_and_writes_final(tmp_path, balance):
    toy = make_toy_train_dir(
        tmp_path / "train", num_speakers=6, utts_per_speaker=4, num_frames=80, feat_dim=12, copies=1
    )
    data = toy_config(
        "tdnn",
        pair_loss={"name": "am_supcon"},
        pair_weights={"name": "caa"},
        balance=balance,
        sampler={"speakers_per_batch": 3, "utts_per_speaker": 2},
        features={"crop_frames": 40},
        train={"epochs": 2, "steps_per_epoch": 2, "log_interval": 1},
    )
    cfg = tmp_path / "proposed.yaml"
    cfg.write_text(yaml.safe_dump(data))
    exp = tmp_path / "exp"
    r = run_torchrun(2, cfg, toy, exp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    model, ckpt = load_encoder(exp / "final.pt")
    assert ckpt["extra"]["speakers"] == [f"spk{i:03d}" for i in range(6)]
    state = load_checkpoint(exp / "checkpoints" / "epoch_2.pt")
    # 2 epochs x 2 steps per rank; every rank stepped the same replicated model
    assert state["step"] == 4 and state["epoch"] == 2
    rows = (exp / "train.csv").read_text().splitlines()
    assert len(rows) == 1 + 4
    assert "[rank 0]" in r.stderr and "[rank 1]" not in r.stderr.replace("WARNING", "")
    assert (exp / "config.yaml").is_file()


def test_single_process_launcher_runs_module_directly(tmp_path):
    toy = make_toy_train_dir(tmp_path / "train", num_speakers=4, utts_per_speaker=3, num_frames=60, feat_dim=8)
    data = toy_config(
        "tdnn",
        sampler={"speakers_per_batch": 2, "utts_per_speaker": 2},
        features={"crop_frames": 30},
        train={"epochs": 1, "steps_per_epoch": 1},
    )
    cfg = tmp_path / "aam.yaml"
    cfg.write_text(yaml.safe_dump(data))
    r = run_torchrun(1, cfg, toy, tmp_path / "exp")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "exp" / "final.pt").is_file()
    r = subprocess.run(
        [str(REPO / "utils" / "torchrun.sh"), "--nnodes", "2", "pyspk.bin.train"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "--rdzv-endpoint" in r.stderr
