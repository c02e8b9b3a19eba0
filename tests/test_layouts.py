"""The fast layouts keep the maths: frames-as-rows ECAPA-TDNN and TDNN, channels-last
ResNet34, conv_rows, compiled training, and the ark reader (docs/speed.md)."""

from __future__ import annotations

import copy

import kaldiio
import numpy as np
import pytest
import torch

from pyspk.data.arkread import ArkReader
from pyspk.models import build_encoder
from pyspk.models.layers import bn_last, conv_rows
from pyspk.models.pooling import AttentiveStatisticsPooling

SMALL = {
    "ecapa_tdnn": {"channels": 32, "embed_dim": 24, "mfa_channels": 48, "attention_channels": 8, "se_channels": 8},
    "tdnn": {"channels": 32, "stats_channels": 48, "embed_dim": 24},
    "resnet34": {"base_channels": 16, "embed_dim": 24, "num_blocks": (1, 1, 2, 1)},
}


def _reference_copy(model):
    ref = copy.deepcopy(model)
    return ref.to(memory_format=torch.contiguous_format)  # ResNet: NCHW weights; no-op for the 1-D encoders


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("train", [True, False])
def test_fast_forward_equals_reference(name, train):
    """Outputs, every parameter gradient and the BatchNorm running statistics of forward()
    match forward_reference() (float64, so a layout slip cannot hide in float32 noise)."""
    torch.manual_seed(0)
    model = build_encoder(name, feat_dim=40, **SMALL[name]).double().train(train)
    ref = _reference_copy(model)
    x = torch.randn(3, 61, 40, dtype=torch.float64)
    r = torch.randn(3, model.embed_dim, dtype=torch.float64)
    out, want = model(x), ref.forward_reference(x)
    tol = 1e-10
    assert torch.allclose(out, want, atol=tol, rtol=0)
    (out * r).sum().backward()
    (want * r).sum().backward()
    scale = max(p.grad.abs().max() for p in ref.parameters())
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        assert (p.grad - q.grad).abs().max() <= 10 * tol * max(1.0, float(scale)), n
    for (n, b), c in zip(model.named_buffers(), ref.buffers()):
        assert torch.allclose(b.double(), c.double(), atol=1e-10), n


def test_onednn_rows_product_and_its_gradients():
    """The oneDNN GEMM of train.gemm: onednn (rows read as a channels-last image, 1x1 kernel; the
    input gradient the same way, the weight gradient by mm) is x w^T with the right gradients.
    float64 (PyTorch's own convolution then, the same views and formulas) for gradcheck."""
    from pyspk.models.layers import _dnn_rows

    torch.manual_seed(0)
    x = torch.randn(37, 11, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 11, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(_dnn_rows(x, w), x @ w.t(), atol=1e-12)
    assert torch.autograd.gradcheck(_dnn_rows, (x, w))


@pytest.mark.parametrize("name", ["ecapa_tdnn", "tdnn"])
def test_onednn_gemm_backend_keeps_the_maths(name):
    """float32, train mode: outputs and gradients with every rows GEMM in oneDNN match the
    reference layout within float32 rounding, as the MKL ones do."""
    from pyspk.models import layers

    torch.manual_seed(0)
    model = build_encoder(name, feat_dim=80, **SMALL[name]).train()
    ref = _reference_copy(model)
    x, r = torch.randn(4, 73, 80), torch.randn(4, model.embed_dim)
    want = ref.forward_reference(x)
    (want * r).sum().backward()
    calls = []
    real = layers._dnn_rows
    try:
        layers.set_gemm_backend("onednn")
        layers._dnn_rows = lambda a, b: calls.append(1) or real(a, b)
        out = model(x)
        (out * r).sum().backward()
    finally:
        layers.set_gemm_backend("mkl")
        layers._dnn_rows = real
    assert len(calls) >= 2 * 3  # forward and input-gradient products went through it
    assert torch.allclose(out, want, atol=1e-4, rtol=1e-4)
    scale = max(float(q.grad.abs().max()) for q in ref.parameters())
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        assert (p.grad - q.grad).abs().max() <= 1e-4 * max(1.0, scale), n
    with pytest.raises(ValueError, match="one of mkl, onednn"):
        layers.set_gemm_backend("blas")


def test_state_dict_keys_and_shapes_do_not_depend_on_the_layout():
    """A checkpoint of the fast model loads into the reference layout and back."""
    torch.manual_seed(0)
    for name in SMALL:
        model = build_encoder(name, feat_dim=40, **SMALL[name])
        ref = _reference_copy(model)
        assert list(model.state_dict()) == list(ref.state_dict())
        ref.load_state_dict(model.state_dict())
        model.load_state_dict(ref.state_dict())


@pytest.mark.parametrize("base", [4, 16])
def test_resnet_runs_channels_last_from_16_channels(base):
    """Channels-last from CHANNELS_LAST_MIN base channels; a float32 step runs (narrower
    channels-last models abort inside oneDNN's backward, so they stay NCHW)."""
    torch.manual_seed(0)
    model = build_encoder("resnet34", feat_dim=40, base_channels=base, embed_dim=8, num_blocks=(1, 1, 1, 1))
    wanted = base >= 16
    assert model.stages[0][0].conv1.weight.is_contiguous(memory_format=torch.channels_last) == wanted
    seen = []
    h = model.stages[0].register_forward_hook(
        lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last))
    )
    model(torch.randn(2, 30, 40)).sum().backward()
    h.remove()
    assert seen == [wanted]


