"""Training config: schema, nearest-key errors, type errors, semantic and data checks."""

from pathlib import Path

import pytest
import yaml

from pyspk.train.config import (Config, ConfigError, config_from_dict, config_to_dict, dump_config,
                                load_config, validate_config)
from pyspk.train.data import load_train_data
from pyspk.train.toydata import make_toy_train_dir, toy_config

REPO = Path(__file__).resolve().parents[1]


def write_yaml(tmp_path, data, name="sys.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("data, bad, near", [
    ({"loss": {"temprature": 0.1}}, "loss.temprature", "loss.temperature"),
    ({"optim": {"warmup_step": 10}}, "optim.warmup_step", "optim.warmup_steps"),
    ({"sampler": {"speaker_per_batch": 4}}, "sampler.speaker_per_batch", "sampler.speakers_per_batch"),
    ({"features": {"spec_augment": {"time_mask": 1}}}, "features.spec_augment.time_mask",
     "features.spec_augment.time_masks"),
    ({"trian": {"epochs": 1}}, "trian", "train"),
    ({"balance": {"lamda": 0.5}}, "balance.lamda", "balance.lambda"),
])
def test_misspelled_key_names_key_file_and_nearest(tmp_path, data, bad, near):
    p = write_yaml(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and f"'{bad}'" in msg and f"did you mean '{near}'" in msg


@pytest.mark.parametrize("data, key", [
    ({"optim": {"lr": "fast"}}, "optim.lr"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"amp": "yes"}}, "train.amp"),
    ({"train": {"cpu_amp": "yes"}}, "train.cpu_amp"),
    ({"train": {"cpu_amp": 1}}, "train.cpu_amp"),
    ({"loss": {"caa": 1}}, "loss.caa"),
    ({"sampler": {"kind": "pkk"}}, "sampler.kind"),
    ({"loss": {"cls": "arcface"}}, "loss.cls"),
    ({"encoder": {"kwargs": [1, 2]}}, "encoder.kwargs"),
    ({"features": 3}, "features"),
])
def test_wrong_types_and_choices(tmp_path, data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write_yaml(tmp_path, data))


@pytest.mark.parametrize("data, key", [
    ({"encoder": {"name": "ecapa"}}, "encoder.name"),
    ({"loss": {"cls": "none", "con": "none"}}, "loss.cls"),
    ({"loss": {"cls": "none", "con": "supcon"}, "sampler": {"utts_per_speaker": 1}}, "sampler.utts_per_speaker"),
    ({"loss": {"cls": "none", "con": "supcon"}, "sampler": {"kind": "shuffle"}}, "sampler.views"),
    ({"loss": {"cls": "aam", "con": "supcon"}}, "balance.kind"),
    ({"loss": {"cls": "aam"}, "balance": {"kind": "mgda"}}, "balance.kind"),
    ({"loss": {"cls": "aam", "caa": True}}, "loss.caa"),
    ({"loss": {"cls": "none", "con": "supcon", "caa": True, "prototypes": "head"}}, "loss.prototypes"),
    ({"train": {"epochs": 2, "average_last": 3}}, "train.average_last"),
    ({"sampler": {"views": 3}}, "sampler.views"),
])
def test_semantic_errors_name_the_key(tmp_path, data, key):
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        load_config(write_yaml(tmp_path, data))


def test_cpu_amp_takes_true_false_or_auto(tmp_path):
    for value in (True, False, "auto"):
        cfg = load_config(write_yaml(tmp_path, {"train": {"cpu_amp": value}}))
        assert cfg.train.cpu_amp == value and config_to_dict(cfg)["train"]["cpu_amp"] == value
    with pytest.raises(ConfigError, match="expected true or false, got 'Auto' or auto"):
        load_config(write_yaml(tmp_path, {"train": {"cpu_amp": "Auto"}}))


def test_unknown_encoder_suggests_nearest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'ecapa_tdnn'"):
        load_config(write_yaml(tmp_path, {"encoder": {"name": "ecapa_tdn"}}))


def test_defaults_roundtrip_and_lambda_alias(tmp_path):
    cfg = config_from_dict({"loss": {"con": "am_supcon", "caa": True}, "balance": {"kind": "fixed", "lambda": 0.3}})
    validate_config(cfg)
    assert cfg.balance.lambda_ == 0.3 and cfg.optim.lr == Config().optim.lr
    d = config_to_dict(cfg)
    assert d["balance"]["lambda"] == 0.3 and "lambda_" not in d["balance"]
    p = tmp_path / "resolved.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg   # the resolved config is itself a valid config
    assert isinstance(config_from_dict({"optim": {"lr": 1}}).optim.lr, float)


def test_every_synth_system_config_is_valid():
    conf = REPO / "conf" / "synth"
    lines = (conf / "systems.list").read_text().splitlines()
    systems = [s.strip() for s in lines if s.strip() and not s.startswith("#")]
    assert len(systems) == 7
    for s in systems:
        load_config(conf / f"{s}.yaml")


def test_data_checks_before_training(tmp_path):
    d = make_toy_train_dir(tmp_path / "d", num_speakers=3, utts_per_speaker=4, num_frames=60,
                           feat_dim=8, frame_jitter=0)
    cfg = config_from_dict(toy_config("tdnn", sampler={"speakers_per_batch": 5}))
    with pytest.raises(ConfigError, match=r"sampler\.speakers_per_batch.* only 3 speakers"):
        load_train_data(d, cfg, seed=0, source="sys.yaml")
    short = config_from_dict(toy_config("tdnn", sampler={"speakers_per_batch": 2},
                                        features={"crop_frames": 80}))
    with pytest.raises(ValueError, match=r"12 utterance\(s\) shorter than the 80-frame crop: spk000-u000 \(60"):
        load_train_data(d, short, seed=0)
    padded = config_from_dict(toy_config("tdnn", sampler={"speakers_per_batch": 2},
                                         features={"crop_frames": 80, "short_utts": "pad"}))
    data = load_train_data(d, padded, seed=0)
    feats, labels = data.dataset[(0, 0, (0, 5))]
    assert feats.shape == (2, 80, 8) and labels.tolist() == [0, 1]


def test_missing_tables_are_named(tmp_path):
    d = make_toy_train_dir(tmp_path / "d", num_speakers=2, utts_per_speaker=2, feat_dim=4)
    (d / "utt2num_frames").unlink()
    with pytest.raises(Exception, match="utt2num_frames"):
        load_train_data(d, config_from_dict(toy_config("tdnn", sampler={"speakers_per_batch": 2})), seed=0)


@pytest.mark.parametrize("text, message", [("", "the config is empty"), ("# only a comment\n", "the config is empty"),
                                           ("- a\n- b\n", "expected a mapping of sections")])
def test_empty_or_non_mapping_yaml_is_rejected(tmp_path, text, message):
    """Issue 12: an empty training yaml used to train the built-in defaults silently."""
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=f"{p}: {message}"):
        load_config(p)
