"""The objective's components by name: registries, their settings blocks, the old layout read as
the new one, ``pyspk migrate-config``, and a pair loss from outside the package (PYSPK_PLUGINS)
that trains with the stock trainer."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import pytest
import torch
import yaml
from toydata import make_toy_train_dir, toy_config

from pyspk.balance import BALANCERS
from pyspk.bin import main as pyspk_main
from pyspk.losses import HEADS, PAIR_LOSSES, PAIR_WEIGHTS
from pyspk.models import ENCODERS
from pyspk.registry import RegistryError
from pyspk.train.config import ConfigError, config_from_dict, config_to_dict, load_config, validate_config
from pyspk.train.objective import Objective, build_head
from pyspk.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ["softmax", "aam", "supcon", "am_supcon", "am_supcon_caa", "aam_am_supcon_caa_fixed", "proposed"]


def _rest(cfg) -> dict:
    """A resolved config without its objective's blocks."""
    return {k: v for k, v in config_to_dict(cfg).items() if k not in ("head", "pair_loss", "pair_weights", "balance")}


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---------------------------------------------------------------- names and keys
def test_the_built_in_components_are_registered_once():
    for reg, names in (
        (HEADS, {"aam", "am", "softmax"}),
        (PAIR_LOSSES, {"am_supcon", "supcon"}),
        (PAIR_WEIGHTS, {"caa"}),
        (BALANCERS, {"fixed", "mgda"}),
        (ENCODERS, {"ecapa_tdnn", "resnet34", "tdnn"}),
    ):
        assert names <= set(reg.names()), reg.kind  # (a plugin of another test may add its own)
    with pytest.raises(RegistryError, match="registered twice"):
        HEADS.register("aam")(object)


@pytest.mark.parametrize(
    "block, name, near",
    [
        ("head", "aamm", "aam"),
        ("head", "arcface", None),
        ("pair_loss", "am_supcn", "am_supcon"),
        ("pair_weights", "caaa", "caa"),
        ("balance", "mgd", "mgda"),
        ("encoder", "tdn", "tdnn"),
    ],
)
def test_an_unknown_name_names_the_nearest_registered_one(tmp_path, block, name, near):
    data = {"head": {"name": "aam"}, "pair_loss": {"name": "supcon"}, "balance": {"name": "fixed"}}
    data[block] = {"name": name}
    p = write_yaml(tmp_path / "sys.yaml", data)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and f"key '{block}.name'" in msg and f"'{name}'" in msg
    assert (f"did you mean '{near}'?" in msg) if near else ("known: aam, am, softmax" in msg)


@pytest.mark.parametrize(
    "block, bad, near",
    [
        ({"head": {"name": "aam", "easy_margn": True}}, "head.easy_margn", "head.easy_margin"),
        (
            {"head": {"name": "aam", "margin_schedule": {"warmup_epoch": 1.0}}},
            "head.margin_schedule.warmup_epoch",
            "head.margin_schedule.warmup_epochs",
        ),
        ({"pair_loss": {"name": "am_supcon", "margin_of": "own"}}, "pair_loss.margin_of", "pair_loss.margin_on"),
        ({"pair_loss": {"name": "supcon", "tempreature": 0.1}}, "pair_loss.tempreature", "pair_loss.temperature"),
        (
            {"pair_loss": {"name": "supcon"}, "pair_weights": {"name": "caa", "prototype": "ema"}},
            "pair_weights.prototype",
            "pair_weights.prototypes",
        ),
        (
            {"head": {"name": "aam"}, "pair_loss": {"name": "supcon"}, "balance": {"name": "mgda", "normalise": "l2"}},
            "balance.normalise",
            "balance.normalize",
        ),
    ],
)
def test_a_misspelled_key_of_a_block_names_the_nearest_key_of_that_component(tmp_path, block, bad, near):
    p = write_yaml(tmp_path / "sys.yaml", block)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"unknown key '{bad}' (did you mean '{near}'?)" in str(e.value)


