"""Issue 28, "Trust no input", findings 8 and 9: each bad input is refused or reported in one
line that names what to change (a key, a flag, a path), never a traceback or a silent default."""

import dataclasses
import errno
import logging
import math
import shutil
import typing
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from toydata import make_toy_train_dir, toy_config

from pyspk import io as pio
from pyspk.bin import augment as augment_cli
from pyspk.bin import extract as extract_cli
from pyspk.bin import fbank as fbank_cli
from pyspk.bin import train as train_cli
from pyspk.bin import verify as verify_cli
from pyspk.data.sampler import PKSampler, repetition_factor, repetition_warning
from pyspk.train.config import Config, ConfigError, config_from_dict, load_config, validate_config
from pyspk.train.data import load_train_data
from pyspk.train.trainer import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_train_dir(
        tmp_path_factory.mktemp("toy") / "train",
        num_speakers=4,
        utts_per_speaker=4,
        num_frames=60,
        feat_dim=20,
        vad=True,
        seed=3,
    )


def tiny_cfg(**sections):
    base = {
        "sampler": {"speakers_per_batch": 2, "utts_per_speaker": 2},
        "train": {"epochs": 1, "steps_per_epoch": 1, "compile": False},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    data = toy_config("tdnn", **base)
    cfg = config_from_dict(data)
    validate_config(cfg)
    return cfg


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- disk full
def _fail_saving(monkeypatch, exc, only=None):
    real = torch.save

    def save(obj, f, *a, **k):
        if only is None or only in str(f):
            raise exc
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)


def _little_free(monkeypatch, free=0):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=free))


def test_torch_iostream_error_on_a_full_disk_names_the_checkpoint_and_the_space(toy, tmp_path, monkeypatch):
    _fail_saving(monkeypatch, RuntimeError("basic_ios::clear: iostream error"))
    _little_free(monkeypatch)
    exp = tmp_path / "exp"
    with pytest.raises(pio.DiskFullError) as e:
        train(tiny_cfg(), toy, exp, seed=0)
    msg = str(e.value)
    ckpt = exp / "checkpoints" / "epoch_1.pt"
    assert msg.startswith(f"cannot write {ckpt}: no space left on device (0.0 MB free, about ")
    assert msg.endswith(" MB needed)") and "\n" not in msg
    assert not ckpt.exists() and not list(ckpt.parent.glob(".*tmp*"))  # no partial file left behind


