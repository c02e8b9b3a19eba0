"""Training config: schema, nearest-key errors, type errors, semantic and data checks."""

from pathlib import Path

import pytest
import yaml
from toydata import make_toy_train_dir, toy_config

from pyspk.train.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    validate_config,
)
from pyspk.train.data import load_train_data

REPO = Path(__file__).resolve().parents[1]


def write_yaml(tmp_path, data, name="sys.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    "data, bad, near",
    [
        ({"pair_loss": {"name": "supcon", "temprature": 0.1}}, "pair_loss.temprature", "pair_loss.temperature"),
        ({"head": {"name": "aam", "margn": 0.1}}, "head.margn", "head.margin"),
        ({"pair_weights": {"name": "caa", "scael": 5.0}}, "pair_weights.scael", "pair_weights.scale"),
        ({"optim": {"warmup_step": 10}}, "optim.warmup_step", "optim.warmup_steps"),
        ({"sampler": {"speaker_per_batch": 4}}, "sampler.speaker_per_batch", "sampler.speakers_per_batch"),
        (
            {"features": {"spec_augment": {"time_mask": 1}}},
            "features.spec_augment.time_mask",
            "features.spec_augment.time_masks",
        ),
        ({"trian": {"epochs": 1}}, "trian", "train"),
        ({"balance": {"name": "fixed", "lamda": 0.5}}, "balance.lamda", "balance.lambda"),
        ({"loss": {"temprature": 0.1}}, "loss.temprature", "loss.temperature"),  # the old layout too
        ({"heda": {"name": "aam"}}, "heda", "head"),
    ],
)
def test_misspelled_key_names_key_file_and_nearest(tmp_path, data, bad, near):
    p = write_yaml(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and f"'{bad}'" in msg and f"did you mean '{near}'" in msg


@pytest.mark.parametrize(
    "data, key",
    [
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"train": {"epochs": 2.5}}, "train.epochs"),
        ({"train": {"amp": "yes"}}, "train.amp"),
        ({"train": {"cpu_amp": "yes"}}, "train.cpu_amp"),
        ({"train": {"cpu_amp": 1}}, "train.cpu_amp"),
        ({"pair_weights": {"name": "caa", "normalize": 1}}, "pair_weights.normalize"),
        ({"sampler": {"kind": "pkk"}}, "sampler.kind"),
        ({"head": {"name": "arcface"}}, "head.name"),
        ({"head": {"name": "aam", "margin": "wide"}}, "head.margin"),
        ({"pair_loss": {"name": "am_supcon", "margin_type": "angullar"}}, "pair_loss.margin_type"),
        ({"head": "aam"}, "head"),
        ({"head": {"margin": 0.2}}, "head.name"),
        ({"encoder": {"kwargs": [1, 2]}}, "encoder.kwargs"),
        ({"features": 3}, "features"),
    ],
)
def test_wrong_types_and_choices(tmp_path, data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write_yaml(tmp_path, data))


AAM, SUPCON, CAA = {"head": {"name": "aam"}}, {"pair_loss": {"name": "supcon"}}, {"name": "caa"}


