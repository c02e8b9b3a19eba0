"""Checkpoints are data: a .pt file that pickles a call (os.system) is refused by every loader,
with an error naming the file and the refused type, and the call never runs. Checkpoints of the
old format (numpy RNG state) are rewritten by `pyspk migrate-checkpoint`, only when trusted."""

import os
import random
import shlex
import shutil

import numpy as np
import pytest
import torch
from toydata import make_toy_train_dir, toy_config

from pyspk.bin import main as pyspk_main
from pyspk.bin import train as train_cli
from pyspk.embed.extractor import Embedder
from pyspk.export.exporter import load_export_module
from pyspk.models import load_encoder
from pyspk.safe_load import UnsafeCheckpoint, check_plain, load_legacy
from pyspk.train import checkpoint as C
from pyspk.train.config import config_from_dict, dump_config
from pyspk.train.trainer import train


class Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def toy_cfg(epochs=1):
    return config_from_dict(
        toy_config("tdnn", train={"epochs": epochs, "steps_per_epoch": 2, "compile": False, "cpu_amp": False})
    )


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_train_dir(
        tmp_path_factory.mktemp("toy") / "train", num_speakers=6, utts_per_speaker=4, num_frames=60, feat_dim=20
    )


@pytest.fixture(scope="module")
def exp(toy, tmp_path_factory):
    """A finished one-epoch run: checkpoints/epoch_1.pt and final.pt in the safe format."""
    d = tmp_path_factory.mktemp("exp") / "exp"
    train(toy_cfg(), toy, d, seed=0)
    return d


def poison(src, dst, marker):
    """``src`` (a valid checkpoint) with one more entry whose unpickling runs ``touch marker``."""
    state = C.load_checkpoint(src)
    state["note"] = Payload(marker)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    return dst


def refused(excinfo, path, marker):
    msg = str(excinfo.value)
    assert str(path) in msg and "os.system" in msg and "migrate-checkpoint --i-trust-this-file" in msg, msg
    assert not marker.exists()


def test_the_payload_is_live(exp, tmp_path):
    """Control: an unrestricted load of the planted file does run the command."""
    marker = tmp_path / "PWNED"
    bad = poison(exp / "final.pt", tmp_path / "final.pt", marker)
    torch.load(bad, weights_only=False)
    assert marker.exists()


def test_migrate_refuses_a_planted_checkpoint_even_when_trusted(exp, tmp_path, capsys):
    """The migration reads numpy values and nothing else: a payload is refused, never run."""
    marker = tmp_path / "PWNED"
    bad = poison(exp / "final.pt", tmp_path / "final.pt", marker)
    before = bad.read_bytes()
    with pytest.raises(UnsafeCheckpoint):
        load_legacy(bad, i_trust_this_file=True)
    assert pyspk_main.main(["migrate-checkpoint", "--i-trust-this-file", str(bad)]) == 1
    assert "os.system" in capsys.readouterr().err
    assert not marker.exists() and bad.read_bytes() == before


def test_init_from_refuses_a_planted_checkpoint(toy, exp, tmp_path):
    marker = tmp_path / "PWNED"
    for src in (exp / "checkpoints" / "epoch_1.pt", exp / "final.pt"):
        bad = poison(src, tmp_path / "in" / src.name, marker)
        cfg = toy_cfg()
        cfg.train.init_from = str(bad)
        with pytest.raises(UnsafeCheckpoint) as e:
            train(cfg, toy, tmp_path / f"ft_{src.stem}", seed=0)
        refused(e, bad, marker)


