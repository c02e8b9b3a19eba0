"""Trainer on a tiny separable toy set: every ablation system learns, resume is exact,
NaN stops training without touching the last checkpoint, fine-tuning re-inits the head."""

import csv
import math
import shutil
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml
from toydata import _TINY, make_toy_train_dir, toy_config

from pyspk.bin import train as train_cli
from pyspk.features.reader import load_features
from pyspk.metrics import compute_eer
from pyspk.models import load_encoder
from pyspk.train import objective as objective_mod
from pyspk.train.checkpoint import load_checkpoint
from pyspk.train.config import config_from_dict, config_to_dict, load_config, validate_config
from pyspk.train.trainer import Trainer, TrainingDiverged, train

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ["softmax", "aam", "supcon", "am_supcon", "am_supcon_caa", "aam_am_supcon_caa_fixed", "proposed"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_train_dir(
        tmp_path_factory.mktemp("toy") / "train",
        num_speakers=8,
        utts_per_speaker=6,
        num_frames=100,
        feat_dim=20,
        copies=1,
        vad=True,
        seed=1,
        separation=1.0,
    )


def system_config(name, epochs=3, steps=8):
    """conf/synth/<name>.yaml (resolved) with the encoder, crop and batch shrunk for the toy set."""
    data = config_to_dict(load_config(REPO / "conf" / "synth" / f"{name}.yaml"))
    data["encoder"] = {"name": "tdnn", "kwargs": _TINY["tdnn"]}
    data["features"].update(crop_frames=50, in_memory="auto")
    data["sampler"].update(speakers_per_batch=4, utts_per_speaker=3)
    data["optim"].update(lr=0.005, warmup_steps=2, final_lr=0.001)
    data["train"].update(
        epochs=epochs, steps_per_epoch=steps, average_last=1, device="cpu", log_interval=4, compile=False
    )  # seconds-long runs: the compile would cost more than it saves
    cfg = config_from_dict(data, name)
    validate_config(cfg, name)
    return cfg


def utterance_eer(encoder, train_dir):
    """EER of cosine scores between all pairs of clean toy utterances (whole, after VAD + CMN)."""
    feats = dict(kaldiio.load_scp(str(train_dir / "feats.scp")))
    vad = dict(kaldiio.load_scp(str(train_dir / "vad.scp")))
    utts = sorted(u for u in feats if "-aug" not in u)
    with torch.no_grad():
        x = [torch.from_numpy(load_features(feats[u], vad=vad[u])[:90])[None] for u in utts]
        z = torch.nn.functional.normalize(encoder.eval()(torch.cat(x)), dim=1).numpy()
    spk = np.array([u.split("-")[0] for u in utts])
    iu = np.triu_indices(len(utts), 1)
    return compute_eer((z @ z.T)[iu], (spk[:, None] == spk[None, :])[iu])[0]


@pytest.mark.parametrize("name", SYSTEMS)
def test_every_ablation_system_learns(toy, tmp_path, name):
    cfg = system_config(name)
    torch.manual_seed(1)
    untrained = utterance_eer(Trainer(cfg, toy, tmp_path / "x", seed=1).model.encoder, toy)
    final = train(cfg, toy, tmp_path / "exp", seed=1)
    trained = utterance_eer(load_encoder(final)[0], toy)
    assert trained < untrained, (untrained, trained)
    rows = list(csv.DictReader(open(tmp_path / "exp" / "train.csv")))
    assert len(rows) == 24 and [int(r["step"]) for r in rows] == list(range(1, 25))
    first, last = (np.mean([float(r["loss"]) for r in rows[s]]) for s in (slice(0, 6), slice(-6, None)))
    # the contrastive margin ramps up over 2 of the 3 epochs (and MGDA's alpha moves the combined
    # loss between its parts), so the loss curve is only comparable without am_supcon
    if getattr(cfg.pair_loss, "name", None) != "am_supcon":
        assert last < first
    if getattr(cfg.balance, "name", None) == "mgda":
        alphas = [float(r["alpha"]) for r in rows]
        assert all(0.0 <= a <= 1.0 for a in alphas)
    ckpt = load_checkpoint(tmp_path / "exp" / "checkpoints" / "epoch_3.pt")
    assert {"model", "head", "optimizer", "scheduler", "sampler", "rng", "epoch", "step"} <= set(ckpt)
    extra = load_encoder(final)[1]["extra"]
    assert extra["features"] == {"cmn": True, "cmn_window": None, "vad": True}
    assert extra["speakers"] == [f"spk{i:03d}" for i in range(8)]
    assert extra["config"]["head"] == config_to_dict(cfg)["head"]
    assert yaml.safe_load((tmp_path / "exp" / "config.yaml").read_text()) == extra["config"]


@pytest.mark.parametrize(
    "balance",
    [
        {"name": "mgda", "level": "parameters", "normalize": "none"},
        {"name": "nash_mtl"},
        {"name": "nash_mtl", "scale": "unit_sum", "level": "embeddings"},
    ],
)
def test_balancers_whose_weights_move_learn(toy, tmp_path, balance):
    cfg = system_config("proposed")
    cfg = config_from_dict({**config_to_dict(cfg), "balance": balance}, "moving")
    torch.manual_seed(1)
    untrained = utterance_eer(Trainer(cfg, toy, tmp_path / "x", seed=1).model.encoder, toy)
    final = train(cfg, toy, tmp_path / "exp", seed=1)
    assert utterance_eer(load_encoder(final)[0], toy) < untrained
    alphas = [float(r["alpha"]) for r in csv.DictReader(open(tmp_path / "exp" / "train.csv"))]
    assert len(alphas) == 24 and all(0.0 <= a <= 1.0 for a in alphas)
    assert len({round(a, 6) for a in alphas}) > 12  # a weight per step, not a constant


def test_a_parameter_level_balancer_trains_eager_even_with_compile_on(toy, tmp_path, monkeypatch, caplog):
    """Two backwards per step through a compiled encoder gave gradients unlike eager mode's: such a
    system is not compiled, and says so."""
    from pyspk.train import trainer as trainer_mod

    compiled = []
    monkeypatch.setattr(trainer_mod, "compile_encoder", lambda enc: compiled.append(enc) or True)
    data = config_to_dict(system_config("proposed", epochs=1, steps=2))
    data["train"]["compile"] = True
    with caplog.at_level("WARNING", logger="pyspk.train"):
        Trainer(config_from_dict({**data, "balance": {"name": "nash_mtl"}}, "p"), toy, tmp_path / "a", seed=1)
    assert not compiled and "train.compile: off, balance.level is parameters" in caplog.text
    Trainer(config_from_dict(data, "e"), toy, tmp_path / "b", seed=1)  # MGDA-UB: compiled as configured
    assert len(compiled) == 1


@pytest.mark.parametrize("native", [False, True])
def test_cpu_amp_auto_follows_the_hardware_and_final_pt_records_it(toy, tmp_path, monkeypatch, native):
    """cpu_amp: auto trains in bfloat16 only where the CPU has bfloat16 GEMMs (emulated ones are
    far slower than float32, docs/speed.md); true forces it; final.pt says what the encoder trained in."""
    import pyspk.train.trainer as T

    monkeypatch.setattr(T, "cpu_has_bf16", lambda: native)
    for setting, want in (("auto", native), (True, True), (False, False)):
        cfg = system_config("aam", epochs=1, steps=1)
        cfg.train.cpu_amp = setting
        tr = Trainer(cfg, toy, tmp_path / f"{setting}{native}", seed=1)
        assert tr.amp is want
    cfg = system_config("aam", epochs=1, steps=1)
    cfg.train.cpu_amp = "auto"
    final = train(cfg, toy, tmp_path / "run", seed=1)
    assert torch.load(final, weights_only=True)["extra"]["train_precision"] == ("bfloat16" if native else "float32")


def test_gemm_auto_is_onednn_on_amd_only_and_the_backends_train_alike(toy, tmp_path, monkeypatch):
    """train.gemm: the library of the rows layout's GEMMs; auto asks the CPU's vendor. The same
    sums either way: two short runs, one per library, end within float rounding of each other."""
    import pyspk.models.layers as L

    for vendor, want in (("AuthenticAMD", "onednn"), ("GenuineIntel", "mkl")):
        info = tmp_path / f"cpuinfo_{vendor}"
        info.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu avx2\n")
        real_open = open
        monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(info if f == "/proc/cpuinfo" else f, *a, **k))
        assert L.default_gemm_backend() == want
        cfg = system_config("aam", epochs=1, steps=1)
        assert Trainer(cfg, toy, tmp_path / vendor, seed=1).gemm == want
        monkeypatch.setattr("builtins.open", real_open)
    finals, calls = {}, []
    real = L._dnn_rows
    monkeypatch.setattr(L, "_dnn_rows", lambda x, w: calls.append(x.shape) or real(x, w))
    for gemm in ("mkl", "onednn"):
        cfg = system_config("aam", epochs=1, steps=3)
        cfg.train.gemm = gemm
        # float32: the setting under test. conf/synth says cpu_amp: auto, which trains in bfloat16
        # on a CPU with bfloat16 GEMMs, and autocast GEMMs bypass train.gemm's library
        cfg.train.cpu_amp = False
        n = len(calls)
        finals[gemm] = torch.load(train(cfg, toy, tmp_path / gemm, seed=2), weights_only=True)
        assert finals[gemm]["extra"]["train_gemm"] == gemm
        assert (len(calls) > n) == (gemm == "onednn")  # oneDNN ran the GEMMs, forward and backward
    a, b = (finals[g]["state_dict"] for g in ("mkl", "onednn"))
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4), k


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("cpu_amp,gemm", [(False, "mkl"), (True, "mkl"), (False, "onednn")])
def test_resume_gives_identical_weights(toy, tmp_path, monkeypatch, cpu_amp, gemm):
    cfg = system_config("proposed", epochs=2, steps=4)
    cfg.train.average_last = 2
    cfg.train.cpu_amp = cpu_amp
    cfg.train.gemm = gemm
    train(cfg, toy, tmp_path / "straight", seed=3)

    real_step = Trainer._train_step

    def crash_in_epoch_2(self, model, feats, labels, epoch, i):
        if self.step == 6:
            raise Interrupt()
        return real_step(self, model, feats, labels, epoch, i)

    monkeypatch.setattr(Trainer, "_train_step", crash_in_epoch_2)
    with pytest.raises(Interrupt):
        train(cfg, toy, tmp_path / "resumed", seed=3)
    assert not (tmp_path / "resumed" / "checkpoints" / "epoch_2.pt").exists()
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    torch.manual_seed(12345)
    np.random.seed(12345)  # the checkpoint must restore every RNG
    train(cfg, toy, tmp_path / "resumed", seed=3)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "epoch_2.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "epoch_2.pt")
    for part in ("model", "head"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            if isinstance(a[part][k], torch.Tensor):
                assert torch.equal(a[part][k], b[part][k]), (part, k)
    fa = torch.load(tmp_path / "straight" / "final.pt")["state_dict"]
    fb = torch.load(tmp_path / "resumed" / "final.pt")["state_dict"]
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    assert torch.load(tmp_path / "resumed" / "final.pt", weights_only=True)["extra"]["train_gemm"] == gemm
    rows_a = (tmp_path / "straight" / "train.csv").read_text().splitlines()
    rows_b = (tmp_path / "resumed" / "train.csv").read_text().splitlines()
    assert len(rows_a) == len(rows_b) == 9
    assert [r.split(",")[:5] for r in rows_a] == [r.split(",")[:5] for r in rows_b]


def test_nan_loss_stops_and_keeps_last_checkpoint(toy, tmp_path, monkeypatch):
    cfg = system_config("aam", epochs=3, steps=3)
    real_call = objective_mod.Objective.__call__
    steps = {"n": 0}

    def nan_at_step_5(self, z, loss_cls, labels, **kw):
        steps["n"] += 1
        total, parts = real_call(self, z, loss_cls, labels, **kw)
        if steps["n"] == 5:
            total = total * float("nan")
            parts["loss"] = float("nan")
        return total, parts

    monkeypatch.setattr(objective_mod.Objective, "__call__", nan_at_step_5)
    exp = tmp_path / "exp"
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, toy, exp, seed=0)
    ck1 = exp / "checkpoints" / "epoch_1.pt"
    assert "step 5 " in str(e.value) and str(ck1) in str(e.value)
    assert ck1.is_file() and not (exp / "checkpoints" / "epoch_2.pt").exists() and not (exp / "final.pt").exists()
    before = ck1.read_bytes()
    # the CLI reports it as an error (exit 1), and still leaves epoch_1.pt alone
    steps["n"] = 0
    (tmp_path / "sys.yaml").write_text(yaml.safe_dump({**yaml.safe_load((exp / "config.yaml").read_text())}))
    assert (
        train_cli.main(
            ["--config", str(tmp_path / "sys.yaml"), "--train-dir", str(toy), "--exp-dir", str(exp), "--seed", "0"]
        )
        == 1
    )
    assert ck1.read_bytes() == before