def test_a_key_of_another_component_is_an_error_not_ignored(tmp_path):
    """softmax has no margin and SupCon none either: a key that cannot act is refused."""
    for data, key in (
        ({"head": {"name": "softmax", "margin": 0.2}}, "head.margin"),
        ({"pair_loss": {"name": "supcon", "margin": 0.1}}, "pair_loss.margin"),
    ):
        with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
            load_config(write_yaml(tmp_path / "sys.yaml", data))


# ---------------------------------------------------------------- the old layout
def _old_blocks(system: str) -> dict:
    """conf/synth/<system>.yaml's objective as it was written before the objective's blocks."""
    head = {"cls": "aam", "margin": 0.2, "scale": 30.0, "margin_schedule": {"start": 0.0, "warmup_epochs": 1.0}}
    con = {
        "con": "am_supcon",
        "con_margin": 0.1,
        "con_margin_type": "additive",
        "con_margin_on": "positives",
        "con_margin_schedule": {"start": 0.0, "warmup_epochs": 2.0},
        "temperature": 0.07,
    }
    caa = {"caa": True, "caa_scale": 30.0, "caa_normalize": True, "caa_positives": True}
    return {
        "softmax": {"loss": {"cls": "softmax", "con": "none"}, "balance": {"kind": "none"}},
        "aam": {"loss": {**head, "con": "none"}, "balance": {"kind": "none"}},
        "supcon": {"loss": {"cls": "none", "con": "supcon", "temperature": 0.07}, "balance": {"kind": "none"}},
        "am_supcon": {"loss": {"cls": "none", **con}, "balance": {"kind": "none"}},
        "am_supcon_caa": {
            "loss": {"cls": "none", **con, **caa, "prototypes": "ema", "ema_momentum": 0.9},
            "balance": {"kind": "none"},
        },
        "aam_am_supcon_caa_fixed": {
            "loss": {**head, **con, **caa, "prototypes": "head"},
            "balance": {"kind": "fixed", "lambda": 1.0},
        },
        "proposed": {
            "loss": {**head, **con, **caa, "prototypes": "head"},
            "balance": {"kind": "mgda", "normalize": "l2", "combine": "raw", "head_grad": "full"},
        },
    }[system]


@pytest.mark.parametrize("system", SYSTEMS)
def test_an_old_layout_config_resolves_to_the_new_layouts_config(tmp_path, caplog, system):
    new = load_config(REPO / "conf" / "synth" / f"{system}.yaml")
    old = write_yaml(tmp_path / f"{system}.yaml", {**_rest(new), **_old_blocks(system)})
    with caplog.at_level(logging.WARNING, logger="pyspk.config"):
        got = load_config(old)
    assert got == new and config_to_dict(got) == config_to_dict(new)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(old) in warnings[0] and f"pyspk migrate-config {old}" in warnings[0]


def test_old_layout_keys_that_could_not_act_are_dropped_and_supcon_own_keeps_its_form():
    cfg = config_from_dict(
        {
            "loss": {
                "cls": "softmax",
                "margin": 0.3,
                "con": "supcon",
                "con_margin": 0.4,
                "con_margin_on": "own",
                "caa": False,
                "caa_scale": 5.0,
            },
            "balance": {"kind": "fixed", "lambda": 0.5, "normalize": "loss"},
        },
        warn=False,
    )
    d = config_to_dict(cfg)
    assert d["head"] == {"name": "softmax"} and d["pair_weights"] is None
    assert d["balance"] == {"name": "fixed", "lambda": 0.5}
    # SupCon with the paper's placement: AM-SupCon with no margin (the same loss, the same rounding)
    assert (d["pair_loss"]["name"], d["pair_loss"]["margin"], d["pair_loss"]["margin_on"]) == ("am_supcon", 0.0, "own")
    assert d["pair_loss"]["margin_schedule"] == {"start": 0.0, "warmup_epochs": 0.0}


def test_a_config_mixing_both_layouts_is_refused(tmp_path):
    p = write_yaml(tmp_path / "mixed.yaml", {"loss": {"cls": "aam"}, "pair_loss": {"name": "supcon"}})
    with pytest.raises(ConfigError, match="mixes the old layout.*pair_loss"):
        load_config(p)