@pytest.mark.parametrize(
    "data, key",
    [
        ({"encoder": {"name": "ecapa"}, **AAM}, "encoder.name"),
        ({}, "head"),  # no objective: nothing to train
        ({**SUPCON, "sampler": {"utts_per_speaker": 1}}, "sampler.utts_per_speaker"),
        ({**SUPCON, "sampler": {"kind": "shuffle"}}, "sampler.views"),
        ({**AAM, **SUPCON}, "balance"),
        ({**AAM, "balance": {"name": "mgda"}}, "balance.name"),
        ({**AAM, "pair_weights": CAA}, "pair_weights"),
        ({**SUPCON, "pair_weights": {**CAA, "prototypes": "head"}}, "pair_weights.prototypes"),
        ({"pair_loss": {"name": "supcon", "temperature": 0.0}}, "pair_loss.temperature"),
        ({"pair_loss": {"name": "am_supcon", "margin_threshold": 4.0}}, "pair_loss.margin_threshold"),
        ({**SUPCON, "pair_weights": {**CAA, "floor": 2.0}}, "pair_weights.floor"),
        ({**AAM, **SUPCON, "balance": {"name": "fixed", "lambda": -1.0}}, "balance.lambda"),
        ({**AAM, "train": {"epochs": 2, "average_last": 3}}, "train.average_last"),
        ({**AAM, "sampler": {"views": 3}}, "sampler.views"),
        ({"loss": {"cls": "aam", "con": "supcon"}}, "balance"),  # an old-layout config, checked as migrated
    ],
)
def test_semantic_errors_name_the_key(tmp_path, data, key):
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        load_config(write_yaml(tmp_path, data))


def test_cpu_amp_takes_true_false_or_auto(tmp_path):
    for value in (True, False, "auto"):
        cfg = load_config(write_yaml(tmp_path, {"head": {"name": "aam"}, "train": {"cpu_amp": value}}))
        assert cfg.train.cpu_amp == value and config_to_dict(cfg)["train"]["cpu_amp"] == value
    with pytest.raises(ConfigError, match="expected true or false, got 'Auto' or auto"):
        load_config(write_yaml(tmp_path, {"head": {"name": "aam"}, "train": {"cpu_amp": "Auto"}}))


def test_unknown_encoder_suggests_nearest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'ecapa_tdnn'"):
        load_config(write_yaml(tmp_path, {"encoder": {"name": "ecapa_tdn"}, "head": {"name": "aam"}}))


def test_defaults_roundtrip_and_lambda_alias(tmp_path):
    cfg = config_from_dict(
        {
            "head": {"name": "aam"},
            "pair_loss": {"name": "am_supcon"},
            "pair_weights": {"name": "caa"},
            "balance": {"name": "fixed", "lambda": 0.3},
        }
    )
    validate_config(cfg)
    assert cfg.balance.lambda_ == 0.3 and cfg.optim.lr == Config().optim.lr
    d = config_to_dict(cfg)
    assert d["balance"]["lambda"] == 0.3 and "lambda_" not in d["balance"]
    p = tmp_path / "resolved.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg  # the resolved config is itself a valid config
    assert isinstance(config_from_dict({"optim": {"lr": 1}}).optim.lr, float)


def test_every_synth_system_config_is_valid():
    conf = REPO / "conf" / "synth"
    lines = (conf / "systems.list").read_text().splitlines()
    systems = [s.strip() for s in lines if s.strip() and not s.startswith("#")]
    assert len(systems) == 7
    for s in systems:
        load_config(conf / f"{s}.yaml")


def test_data_checks_before_training(tmp_path):
    d = make_toy_train_dir(
        tmp_path / "d", num_speakers=3, utts_per_speaker=4, num_frames=60, feat_dim=8, frame_jitter=0
    )
    cfg = config_from_dict(toy_config("tdnn", sampler={"speakers_per_batch": 5}))
    with pytest.raises(ConfigError, match=r"sampler\.speakers_per_batch.* only 3 speakers"):
        load_train_data(d, cfg, seed=0, source="sys.yaml")
    short = config_from_dict(toy_config("tdnn", sampler={"speakers_per_batch": 2}, features={"crop_frames": 80}))
    with pytest.raises(ValueError, match=r"12 utterance\(s\) shorter than the 80-frame crop: spk000-u000 \(60"):
        load_train_data(d, short, seed=0)
    padded = config_from_dict(
        toy_config("tdnn", sampler={"speakers_per_batch": 2}, features={"crop_frames": 80, "short_utts": "pad"})
    )
    data = load_train_data(d, padded, seed=0)
    feats, labels = data.dataset[(0, 0, (0, 5))]
    assert feats.shape == (2, 80, 8) and labels.tolist() == [0, 1]