def test_finetune_reinitialises_only_the_head(toy, tmp_path):
    cfg = system_config("aam", epochs=1, steps=3)
    src = tmp_path / "src"
    train(cfg, toy, src, seed=0)
    src_ckpt = load_checkpoint(src / "checkpoints" / "epoch_1.pt")
    # a second data dir with fewer speakers
    small = tmp_path / "small"
    shutil.copytree(toy, small)
    keep = [l for l in (toy / "utt2spk").read_text().splitlines() if l.split()[1] not in ("spk006", "spk007")]
    (small / "utt2spk").write_text("\n".join(keep) + "\n")
    for init in (src / "checkpoints" / "epoch_1.pt", src / "final.pt"):
        cfg2 = system_config("aam", epochs=1, steps=2)
        cfg2.train.init_from = str(init)
        t = Trainer(cfg2, small, tmp_path / f"ft_{init.stem}", seed=5)
        fresh_head = t.model.head.weight.detach().clone()
        t.init_from(init)
        assert t.model.head.weight.shape == (6, 32) and torch.equal(t.model.head.weight, fresh_head)
        enc = t.model.encoder.state_dict()
        ref = src_ckpt["model"] if init.name.startswith("epoch") else torch.load(init)["state_dict"]
        assert all(torch.equal(enc[k], ref[k]) for k in enc)
        assert t.run().is_file()
    # same speakers: the head comes along too
    cfg3 = system_config("aam", epochs=1, steps=2)
    t = Trainer(cfg3, toy, tmp_path / "same", seed=5)
    t.init_from(src / "checkpoints" / "epoch_1.pt")
    assert torch.equal(t.model.head.weight, src_ckpt["head"]["weight"])