def test_an_old_checkpoints_config_compares_equal_on_resume(tmp_path):
    """A run recorded in the old layout resumes under the same settings written the new way."""
    from pyspk.train.trainer import config_changes, recorded_config

    cfg = load_config(REPO / "conf" / "synth" / "proposed.yaml")
    new, old = config_to_dict(cfg), {**_rest(cfg), **_old_blocks("proposed")}
    assert config_changes(old, new) != []
    assert config_changes(recorded_config(old, "epoch_1.pt"), new) == []
    assert recorded_config({"loss": {"nonsense": 1}}, "x") == {"loss": {"nonsense": 1}}


OLD_TEXT = """\
# a system of the old layout
encoder: {name: tdnn, kwargs: {channels: 32, stats_channels: 64, embed_dim: 32}}
loss:
  cls: aam
  margin: 0.2               # AAM m
  margin_schedule:          # ramp it in
    start: 0.0
    warmup_epochs: 1.0
  con: am_supcon
  con_margin: 0.1           # the authors' later value
  caa: true
  prototypes: head
# the balance comes next
balance:
  kind: mgda
  normalize: l2             # unit gradients
sampler:
  speakers_per_batch: 4     # P
"""


def test_migrate_config_rewrites_an_old_file_in_place_keeping_its_comments(tmp_path, capsys):
    p = tmp_path / "old.yaml"
    p.write_text(OLD_TEXT)
    before = config_to_dict(config_from_dict(yaml.safe_load(OLD_TEXT), warn=False))
    assert pyspk_main.main(["migrate-config", str(p)]) == 0
    assert "rewritten in the new layout" in capsys.readouterr().out
    text = p.read_text()
    data = yaml.safe_load(text)
    assert "loss" not in data and "kind" not in data["balance"]
    assert list(data) == ["encoder", "head", "pair_loss", "pair_weights", "balance", "sampler"]
    assert config_to_dict(config_from_dict(data)) == before  # the same settings
    assert "  margin: 0.2               # AAM m\n" in text and "# ramp it in" in text
    assert "  margin: 0.1               # the authors' later value\n" in text
    assert "  normalize: l2             # unit gradients\n" in text
    assert text.startswith("# a system of the old layout\n") and "# the balance comes next\n" in text
    assert "  speakers_per_batch: 4     # P\n" in text
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left over
    assert pyspk_main.main(["migrate-config", str(p)]) == 0  # a second run leaves it alone
    assert "already in the new layout" in capsys.readouterr().out and p.read_text() == text
    assert pyspk_main.main(["migrate-config", str(tmp_path / "missing.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err


def test_migrate_config_rewrites_every_old_synth_system(tmp_path):
    for system in SYSTEMS:
        new = load_config(REPO / "conf" / "synth" / f"{system}.yaml")
        p = write_yaml(tmp_path / f"{system}.yaml", {**_rest(new), **_old_blocks(system)})
        assert pyspk_main.main(["migrate-config", str(p)]) == 0
        assert load_config(p) == new, system


# ---------------------------------------------------------------- the objective owns its schedules
def test_every_component_follows_its_own_schedule():
    cfg = config_from_dict(
        {
            "head": {"name": "aam", "margin": 0.2, "margin_schedule": {"warmup_epochs": 2.0}},
            "pair_loss": {"name": "am_supcon", "margin": 0.1, "margin_schedule": {"start": 0.05, "warmup_epochs": 1.0}},
            "pair_weights": {"name": "caa", "start_epoch": 1.5},
            "balance": {"name": "fixed"},
        }
    )
    validate_config(cfg)
    head = build_head(cfg.head, 6, 4)
    obj = Objective(cfg, 4, 6, head=head)
    z, labels = torch.randn(8, 6, requires_grad=True), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    seen = []
    for epochs in (0.0, 1.0, 2.0):
        obj.set_progress(epochs)
        _, parts = obj(z, head(z, labels)[0], labels)
        seen.append((head.margin, obj.pair_loss.margin, math.isnan(parts["caa_w_mean"])))
        assert (parts["margin"], parts["con_margin"]) == (head.margin, obj.pair_loss.margin)
    assert seen == [(0.0, 0.05, True), (0.1, 0.1, True), (0.2, 0.1, False)]


def test_the_statistics_come_from_the_forward_not_a_second_loss(monkeypatch):
    """One evaluation of the pair loss per step: the cosines and forces of train.csv are read
    from the graph that evaluation built."""
    import pyspk.losses.supcon as supcon

    calls = []
    real = supcon.supcon_from_cosines
    monkeypatch.setattr(supcon, "supcon_from_cosines", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = config_from_dict({"pair_loss": {"name": "am_supcon"}, "pair_weights": {"name": "caa"}})
    obj = Objective(cfg, 4, 6)
    z, labels = torch.randn(8, 6, requires_grad=True), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    total, parts = obj(z, None, labels)
    assert len(calls) == 1
    assert all(math.isfinite(parts[k]) for k in ("cos_pos", "cos_neg", "grad_pos", "grad_neg", "caa_w_mean"))
    total.backward()
    assert z.grad is not None and len(calls) == 1


# ---------------------------------------------------------------- a component from outside the package
PLUGIN = '''
"""A toy pair loss: the mean cosine of negative pairs minus that of positive pairs, scaled."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pyspk.losses import PAIR_LOSSES


@dataclass
class GapSettings:
    name: str = "toy_gap"
    scale: float = 1.0

    def errors(self, config):
        return [("scale", "must be > 0")] if self.scale <= 0 else []


@PAIR_LOSSES.register("toy_gap", GapSettings, replace=True)
class CosineGap:
    def __init__(self, settings):
        self.scale = settings.scale

    def __call__(self, z, labels, weights=None, stats=None):
        zn = F.normalize(z, dim=1)
        cos = zn @ zn.t()
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool)
        loss = self.scale * (cos[~same].mean() - cos[same & ~eye].mean())
        if stats is not None:
            stats.pairs(cos, loss)
        return loss
'''


def test_a_pair_loss_from_a_plugin_file_trains_with_the_stock_trainer(tmp_path, monkeypatch):
    plugin = tmp_path / "plugins" / "toy_gap_loss.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN)
    monkeypatch.setenv("PYSPK_PLUGINS", str(plugin))
    data = toy_config(
        "tdnn",
        pair_loss={"name": "toy_gap", "scale": 2.0},
        train={"epochs": 1, "steps_per_epoch": 3, "log_interval": 1},
    )
    data.pop("head")
    p = write_yaml(tmp_path / "gap.yaml", data)
    cfg = load_config(p)
    assert cfg.pair_loss.name == "toy_gap" and cfg.pair_loss.scale == 2.0
    assert "toy_gap" in PAIR_LOSSES.names()
    with pytest.raises(ConfigError, match=r"unknown key 'pair_loss\.scal' \(did you mean 'pair_loss\.scale'\?\)"):
        load_config(write_yaml(tmp_path / "typo.yaml", {**data, "pair_loss": {"name": "toy_gap", "scal": 2.0}}))
    with pytest.raises(ConfigError, match=r"key 'pair_loss\.scale': must be > 0"):
        load_config(write_yaml(tmp_path / "neg.yaml", {**data, "pair_loss": {"name": "toy_gap", "scale": -1.0}}))
    with pytest.raises(ConfigError, match=r"did you mean 'toy_gap'"):
        load_config(write_yaml(tmp_path / "name.yaml", {**data, "pair_loss": {"name": "toy_gpa"}}))
    toy = make_toy_train_dir(tmp_path / "train", num_speakers=4, utts_per_speaker=4, num_frames=60, feat_dim=20)
    final = train(cfg, toy, tmp_path / "exp", seed=0)
    assert final.is_file()
    rows = list(csv.DictReader(open(tmp_path / "exp" / "train.csv")))
    assert len(rows) == 3 and all(math.isfinite(float(r["loss_con"])) for r in rows)
    assert all(math.isnan(float(r["loss_cls"])) and math.isnan(float(r["con_margin"])) for r in rows)
    assert all(math.isfinite(float(r["grad_pos"])) for r in rows)  # the statistics hook it filled
    recorded = yaml.safe_load((tmp_path / "exp" / "config.yaml").read_text())
    assert recorded["pair_loss"] == {"name": "toy_gap", "scale": 2.0}