def test_missing_tables_are_named(tmp_path):
    d = make_toy_train_dir(tmp_path / "d", num_speakers=2, utts_per_speaker=2, feat_dim=4)
    (d / "utt2num_frames").unlink()
    with pytest.raises(Exception, match="utt2num_frames"):
        load_train_data(d, config_from_dict(toy_config("tdnn", sampler={"speakers_per_batch": 2})), seed=0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the config is empty"),
        ("# only a comment\n", "the config is empty"),
        ("- a\n- b\n", "expected a mapping of sections"),
    ],
)
def test_empty_or_non_mapping_yaml_is_rejected(tmp_path, text, message):
    """Issue 12: an empty training yaml used to train the built-in defaults silently."""
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=f"{p}: {message}"):
        load_config(p)


# ---------------------------------------------------------------- base: configs built on others
def test_a_config_builds_on_its_base_and_bases_chain(tmp_path):
    (tmp_path / "corpus").mkdir()
    write_yaml(
        tmp_path,
        {"encoder": {"name": "tdnn"}, "optim": {"lr": 0.004, "final_lr": 0.0002}, "train": {"epochs": 4}},
        "corpus/base.yaml",
    )
    aam = write_yaml(
        tmp_path,
        {"base": "base.yaml", "head": {"name": "aam", "margin": 0.3}, "train": {"epochs": 6}},
        "corpus/aam.yaml",
    )
    cfg = load_config(aam)
    assert (cfg.encoder.name, cfg.optim.lr, cfg.train.epochs, cfg.head.margin) == ("tdnn", 0.004, 6, 0.3)
    # a chain, the base path relative to the file naming it
    more = write_yaml(tmp_path, {"base": "corpus/aam.yaml", "head": {"name": "aam", "scale": 16.0}}, "more.yaml")
    cfg = load_config(more)
    assert (cfg.head.margin, cfg.head.scale, cfg.train.epochs, cfg.optim.final_lr) == (0.3, 16.0, 6, 0.0002)
    from pyspk.train.config import config_files

    assert [p.name for p in config_files(more)] == ["more.yaml", "aam.yaml", "base.yaml"]
    # another component in the overlay replaces the block instead of merging settings into it
    sm = write_yaml(tmp_path, {"base": "corpus/aam.yaml", "head": {"name": "softmax"}}, "sm.yaml")
    assert config_to_dict(load_config(sm))["head"] == {"name": "softmax"}
    # and null takes a block away
    nohead = write_yaml(
        tmp_path, {"base": "corpus/aam.yaml", "head": None, "pair_loss": {"name": "supcon"}}, "nohead.yaml"
    )
    assert load_config(nohead).head is None


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.yaml": {"base": "a.yaml"}}, r"a\.yaml: key 'base': a\.yaml is itself: a config cannot be its own base"),
        (
            {"a.yaml": {"base": "b.yaml"}, "b.yaml": {"base": "a.yaml"}},
            r"b\.yaml: key 'base': a\.yaml is .*a\.yaml, which bases on it: a config cannot be its own base",
        ),
        ({"a.yaml": {"base": "missing.yaml"}}, r"a\.yaml: key 'base': .*missing\.yaml not found"),
        ({"a.yaml": {"base": 3}}, r"a\.yaml: key 'base': expected the path of a config file"),
    ],
)
def test_base_errors_name_the_file(tmp_path, files, message):
    for name, data in files.items():
        write_yaml(tmp_path, data, name)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "a.yaml")


def test_every_shipped_config_resolves_through_its_base():
    from pyspk.train.config import config_files

    for conf in sorted((REPO / "conf").glob("*/*.yaml")):
        if conf.name in ("augment.yaml", "base.yaml", "lmft.yaml"):  # not systems
            continue
        files = config_files(conf)
        assert files[-1].name == "base.yaml", conf
        load_config(conf)