def test_enospc_on_final_pt_is_one_line_from_the_cli(toy, tmp_path, monkeypatch, capsys):
    _fail_saving(monkeypatch, OSError(errno.ENOSPC, "No space left on device"), only="/.final.")
    cfg = write_yaml(
        tmp_path / "sys.yaml",
        toy_config(
            "tdnn",
            sampler={"speakers_per_batch": 2, "utts_per_speaker": 2},
            train={"epochs": 1, "steps_per_epoch": 1, "compile": False},
        ),
    )
    exp = tmp_path / "exp"
    assert train_cli.main(["--config", str(cfg), "--train-dir", str(toy), "--exp-dir", str(exp)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"pyspk train: error: cannot write {exp / 'final.pt'}: no space left on device (")
    assert "MB free, about" in err and "Traceback" not in err
    assert (exp / "checkpoints" / "epoch_1.pt").is_file()


def test_write_error_tells_a_full_disk_from_other_failures(tmp_path, monkeypatch):
    iostream = RuntimeError("basic_ios::clear: iostream error")
    err = pio.write_error(tmp_path / "x.pt", iostream, needed=50 * pio.MB)  # plenty of room here
    assert type(err) is pio.WriteError and "iostream error" in str(err) and "about 50 MB needed" in str(err)
    assert str(err).count("cannot write") == 1
    assert pio.write_error(tmp_path / "x.pt", ValueError("a bug")) is None
    assert pio.write_error(tmp_path / "x.pt", RuntimeError("shape mismatch")) is None
    _little_free(monkeypatch, free=10 * pio.MB)
    err = pio.write_error(tmp_path / "x.pt", iostream, needed=50 * pio.MB)
    assert str(err) == f"cannot write {tmp_path / 'x.pt'}: no space left on device (10 MB free, about 50 MB needed)"
    # the atomic writer reports it too, and removes its partial file
    with pytest.raises(pio.DiskFullError, match="no space left on device"):
        with pio.atomic_open(tmp_path / "t.txt") as f:
            f.write("x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    assert pio.payload_nbytes({"a": torch.zeros(4), "b": [np.zeros(2)], "c": "text"}) == 16 + 16


# --------------------------------------------------------------------------- encoder size
def test_an_encoder_too_large_for_this_machine_is_refused_naming_the_key(tmp_path):
    data = toy_config("tdnn")
    data["encoder"]["kwargs"] = {"channels": 100_000_000, "embed_dim": 32}
    p = write_yaml(tmp_path / "big.yaml", data)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}: key 'encoder.kwargs.channels': 100000000 makes an encoder of" in msg
    assert "GB to train" in msg and "this machine has" in msg and "GB of memory" in msg
    # yaml reads 1e8 as a string: refused as such, not passed on to PyTorch
    p.write_text("encoder:\n  name: tdnn\n  kwargs: {channels: 1e8}\n")
    with pytest.raises(ConfigError, match=r"key 'encoder\.kwargs\.channels': '1e8' is a string, not a number"):
        load_config(p)
    p.write_text("encoder:\n  name: tdnn\n  kwargs: {chanels: 64}\n")
    with pytest.raises(ConfigError, match=r"key 'encoder\.kwargs\.chanels'.*did you mean 'channels'"):
        load_config(p)


def test_encoder_size_check_counts_without_building():
    from pyspk.models import build_encoder
    from pyspk.models.size import EncoderConfigError, check_encoder_config, count_parameters

    kw = {"channels": 32, "stats_channels": 64, "embed_dim": 16}
    real = sum(p.numel() for p in build_encoder("tdnn", 20, **kw).parameters())
    assert count_parameters("tdnn", 20, **kw) == real == check_encoder_config("tdnn", kw, feat_dim=20)
    with pytest.raises(EncoderConfigError) as e:  # a machine of 1 MB: the wider option is named
        check_encoder_config("tdnn", {"channels": 32, "stats_channels": 4096}, memory=2**20)
    assert e.value.key == "stats_channels"


# --------------------------------------------------------------------------- NaN / inf
def _float_keys(cls=Config, prefix="", names=()):
    """(key, the component names its blocks need) of every float setting, the settings of every
    registered head, pair loss, pair weights and balancer included."""
    from pyspk.train.config import registry

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f.metadata.get("key", f.name)
        if "registry" in f.metadata:
            reg = registry(f.metadata["registry"])
            for name in reg.names():
                if reg.get(name).settings is not None:
                    yield from _float_keys(reg.get(name).settings, f"{prefix}{key}.", names + ((key, name),))
        elif dataclasses.is_dataclass(tp):
            yield from _float_keys(tp, f"{prefix}{key}.", names)
        elif typing.get_origin(tp) in (dict, typing.Dict) and typing.get_args(tp)[1:] == (float,):
            yield f"{prefix}{key}.clean", names  # a mapping of numbers: one value checked
        elif tp is float or float in typing.get_args(tp):
            yield f"{prefix}{key}", names


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_or_inf_in_any_float_key_is_refused_naming_it(tmp_path, value):
    keys = list(_float_keys())
    flat = [k for k, _ in keys]
    assert "optim.lr" in flat and "head.margin" in flat and "pair_weights.scale" in flat and "balance.lambda" in flat
    assert "optim.grad_clip" in flat and len(keys) > 20
    number = {".nan": math.nan, ".inf": math.inf, "-.inf": -math.inf}[value]
    for key, names in keys:
        *path, last = key.split(".")
        data = node = {}
        for part in path:
            node = node.setdefault(part, {})
        node[last] = number
        for block, name in names:
            data[block]["name"] = name
        p = tmp_path / "nan.yaml"
        p.write_text(yaml.safe_dump(data))
        assert value in p.read_text()
        with pytest.raises(ConfigError) as e:
            load_config(p)
        assert f"key '{key}': expected a finite number, got" in str(e.value), (key, str(e.value))


def test_nan_in_the_other_configs_is_refused_naming_the_key(tmp_path):
    from pyspk.augment.config import AugmentConfig
    from pyspk.backend.config import load_config as load_backend
    from pyspk.features.fbank import FbankConfig

    p = tmp_path / "c.yaml"
    p.write_text("vad:\n  enabled: true\n  energy_threshold: .nan\n")
    with pytest.raises(ValueError, match=r"fbank option 'vad_energy_threshold': expected a finite number, got nan"):
        FbankConfig.from_yaml(p)
    p.write_text("noise_event_s: [1.0, .inf]\n")
    with pytest.raises(ValueError, match=r"augment option 'noise_event_s': expected a finite number"):
        AugmentConfig.from_yaml(p)
    p.write_text("p_targets: [0.01, .nan]\n")
    with pytest.raises(ValueError, match=r"'p_targets': expected a finite number"):
        load_backend(p)


# --------------------------------------------------------------------------- --nj, verify flags
@pytest.mark.parametrize(
    "cli, args", [(fbank_cli, ["d", "f"]), (augment_cli, ["d", "f", "o"]), (extract_cli, ["m.pt", "d", "o"])]
)
@pytest.mark.parametrize("nj", ["0", "-2", "two"])
def test_every_nj_flag_refuses_less_than_one_job(cli, args, nj, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--nj", nj, *args])
    assert e.value.code == 2
    assert "argument --nj:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, why",
    [
        ("--min-speech", "-1", "must be >= 0, got -1"),
        ("--min-speech", "nan", "must be a finite number"),
        ("--threshold", "nan", "must be a finite number, got nan"),
        ("--threshold", "inf", "must be a finite number"),
    ],
)
def test_verify_refuses_negative_min_speech_and_nan_threshold(flag, value, why, capsys):
    with pytest.raises(SystemExit) as e:
        verify_cli.main(["--model", "m.pt", flag, value, "a.wav", "b.wav"])
    assert e.value.code == 2
    assert f"argument {flag}: {why}" in capsys.readouterr().err


# --------------------------------------------------------------------------- duplicate yaml keys
def test_duplicate_yaml_keys_are_refused_naming_both_lines(tmp_path, caplog):
    p = tmp_path / "dup.yaml"
    p.write_text("optim:\n  lr: 0.01\n  name: adam\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: key 'optim.lr' appears twice, on line 2 and on line 4")
    # every config reader goes through the same loader
    from pyspk.augment.config import AugmentConfig
    from pyspk.backend.config import load_config as load_backend
    from pyspk.features.fbank import FbankConfig
    from pyspk.yamlio import DuplicateKeyError, safe_load

    p.write_text("num_mel_bins: 80\nvad:\n  enabled: true\n  enabled: false\n")
    with pytest.raises(DuplicateKeyError, match=r"key 'vad\.enabled' appears twice, on line 3 and on line 4"):
        FbankConfig.from_yaml(p)
    for reader in (AugmentConfig.from_yaml, load_backend):
        p.write_text("a: 1\nb: 2\na: 3\n")
        with pytest.raises(DuplicateKeyError, match="key 'a' appears twice, on line 1 and on line 3"):
            reader(p)
    # a merge key's values may be overridden; nested and listed mappings are checked too
    assert safe_load("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n")["d"] == {"x": 3, "y": 2}
    with pytest.raises(DuplicateKeyError, match=r"key 'l\[1\]\.k' appears twice"):
        safe_load("l:\n  - {k: 1}\n  - {k: 1, k: 2}\n")
    # the tools say it in one line
    p.write_text("num_mel_bins: 80\nnum_mel_bins: 40\n")
    assert fbank_cli.main(["--config", str(p), str(p.parent / "none"), str(p.parent / "fb")]) == 1
    assert f"{p}: key 'num_mel_bins' appears twice, on line 1 and on line 2" in caplog.records[-1].getMessage()
    for conf in sorted((REPO / "conf").rglob("*.yaml")):  # the shipped configs have none
        safe_load(conf.read_text())


# --------------------------------------------------------------------------- K >> utterances per speaker
def test_utts_per_speaker_far_above_the_data_warns_with_the_factor(toy, caplog):
    utt2spk = {f"s{s}-u{u:02d}": f"s{s}" for s in range(4) for u in range(30)}
    s = PKSampler(utt2spk, speakers_per_batch=2, utts_per_speaker=500)
    assert repetition_factor(s) == pytest.approx(500 / 30)
    msg = repetition_warning(s)
    assert msg.startswith("sampler.utts_per_speaker = 500 but the speakers have a median of 30 original utterances")
    assert "16.7x on average" in msg and "utts_per_speaker: 30 or less" in msg
    assert repetition_warning(PKSampler(utt2spk, speakers_per_batch=2, utts_per_speaker=30)) is None
    # at training start-up: a console warning (stderr through logging), training still runs
    cfg = tiny_cfg(sampler={"utts_per_speaker": 12})
    with caplog.at_level(logging.WARNING):
        load_train_data(toy, cfg, seed=0, source="sys.yaml")
    assert any(
        "sys.yaml: " in r.getMessage()
        and "sampler.utts_per_speaker = 12 but the speakers have a median of 4 original utterances" in r.getMessage()
        and "3.0x on average" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


def test_shipped_configs_do_not_warn_on_the_synth_corpus_shape():
    # conf/*: K = 2 or 4; SynthCeleb and speechocean762 speakers have more originals than that
    for conf in sorted((REPO / "conf").glob("*/*.yaml")):
        data = yaml.safe_load(conf.read_text())
        if "sampler" in data:
            assert data["sampler"].get("utts_per_speaker", 2) <= 4, conf


# --------------------------------------------------------------------------- no voiced frames
@pytest.fixture()
def toy_with_silence(tmp_path):
    d = make_toy_train_dir(
        tmp_path / "train", num_speakers=4, utts_per_speaker=4, num_frames=60, feat_dim=20, vad=True, seed=3
    )
    vad = dict(kaldiio.load_scp(str(d / "vad.scp")))
    silent = ["spk001-u002", "spk003-u000"]
    for u in silent:
        vad[u] = np.zeros_like(vad[u])
    with kaldiio.WriteHelper(f"ark,scp:{d / 'vad.ark'},{d / 'vad.scp'}") as w:
        for u in sorted(vad):
            w(u, vad[u])
    return d, silent


@pytest.mark.parametrize("in_memory", ["always", "never"])
def test_utterances_without_voiced_frames_are_left_out_with_one_warning(toy_with_silence, tmp_path, caplog, in_memory):
    d, silent = toy_with_silence
    cfg = tiny_cfg(
        features={"in_memory": in_memory, "short_utts": "pad"},
        train={"epochs": 1, "steps_per_epoch": 3, "compile": False},
    )
    with caplog.at_level(logging.WARNING):
        data = load_train_data(d, cfg, seed=0)
    warned = [r.getMessage() for r in caplog.records if "no voiced frame" in r.getMessage()]
    assert len(warned) == 1 and "2 of 16 utterance(s) have no voiced frame after VAD" in warned[0]
    assert warned[0].startswith(f"{d}/vad.scp") and "training leaves them out" in warned[0]
    assert not set(silent) & set(data.sampler.utts) and len(data.sampler.utts) == 14
    # deterministic: the same data gives the same batches
    again = load_train_data(d, cfg, seed=0)
    assert [list(b) for b in data.sampler] == [list(b) for b in again.sampler]
    assert train(cfg, d, tmp_path / f"exp_{in_memory}", seed=0).is_file()


def test_no_voiced_frames_in_every_utterance_is_an_error(tmp_path):
    from pyspk.data.kaldi_dir import DataDirError

    d = make_toy_train_dir(
        tmp_path / "train", num_speakers=2, utts_per_speaker=2, num_frames=60, feat_dim=20, vad=True, seed=3
    )
    vad = dict(kaldiio.load_scp(str(d / "vad.scp")))
    with kaldiio.WriteHelper(f"ark,scp:{d / 'vad.ark'},{d / 'vad.scp'}") as w:
        for u in sorted(vad):
            w(u, np.zeros_like(vad[u]))
    with pytest.raises(DataDirError, match="VAD found no voiced frame in any of the 4 utterances"):
        load_train_data(d, tiny_cfg(), seed=0)


# --------------------------------------------------------------------------- resampled audio on the console
def _tone(n, sr):
    t = np.arange(n) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_resampled_utterances_are_summed_up_on_the_console(tmp_path, monkeypatch, caplog):
    from pyspk.features.fbank import FbankConfig
    from pyspk.jobs import JobSet
    from pyspk.stages import fbank as stage

    data, wav = tmp_path / "data", tmp_path / "wav"
    data.mkdir()
    wav.mkdir()
    rates = {"a-8k-1": 8000, "a-8k-2": 8000, "b-16k": 16000, "c-8k-3": 8000}
    for utt, sr in rates.items():
        sf.write(wav / f"{utt}.wav", _tone(sr, sr), sr)
    (data / "wav.scp").write_text("".join(f"{u} {wav / u}.wav\n" for u in sorted(rates)))
    (data / "utt2spk").write_text("".join(f"{u} {u[0]}\n" for u in sorted(rates)))
    cfg = FbankConfig()
    # the queue's jobs, run in this process (a queue adds nothing to what is checked here)
    monkeypatch.setattr(
        JobSet, "run", lambda self, cmd, jobs, argv: [stage.run_job(data, self.out_dir, j, cfg) for j in jobs]
    )
    fb = tmp_path / "fbank"
    with caplog.at_level(logging.WARNING):
        stage.make_fbank(data, fb, None, 2, "unused")
    lines = [r.getMessage() for r in caplog.records if "were resampled" in r.getMessage()]
    assert lines == [
        f"3 utterance(s) were resampled from 8000 Hz to 16000 Hz; their mel bins above 4000 Hz are "
        f"empty, unlike the rest (see {fb.resolve() / 'log' / 'fbank.1.log'})"
    ]
    assert (fb / "resampled.1").read_text() == "a-8k-1 8000\na-8k-2 8000\n"
    assert (fb / "resampled.2").read_text() == "c-8k-3 8000\n"
    # a rerun that reuses the verified jobs says it again (the jobs do not run)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        stage.make_fbank(data, fb, None, 2, "unused")
    assert sum("3 utterance(s) were resampled" in r.getMessage() for r in caplog.records) == 1
    import pyspk.features.audio as audio

    assert audio.resample.__name__ == "resample" and audio.resample.__module__ == "pyspk.features.audio"
