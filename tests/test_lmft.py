"""Large-margin fine-tuning (pyspk/train/lmft.py): the config it derives, and a fine-tuning run
that starts from the trained system's last checkpoint with its head."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml
from test_trainer import system_config, toy  # noqa: F401  (the toy fixture)

from pyspk.bin import train as train_cli
from pyspk.train.checkpoint import load_checkpoint
from pyspk.train.config import ConfigError, config_to_dict, load_config
from pyspk.train.lmft import LmftSettings, lmft_config, read_lmft
from pyspk.train.trainer import train

REPO = Path(__file__).resolve().parents[1]


def test_lmft_config_raises_the_margins_and_keeps_the_rest():
    data = config_to_dict(load_config(REPO / "conf" / "synth" / "proposed.yaml"))
    s = LmftSettings(epochs=2, crop_frames=300, lr=4e-4, final_lr=1e-4, head_margin=0.5, pair_margin=0.15)
    out = lmft_config(data, s, "exp/proposed")
    assert out["features"]["crop_frames"] == 300
    assert (out["optim"]["lr"], out["optim"]["final_lr"], out["optim"]["warmup_steps"]) == (4e-4, 1e-4, 0)
    assert out["train"]["epochs"] == 2 and out["train"]["init_from"] == "exp/proposed"
    assert out["train"]["steps_per_epoch"] == data["train"]["steps_per_epoch"]
    assert out["head"]["margin"] == 0.5
    assert out["head"]["margin_schedule"] == {"start": data["head"]["margin"], "warmup_epochs": 0.0}
    assert out["pair_loss"]["margin"] == 0.15
    # a margin kept as trained starts at its full value, not at the system's warm-up start of 0
    kept = lmft_config(data, LmftSettings(head_margin=None, pair_margin=None), "exp/proposed")
    for block in ("head", "pair_loss"):
        assert data[block]["margin_schedule"]["warmup_epochs"] > 0  # the system ramps from 0
        assert kept[block]["margin"] == data[block]["margin"]
        assert kept[block]["margin_schedule"]["warmup_epochs"] == 0.0
    assert out["encoder"] == data["encoder"] and out["balance"] == data["balance"]
    assert data["features"]["crop_frames"] != 300  # the input is left as it was
    # a softmax head and a system without a head: no margin to raise
    soft = config_to_dict(load_config(REPO / "conf" / "synth" / "softmax.yaml"))
    assert "margin" not in lmft_config(soft, s, "x")["head"]
    sup = config_to_dict(load_config(REPO / "conf" / "synth" / "supcon.yaml"))
    assert lmft_config(sup, s, "x")["head"] is None


def test_read_lmft_names_the_file_and_key(tmp_path):
    f = tmp_path / "lmft.yaml"
    f.write_text("epochs: 2\ncrop_frame: 300\n")
    with pytest.raises(ConfigError, match=r"lmft.yaml: unknown key 'crop_frame'"):
        read_lmft(f)
    f.write_text("epochs: two\n")
    with pytest.raises(ConfigError, match=r"key 'epochs': expected an integer, got 'two'"):
        read_lmft(f)
    f.write_text("lr: fast\n")
    with pytest.raises(ConfigError, match=r"key 'lr': expected a number, got 'fast'"):
        read_lmft(f)
    f.write_text("head_margin: 2.0\n")
    with pytest.raises(ConfigError, match=r"key 'head_margin'"):
        read_lmft(f)
    for shipped in ("conf/lmft.yaml", "conf/synth/lmft.yaml", "conf/speechocean762/lmft.yaml"):
        read_lmft(REPO / shipped)


def test_fine_tuning_starts_from_the_trained_head(toy, tmp_path, caplog):  # noqa: F811
    cfg = system_config("aam", epochs=2, steps=3)
    train(cfg, toy, tmp_path / "aam", seed=1)
    conf = tmp_path / "aam.yaml"
    conf.write_text(yaml.safe_dump(config_to_dict(cfg)))
    lm = tmp_path / "lmft.yaml"
    lm.write_text("epochs: 1\ncrop_frames: 60\nlr: 1.0e-4\nfinal_lr: 5.0e-5\nhead_margin: 0.4\n")
    argv = ["--config", str(conf), "--seed", "1", "--train-dir", str(toy), "--exp-dir", str(tmp_path / "lm")]
    with caplog.at_level(logging.INFO, logger="pyspk.train"):
        assert train_cli.main(argv + ["--lmft", str(lm), "--lmft-from", str(tmp_path / "aam")]) == 0
    assert "encoder and head loaded" in caplog.text
    got = yaml.safe_load((tmp_path / "lm" / "config.yaml").read_text())
    assert got["head"]["margin"] == 0.4 and got["features"]["crop_frames"] == 60
    assert got["train"]["epochs"] == 1 and got["train"]["init_from"] == str(tmp_path / "aam")
    before = load_checkpoint(tmp_path / "aam" / "checkpoints" / "epoch_2.pt")
    after = load_checkpoint(tmp_path / "lm" / "checkpoints" / "epoch_1.pt")
    # fine-tuned, not re-initialised: close to the trained head, not equal to it
    w0, w1 = before["head"]["weight"], after["head"]["weight"]
    assert not torch.equal(w0, w1)
    assert (w1 - w0).norm() < 0.1 * w0.norm()
    assert (tmp_path / "lm" / "final.pt").is_file()
    # --lmft without --lmft-from is refused
    with pytest.raises(SystemExit):
        train_cli.main(argv + ["--lmft", str(lm)])
    # a system dir with no checkpoint: one line naming it
    (tmp_path / "empty").mkdir()
    assert (
        train_cli.main(argv[:-1] + [str(tmp_path / "lm2"), "--lmft", str(lm), "--lmft-from", str(tmp_path / "empty")])
        == 1
    )