def test_resume_refuses_a_planted_epoch_checkpoint(toy, exp, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    d = tmp_path / "exp"
    shutil.copytree(exp, d)
    bad = poison(d / "checkpoints" / "epoch_1.pt", d / "checkpoints" / "epoch_1.pt", marker)
    with pytest.raises(UnsafeCheckpoint) as e:
        train(toy_cfg(epochs=2), toy, d, seed=0)
    refused(e, bad, marker)
    conf = tmp_path / "c.yaml"
    conf.write_text(dump_config(toy_cfg(epochs=2)))
    assert train_cli.main(["--config", str(conf), "--train-dir", str(toy), "--exp-dir", str(d), "--seed", "0"]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "os.system" in err and not marker.exists()
    assert not (d / "checkpoints" / "epoch_2.pt").exists() and not (d / "checkpoints.stale").exists()


def test_every_final_pt_loader_refuses_a_planted_file(exp, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    bad = poison(exp / "final.pt", tmp_path / "final.pt", marker)
    for load in (load_encoder, Embedder.from_checkpoint, load_export_module, C.load_checkpoint):
        with pytest.raises(UnsafeCheckpoint) as e:
            load(bad)
        refused(e, bad, marker)
    for argv in (
        ["embed", "--model", str(bad), "--device", "cpu", "a.wav"],
        ["verify", "--model", str(bad), "--device", "cpu", "a.wav", "b.wav"],
        ["export", "--format", "torchscript", str(bad)],
    ):
        assert pyspk_main.main(argv) == 1, argv
        err = capsys.readouterr().err
        assert str(bad) in err and "os.system" in err and not marker.exists(), argv
    # checkpoint averaging (final.pt = mean of the last epoch checkpoints)
    d = tmp_path / "exp"
    poison(exp / "checkpoints" / "epoch_1.pt", d / "checkpoints" / "epoch_1.pt", marker)
    with pytest.raises(UnsafeCheckpoint) as e:
        C.average_encoder(d, 1)
    refused(e, d / "checkpoints" / "epoch_1.pt", marker)


def test_checkpoints_hold_only_what_a_safe_load_reads(exp, tmp_path):
    state = C.load_checkpoint(exp / "checkpoints" / "epoch_1.pt")
    check_plain(state, "epoch_1.pt")
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    with pytest.raises(TypeError, match=r"numpy.ndarray"):
        C.save_checkpoint(tmp_path / "x.pt", {**state, "rng": {**state["rng"], "numpy": np.random.get_state()}})
    with pytest.raises(TypeError, match=r"numpy.float64"):  # a float subclass, pickled as numpy's
        C.save_checkpoint(tmp_path / "x.pt", {**state, "step": np.float64(1.0)})
    assert not (tmp_path / "x.pt").exists()


def test_rng_state_round_trips_through_a_safe_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    np.random.normal()  # numpy's cached gaussian is part of its state
    torch.manual_seed(3)
    C.save_checkpoint(tmp_path / "r.pt", {"rng": C.rng_state()})
    want = (random.random(), np.random.normal(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    C.set_rng_state(C.load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.normal(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == want


def same(a, b):
    """Equal values, tensors bit for bit, nested in dicts, lists and tuples."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def old_format(src, dst):
    """``src`` as pyspk wrote checkpoints before: RNG states as random/numpy return them."""
    state = C.load_checkpoint(src)
    n = state["rng"]["numpy"]
    state["rng"]["numpy"] = (
        n["bit_generator"],
        n["keys"].numpy().astype(np.uint32),
        n["pos"],
        n["has_gauss"],
        n["gauss"],
    )
    state["rng"]["python"] = tuple(state["rng"]["python"])
    state["step"] = np.int64(state["step"])
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    return dst


def test_old_checkpoints_migrate_on_trust_and_resume_alike(toy, exp, tmp_path, capsys):
    native, migrated = tmp_path / "native", tmp_path / "migrated"
    shutil.copytree(exp, native)
    shutil.copytree(exp, migrated)
    old = old_format(exp / "checkpoints" / "epoch_1.pt", migrated / "checkpoints" / "epoch_1.pt")
    with pytest.raises(UnsafeCheckpoint, match=r"numpy"):
        C.load_checkpoint(old)
    before = old.read_bytes()
    # refused without the user's word, in one line, the file untouched
    assert pyspk_main.main(["migrate-checkpoint", str(old)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--i-trust-this-file" in err and old.read_bytes() == before
    # to another file, then in place
    out = tmp_path / "copy.pt"
    assert pyspk_main.main(["migrate-checkpoint", "--i-trust-this-file", str(old), "--out", str(out)]) == 0
    assert old.read_bytes() == before
    assert pyspk_main.main(["migrate-checkpoint", "--trust", str(old)]) == 0
    assert capsys.readouterr().out.split() == [str(out), str(old)]
    a, b = C.load_checkpoint(exp / "checkpoints" / "epoch_1.pt"), C.load_checkpoint(old)
    assert type(b["step"]) is int and b["step"] == a["step"]
    assert torch.equal(a["rng"]["numpy"]["keys"], b["rng"]["numpy"]["keys"])
    assert a["rng"]["python"] == b["rng"]["python"]
    # both resume to the same weights
    for d in (native, migrated):
        train(toy_cfg(epochs=2), toy, d, seed=0)
    wa, wb = (C.load_checkpoint(d / "checkpoints" / "epoch_2.pt") for d in (native, migrated))
    assert wa["step"] == wb["step"] == 4
    for part in ("model", "head", "objective", "optimizer", "sampler", "rng"):
        assert same(wa[part], wb[part]), part
    assert not (migrated / "checkpoints.stale").exists()
