"""Encoders: shapes, determinism, variable lengths, checkpoints, pooling by hand."""

from __future__ import annotations

import pytest
import torch

from pyspk.models import build_encoder, encoder_kwargs, load_encoder, save_encoder
from pyspk.models.pooling import AttentiveStatisticsPooling, StatisticsPooling

# Small widths so the tests run in seconds on CPU; the architecture is the same.
SMALL = {
    "ecapa_tdnn": {"channels": 32, "embed_dim": 24, "mfa_channels": 48, "attention_channels": 8, "se_channels": 8},
    "tdnn": {"channels": 32, "stats_channels": 48, "embed_dim": 24},
    "resnet34": {"base_channels": 4, "embed_dim": 24},
}
FEAT_DIM = 40


def _build(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_encoder(name, feat_dim=FEAT_DIM, **{**SMALL[name], **extra})


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("frames", [37, 200])
def test_output_shape_and_embed_dim(name, frames):
    model = _build(name).eval()
    out = model(torch.randn(3, frames, FEAT_DIM))
    assert out.shape == (3, 24) and model.embed_dim == 24
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,dim", [("ecapa_tdnn", 192), ("tdnn", 512), ("resnet34", 256)])
def test_default_embedding_sizes(name, dim):
    kwargs = {
        "ecapa_tdnn": {"channels": 64},
        "tdnn": {"channels": 32, "stats_channels": 64},
        "resnet34": {"base_channels": 4},
    }[name]
    model = build_encoder(name, **kwargs).eval()
    assert model.embed_dim == dim
    assert model(torch.randn(2, 50, 80)).shape == (2, dim)


def test_ecapa_paper_sizes():
    # Desplanques et al. 2020, Table 1: 6.2M parameters for C=512, 14.7M for C=1024.
    for channels, millions in ((512, 6.2), (1024, 14.7)):
        n = sum(p.numel() for p in build_encoder("ecapa_tdnn", channels=channels).parameters())
        assert n / 1e6 == pytest.approx(millions, abs=0.1)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_initialisation_is_deterministic(name):
    x = torch.randn(2, 60, FEAT_DIM)
    a, b, c = _build(name, seed=5).eval(), _build(name, seed=5).eval(), _build(name, seed=6).eval()
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_utterance_embedding_independent_of_batch(name):
    # in eval mode each utterance's embedding depends on its own frames only, whatever its length
    model = _build(name).eval()
    long, short = torch.randn(1, 90, FEAT_DIM), torch.randn(1, 41, FEAT_DIM)
    pair = model(torch.cat([long, long], 0))
    assert torch.allclose(pair[0], model(long)[0], atol=1e-5)
    assert model(short).shape == (1, 24)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_save_load_round_trip(tmp_path, name):
    model = _build(name)
    model.train()
    model(torch.randn(4, 50, FEAT_DIM))  # move BN running stats away from their init
    model.eval()
    kwargs = {"feat_dim": FEAT_DIM, **SMALL[name]}
    extra = {"features": {"cmn": True, "cmn_window": None, "vad": False}, "speakers": ["a", "b"]}
    path = tmp_path / "exp" / "final.pt"
    save_encoder(path, model, name, kwargs, extra)
    assert [p.name for p in path.parent.iterdir()] == ["final.pt"]  # no temporary left behind
    loaded, ckpt = load_encoder(path)
    assert not loaded.training
    assert ckpt["encoder"] == name and ckpt["encoder_kwargs"] == kwargs and ckpt["extra"] == extra
    x = torch.randn(2, 73, FEAT_DIM)
    assert torch.equal(model(x), loaded(x))


def test_save_unwraps_ddp_style_module(tmp_path):
    model = _build("tdnn").eval()
    wrapper = torch.nn.Module()
    wrapper.module = model
    save_encoder(tmp_path / "m.pt", wrapper, "tdnn", {"feat_dim": FEAT_DIM, **SMALL["tdnn"]}, {})
    loaded, _ = load_encoder(tmp_path / "m.pt")
    x = torch.randn(1, 30, FEAT_DIM)
    assert torch.equal(model(x), loaded(x))


def test_bad_names_and_options_name_the_nearest():
    with pytest.raises(ValueError, match="'ecapa_tdnn'"):
        build_encoder("ecapa-tdnn")
    with pytest.raises(ValueError, match="'resnet34'"):
        build_encoder("resnet")
    with pytest.raises(ValueError, match="'base_channels'"):
        build_encoder("resnet34", base_chanels=8)
    assert "channels" in encoder_kwargs("ecapa_tdnn")
    with pytest.raises(ValueError, match="divisible"):
        build_encoder("ecapa_tdnn", channels=36)


def test_wrong_feature_shape_is_reported():
    model = _build("ecapa_tdnn")
    with pytest.raises(ValueError, match=f"\\(batch, frames, {FEAT_DIM}\\)"):
        model(torch.randn(2, FEAT_DIM + 1, 50))


def test_checkpoint_errors(tmp_path):
    model = _build("tdnn")
    with pytest.raises(TypeError, match=r"extra\['when'\]"):
        save_encoder(tmp_path / "a.pt", model, "tdnn", SMALL["tdnn"], {"when": object()})
    assert not (tmp_path / "a.pt").exists()
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_encoder(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_encoder(bad)
    torch.save({"state_dict": {}}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing encoder"):
        load_encoder(tmp_path / "partial.pt")


def test_statistics_pooling_by_hand():
    x = torch.tensor([[[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 0.0]]])  # (1, 2 channels, 4 frames)
    out = StatisticsPooling(2)(x)
    # mean 3, population variance (4+1+0+9)/4 = 3.5; the zero channel hits the variance floor
    assert torch.allclose(out, torch.tensor([[3.0, 0.0, 3.5**0.5, 1e-5**0.5]]), atol=1e-6)


def test_attentive_pooling_with_uniform_attention_is_statistics_pooling():
    torch.manual_seed(0)
    pool = AttentiveStatisticsPooling(6, attention_channels=4).eval()
    x = torch.randn(2, 6, 25)
    with torch.no_grad():
        pool.attention[-1].weight.zero_()
        pool.attention[-1].bias.zero_()  # equal scores: softmax gives 1/T per frame
    assert torch.allclose(pool(x), StatisticsPooling(6)(x), atol=1e-5)
    with torch.no_grad():
        pool.attention[-1].bias[0] = 0.0
        pool.attention[-1].weight.normal_()
    assert not torch.allclose(pool(x), StatisticsPooling(6)(x), atol=1e-3)