def test_cli_writes_outputs_and_reports_config_errors(toy, tmp_path, capsys):
    data = toy_config(
        "tdnn", sampler={"speakers_per_batch": 4, "utts_per_speaker": 2}, train={"epochs": 1, "steps_per_epoch": 2}
    )
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(data))
    exp = tmp_path / "exp"
    assert train_cli.main(["--config", str(good), "--train-dir", str(toy), "--exp-dir", str(exp)]) == 0
    assert (exp / "final.pt").is_file() and (exp / "checkpoints" / "epoch_1.pt").is_file()
    assert yaml.safe_load((exp / "config.yaml").read_text())["train"]["seed"] == 777
    data["optim"]["learning_rate"] = 0.1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert train_cli.main(["--config", str(bad), "--train-dir", str(toy), "--exp-dir", str(tmp_path / "e2")]) == 1
    err = capsys.readouterr().err
    assert "optim.learning_rate" in err and str(bad) in err
    assert not (tmp_path / "e2").exists()


def test_normalized_mgda_and_caa_weight_normalisation():
    from pyspk.losses.caa import normalize_negative_weights
    from pyspk.train.objective import Objective, build_head

    torch.manual_seed(0)
    z = torch.randn(8, 6, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    blocks = {"head": {"name": "aam"}, "pair_loss": {"name": "am_supcon"}, "pair_weights": {"name": "caa"}}
    head = build_head(config_from_dict(blocks).head, 6, 4)
    for norm in ("l2", "loss"):
        cfg = config_from_dict(
            {**blocks, "balance": {"name": "mgda", "normalize": norm, "combine": "scaled", "head_grad": "alpha"}}
        )
        obj = Objective(cfg, 4, 6, head=head)
        loss_cls, _ = head(z, labels)
        total, parts = obj(z, loss_cls, labels)
        (g1,) = torch.autograd.grad(loss_cls, z, retain_graph=True)
        (g2,) = torch.autograd.grad(obj.pair_loss(z, labels, obj.pair_weights(z, labels)), z)
        if norm == "l2":  # two unit vectors: the min-norm point is their midpoint
            assert parts["alpha"] == pytest.approx(0.5)
            expect = 0.5 * parts["loss_cls"] / g1.norm() + 0.5 * parts["loss_con"] / g2.norm()
        else:
            a = parts["alpha"]
            assert 0.0 <= a <= 1.0
            expect = torch.tensor(1.0)  # alpha * L1/L1 + (1 - alpha) * L2/L2
        assert float(total.detach()) == pytest.approx(float(expect), rel=1e-4)
    w = torch.tensor([[1.0, 1.0, 0.2, 0.6], [1.0, 1.0, 0.1, 0.1], [0.2, 0.1, 1.0, 1.0], [0.6, 0.1, 1.0, 1.0]])
    lab = torch.tensor([0, 0, 1, 1])
    n = normalize_negative_weights(w, lab)
    assert torch.allclose(n[0], torch.tensor([1.0, 1.0, 0.5, 1.5])) and torch.allclose(n[1, 2:], torch.ones(2))


def test_resume_refuses_a_changed_config_but_allows_more_epochs(toy, tmp_path):
    cfg = system_config("aam", epochs=1, steps=2)
    train(cfg, toy, tmp_path / "exp", seed=0)
    more = system_config("aam", epochs=2, steps=2)
    train(more, toy, tmp_path / "exp", seed=0)  # resumes: epochs may grow
    assert (tmp_path / "exp" / "checkpoints" / "epoch_2.pt").is_file()
    other = system_config("aam", epochs=3, steps=2)
    other.optim.lr = 0.1
    with pytest.raises(ValueError, match=r"another config \(optim\.lr: 0\.005 -> 0\.1\).*--restart"):
        train(other, toy, tmp_path / "exp", seed=0)
    with pytest.raises(ValueError, match=r"train\.seed: 0 -> 1"):
        train(more, toy, tmp_path / "exp", seed=1)


def _weights(path):
    return load_checkpoint(path)["model"]


def test_changed_data_starts_over_instead_of_resuming(toy, tmp_path, caplog):
    """A rerun of stage 3 after the features changed must not resume the old run (it would
    finish at once with a model of the old data): it starts over, old checkpoints set aside."""
    cfg = system_config("aam", epochs=1, steps=2)
    data = tmp_path / "train"
    shutil.copytree(toy, data)
    exp = tmp_path / "exp"
    train(cfg, data, exp, seed=0)
    old = _weights(exp / "checkpoints" / "epoch_1.pt")
    train(cfg, data, exp, seed=0)  # same data: resumed, nothing redone
    assert not (exp / "checkpoints.stale").exists()
    assert all(torch.equal(old[k], v) for k, v in _weights(exp / "checkpoints" / "epoch_1.pt").items())
    # new features (as a rerun of the augmentation stage writes them): same keys, same shapes
    feats = dict(kaldiio.load_scp(str(data / "feats.scp")))
    with kaldiio.WriteHelper(f"ark,scp:{data / 'feats.ark'},{data / 'feats.scp'}") as w:
        for k in sorted(feats):
            w(k, (feats[k] * 0.5 + 1.0).astype(np.float32))
    with caplog.at_level("WARNING", logger="pyspk.train"):
        train(cfg, data, exp, seed=0)
    assert "trained on other data" in caplog.text
    assert (exp / "checkpoints.stale" / "epoch_1.pt").is_file()
    new = _weights(exp / "checkpoints" / "epoch_1.pt")
    assert any(not torch.equal(old[k], new[k]) for k in old)
    fresh = tmp_path / "fresh"  # equals training from scratch on the new data
    train(cfg, data, fresh, seed=0)
    assert all(torch.equal(new[k], v) for k, v in _weights(fresh / "checkpoints" / "epoch_1.pt").items())


def test_restart_flag_starts_over(toy, tmp_path):
    from pyspk.train.config import dump_config

    cfg = system_config("aam", epochs=1, steps=2)
    conf = tmp_path / "aam.yaml"
    conf.write_text(dump_config(cfg))
    exp = tmp_path / "exp"
    argv = ["--config", str(conf), "--seed", "0", "--train-dir", str(toy), "--exp-dir", str(exp)]
    assert train_cli.main(argv) == 0
    first = _weights(exp / "checkpoints" / "epoch_1.pt")
    (exp / "checkpoints" / "marker").write_text("old run")
    assert train_cli.main(argv) == 0  # resumed: the old run stays
    assert (exp / "checkpoints" / "marker").is_file() and not (exp / "checkpoints.stale").exists()
    assert train_cli.main(argv + ["--restart"]) == 0  # what run.sh --force true passes
    assert (exp / "checkpoints.stale" / "marker").is_file() and not (exp / "checkpoints" / "marker").exists()
    again = _weights(exp / "checkpoints" / "epoch_1.pt")
    assert all(torch.equal(first[k], v) for k, v in again.items())  # same seed, same data: same run


def test_data_fingerprint_tracks_tables_and_job_stamps(tmp_path):
    from pyspk.features.ark import job_stamp
    from pyspk.train.data import data_fingerprint

    d, fb = tmp_path / "d", tmp_path / "fbank"
    assert job_stamp(fb / "vad.3.ark") == job_stamp(fb / "feats.3.ark") == (fb / ".done.feats.3").resolve()
    assert job_stamp(fb / "xvector.ark") is None
    d.mkdir()
    fb.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{fb / 'feats.1.ark'},{fb / 'feats.1.scp'}") as w:
        w("a", np.zeros((3, 2), np.float32))
    (fb / ".done.feats.1").write_text("sig1\n")
    (d / "feats.scp").write_text((fb / "feats.1.scp").read_text())
    (d / "utt2spk").write_text("a s1\n")
    base = data_fingerprint(d)
    (d / "notes.txt").write_text("not read by training\n")
    assert data_fingerprint(d) == base
    (fb / ".done.feats.1").write_text("sig2\n")  # the job was recomputed from other input
    changed = data_fingerprint(d)
    assert changed != base
    (d / "utt2spk").write_text("a s2\n")
    assert data_fingerprint(d) != changed


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_every_optimizer_kernel_gives_the_reference_update(name):
    """optim.impl picks the kernel, not the maths: fused and foreach follow the loop (PyTorch's
    CPU default) to float rounding over steps with weight decay, momentum and changing grads,
    and a hand-computed first Adam step holds for the fused kernel."""
    from pyspk.train.trainer import build_optimizer

    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 4, 2), (1,)]
    init = [torch.randn(s, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, dtype=torch.float64) for s in shapes] for _ in range(6)]
    out = {}
    for impl in ("loop", "foreach", "fused"):
        cfg = config_from_dict(
            {"optim": {"name": name, "impl": impl, "lr": 0.01, "weight_decay": 0.1, "nesterov": name == "sgd"}}
        ).optim
        params = [torch.nn.Parameter(p.clone()) for p in init]
        opt = build_optimizer(cfg, params)
        assert opt.defaults.get("fused") is (True if impl == "fused" else None)
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = gi.clone()
            opt.step()
        out[impl] = [p.detach() for p in params]
    for impl in ("foreach", "fused"):
        for a, b in zip(out["loop"], out[impl]):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        assert any((a - i).abs().max() > 1e-3 for a, i in zip(out[impl], init))  # it moved
    if name == "adam":  # first step: m = (1-b1) g', v = (1-b2) g'^2, p -= lr * mhat / (sqrt(vhat) + eps)
        cfg = config_from_dict({"optim": {"impl": "fused", "lr": 0.01, "weight_decay": 0.1}}).optim
        p = torch.nn.Parameter(init[0].clone())
        p.grad = grads[0][0].clone()
        build_optimizer(cfg, [p]).step()
        g = grads[0][0] + 0.1 * init[0]
        torch.testing.assert_close(p.detach(), init[0] - 0.01 * g / (g.abs() + 1e-8))


