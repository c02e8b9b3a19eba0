"""The trainer on the online data path: a tiny system trained from wav.scp and from shards, and a
run killed mid-epoch that resumes to the very same weights as one that was never interrupted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_online import make_dir

from pyspk.train.checkpoint import load_checkpoint
from pyspk.train.config import config_from_dict, config_to_dict, load_config, validate_config
from pyspk.train.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[1]


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("online_train")
    data = make_dir(root, speakers=4, per_spk=3)
    aug = root / "augment.yaml"
    aug.write_text("num_rooms: 3\nspeed: false\n")
    shards = root / "shards"
    p = subprocess.run(
        [sys.executable, "-m", "pyspk.bin.shards", str(data), str(shards), "--shard-size", "3", "--seed", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    return root, data, aug, shards


def online_config(root, aug, source, epochs=2, steps=3):
    """conf/synth/proposed.yaml shrunk, reading audio on the fly with every augmentation kind."""
    d = config_to_dict(load_config(REPO / "conf" / "synth" / "proposed.yaml"))
    d["encoder"] = {"name": "tdnn", "kwargs": {"channels": 16, "stats_channels": 32, "embed_dim": 16}}
    d["features"].update(crop_frames=50, short_utts="pad")
    d["sampler"].update(speakers_per_batch=2, utts_per_speaker=2, views=2 if source == "shards" else 1)
    if source == "shards":
        d["sampler"].update(kind="shuffle", batch_size=4)
    d["optim"].update(warmup_steps=1)
    d["train"].update(
        epochs=epochs, steps_per_epoch=steps, average_last=1, device="cpu", log_interval=1, compile=False, cpu_amp=False
    )
    d["data"] = {
        "source": source,
        "augment_config": str(aug),
        "rir_dir": str(root / "rirs"),
        "fbank_config": str(REPO / "conf" / "fbank.yaml"),
    }
    cfg = config_from_dict(d, "online")
    validate_config(cfg, "online")
    return cfg


@pytest.mark.parametrize("source", ["audio", "shards"])
def test_online_training_resumes_to_identical_weights(audio, tmp_path, monkeypatch, source):
    root, data, aug, shards = audio
    train_dir = data if source == "audio" else shards
    cfg = online_config(root, aug, source)
    train(cfg, train_dir, tmp_path / "straight", seed=5)
    assert (tmp_path / "straight" / "final.pt").is_file()

    real_step = Trainer._train_step

    def crash_in_epoch_2(self, model, feats, labels, epoch, i):
        if self.step == 4:
            raise Interrupt()
        return real_step(self, model, feats, labels, epoch, i)

    monkeypatch.setattr(Trainer, "_train_step", crash_in_epoch_2)
    with pytest.raises(Interrupt):
        train(online_config(root, aug, source), train_dir, tmp_path / "resumed", seed=5)
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    train(online_config(root, aug, source), train_dir, tmp_path / "resumed", seed=5)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "epoch_2.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "epoch_2.pt")
    ta, tb = (
        tensors(a["model"], "model") | tensors(a["head"], "head"),
        tensors(b["model"], "model") | tensors(b["head"], "head"),
    )
    assert ta.keys() == tb.keys() and ta
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs after resume"
    fa = torch.load(tmp_path / "straight" / "final.pt", weights_only=True)["state_dict"]
    fb = torch.load(tmp_path / "resumed" / "final.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    rows_a = (tmp_path / "straight" / "train.csv").read_text().splitlines()
    rows_b = (tmp_path / "resumed" / "train.csv").read_text().splitlines()
    assert len(rows_a) == len(rows_b) == 7
    assert [r.split(",")[:5] for r in rows_a] == [r.split(",")[:5] for r in rows_b]


def tensors(obj, prefix):
    """Every tensor of a nested checkpoint part, by its dotted path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out |= tensors(v, f"{prefix}.{k}")
    return out


def test_online_training_refuses_the_offline_combined_set(audio, tmp_path):
    root, data, aug, _ = audio
    combined = tmp_path / "combined"
    combined.mkdir()
    for name in ("wav.scp", "utt2spk"):
        (combined / name).write_text((data / name).read_text())
    (combined / "utt2orig").write_text(
        "".join(f"{u.split()[0]} {u.split()[0]}\n" for u in (data / "utt2spk").read_text().splitlines())
    )
    with pytest.raises(Exception, match="utt2orig.*clean set"):
        train(online_config(root, aug, "audio"), combined, tmp_path / "exp", seed=1)