@pytest.mark.parametrize("k,d", [(1, 1), (3, 1), (3, 2), (3, 4), (5, 1), (5, 3), (3, 12)])
@pytest.mark.parametrize("grad,batch", [(True, 2), (False, 2), (False, 1)])
def test_conv_rows_is_conv1d(k, d, grad, batch):
    """Each way of running it (autograd: pad + cat; inference: columns in place, or one
    utterance's taps accumulated), and a dilation wider than the utterance."""
    torch.manual_seed(k * 10 + d)
    conv = torch.nn.Conv1d(7, 5, k, dilation=d, padding=d * (k - 1) // 2).double().requires_grad_(grad)
    x = torch.randn(batch, 23, 7, dtype=torch.float64, requires_grad=grad)
    got = conv_rows(conv, x)
    assert got.shape == (batch, 23, 5)
    assert torch.allclose(got, conv(x.transpose(1, 2)).transpose(1, 2), atol=1e-12)


def test_bn_last_uses_the_batch_norm_statistics_of_the_transpose():
    torch.manual_seed(0)
    bn, bn2 = torch.nn.BatchNorm1d(6).double(), torch.nn.BatchNorm1d(6).double()
    x = torch.randn(4, 9, 6, dtype=torch.float64) * 3 + 1
    assert torch.allclose(bn_last(bn, x), bn2(x.transpose(1, 2)).transpose(1, 2), atol=1e-12)
    assert torch.allclose(bn.running_var, bn2.running_var) and torch.allclose(bn.running_mean, bn2.running_mean)


def test_attention_context_split_equals_the_concatenated_context():
    """W [h; mu; sigma] as W_h h + (W_mu mu + W_sigma sigma) is the same first layer."""
    torch.manual_seed(0)
    pool = AttentiveStatisticsPooling(6, attention_channels=4).double().eval()
    with torch.no_grad():
        pool.attention[2].running_mean.normal_()
    x = torch.randn(2, 25, 6, dtype=torch.float64)
    assert torch.allclose(pool.forward_btc(x), pool(x.transpose(1, 2).contiguous()), atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("gemm", ["mkl", "onednn"])
def test_compiled_encoder_trains_like_eager(tmp_path, gemm):
    """train.compile: the same loss at the first step, close ones after, the same checkpoint keys
    (with either GEMM library: the oneDNN one is a custom op that inductor must call as it is)."""
    import csv

    from toydata import make_toy_train_dir, toy_config

    from pyspk.train.config import config_from_dict
    from pyspk.train.trainer import train

    make_toy_train_dir(tmp_path / "d", num_speakers=6, utts_per_speaker=4, num_frames=60, feat_dim=20)
    losses, keys = {}, {}
    for compiled in (False, True):
        d = toy_config("tdnn", train={"epochs": 1, "steps_per_epoch": 4, "compile": compiled, "gemm": gemm})
        train(config_from_dict(d), tmp_path / "d", tmp_path / f"e{compiled}", 0)
        losses[compiled] = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / f"e{compiled}" / "train.csv"))]
        keys[compiled] = list(torch.load(tmp_path / f"e{compiled}" / "final.pt", weights_only=True)["state_dict"])
    assert keys[True] == keys[False]
    assert len(losses[True]) == len(losses[False]) == 4
    # the first step sees the same weights; later ones drift by float rounding, amplified by training
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5)
    assert np.allclose(losses[True], losses[False], rtol=2e-2)


def test_ark_reader_matches_kaldiio(tmp_path):
    rng = np.random.default_rng(0)
    mats = {
        "a": rng.normal(size=(7, 3)).astype(np.float32),
        "b": rng.normal(size=(1, 3)).astype(np.float32),
        "c": rng.normal(size=(5, 2)).astype(np.float64),
    }
    vecs = {"a": rng.normal(size=7).astype(np.float32), "b": np.zeros(1, np.float32)}
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'm.ark'},{tmp_path / 'm.scp'}") as w:
        for k, m in mats.items():
            w(k, m)
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'v.ark'},{tmp_path / 'v.scp'}") as w:
        for k, v in vecs.items():
            w(k, v)
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'c.ark'},{tmp_path / 'c.scp'}", compression_method=2) as w:
        w("z", mats["a"])
    reader = ArkReader()
    for scp in ("m.scp", "v.scp", "c.scp"):
        for line in (tmp_path / scp).read_text().splitlines():
            key, spec = line.split(maxsplit=1)
            got, want = reader(spec), kaldiio.load_mat(spec)
            assert got.dtype == want.dtype and got.shape == want.shape, (scp, key)
            if scp == "c.scp":  # decoded as Kaldi does (to the bit: test_kaldi_readers.py); kaldiio rounds otherwise
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"{scp} {key}")
            else:
                assert np.array_equal(got, want), (scp, key)
    reader.close()


def test_ark_reader_reports_a_truncated_ark(tmp_path):
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'm.ark'},{tmp_path / 'm.scp'}") as w:
        w("a", np.ones((50, 4), np.float32))
    data = (tmp_path / "m.ark").read_bytes()
    (tmp_path / "m.ark").write_bytes(data[:-40])
    spec = (tmp_path / "m.scp").read_text().split()[1]
    with pytest.raises(ValueError, match="truncated"):
        ArkReader()(spec)