def test_cpu_amp_runs_the_encoder_in_bfloat16_and_the_losses_in_float32(toy, tmp_path, monkeypatch):
    """train.cpu_amp: the encoder's GEMMs see bfloat16 inputs, the head and the objective float32
    embeddings; the weights and Adam's state stay float32; off, nothing is bfloat16."""
    seen = {}
    for cpu_amp in (False, True):
        cfg = system_config("proposed", epochs=1, steps=2)
        cfg.train.cpu_amp = cpu_amp
        tr = Trainer(cfg, toy, tmp_path / f"amp{cpu_amp}", seed=1)
        dtypes, zs = [], []
        for m in tr.model.encoder.modules():
            m.register_forward_hook(
                lambda mod, inp, out: dtypes.append(out.dtype) if isinstance(out, torch.Tensor) else None
            )

        class Spy:  # the objective, recording what it is given
            def __init__(self, obj):
                self.obj = obj

            def __call__(self, z, *a, **k):
                zs.append(z.dtype)
                return self.obj(z, *a, **k)

            def __getattr__(self, name):
                return getattr(self.obj, name)

        tr.objective = Spy(tr.objective)
        tr.data.sampler.set_epoch(0)
        feats, labels = next(iter(tr.data.loader()))
        parts = tr._train_step(tr.model, feats, labels, 0, 0)
        assert math.isfinite(parts["loss"])
        assert zs == [torch.float32]
        assert all(p.dtype == torch.float32 for p in tr.model.parameters())
        assert all(v.dtype == torch.float32 for st in tr.optimizer.state.values() for k, v in st.items() if k != "step")
        seen[cpu_amp] = set(dtypes)
    assert torch.bfloat16 not in seen[False]
    assert torch.bfloat16 in seen[True]
