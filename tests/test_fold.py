"""BatchNorm folding for inference (pyspk/models/fold.py): the folded TDNN is the eval model."""

import pytest
import torch

from pyspk.models import build_encoder
from pyspk.models.ecapa_tdnn import EcapaTdnn
from pyspk.models.fold import FoldedTdnn, for_inference


def _trained_like_tdnn(seed=0, **kw):
    """A TDNN whose BatchNorms are far from the identity (random statistics and affine), eval mode."""
    torch.manual_seed(seed)
    m = build_encoder("tdnn", feat_dim=kw.get("feat_dim", 20), channels=kw.get("channels", 16),
                      stats_channels=kw.get("stats_channels", 24), embed_dim=kw.get("embed_dim", 8))
    for layer in m.frame_layers:
        bn = layer.bn
        c = bn.num_features
        bn.running_mean.copy_(torch.rand(c) * 2)
        bn.running_var.copy_(torch.rand(c) * 3 + 0.1)
        bn.weight.data.copy_(torch.randn(c))          # negative gammas too: |a| in the std path
        bn.bias.data.copy_(torch.randn(c))
    return m.double().eval()


@pytest.mark.parametrize("frames", [1, 2, 3, 5, 7, 40, 203])
@pytest.mark.parametrize("batch", [1, 3])
def test_folded_tdnn_is_the_eval_model(frames, batch):
    m = _trained_like_tdnn()
    folded = FoldedTdnn(m)
    x = torch.randn(batch, frames, 20, dtype=torch.float64)
    with torch.no_grad():
        ref = m.forward_reference(x)
    got = folded(x)
    # every edge case of the padding: utterances shorter than the widest context (5 and 3x3 taps)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_folded_tdnn_float32_close_and_floor_per_channel():
    m = _trained_like_tdnn(seed=3).float()
    # a constant input makes every frame equal: the std path sits on the variance floor
    x = torch.ones(1, 30, 20)
    with torch.no_grad():
        ref = m(x)
    torch.testing.assert_close(FoldedTdnn(m)(x), ref, rtol=1e-4, atol=1e-4)
    x = torch.randn(2, 57, 20)
    with torch.no_grad():
        ref = m(x)
    torch.testing.assert_close(FoldedTdnn(m)(x), ref, rtol=1e-4, atol=1e-4)


def test_for_inference_folds_only_eval_tdnn():
    m = _trained_like_tdnn().float()
    assert isinstance(for_inference(m), FoldedTdnn)
    m.train()
    assert for_inference(m) is m
    e = EcapaTdnn(feat_dim=20, channels=16, embed_dim=8).eval()
    assert for_inference(e) is e


def test_folded_rejects_wrong_feature_dim():
    folded = FoldedTdnn(_trained_like_tdnn().float())
    with pytest.raises(ValueError, match="20"):
        folded(torch.zeros(1, 10, 21))


def test_folded_tdnn_with_a_dead_channel():
    m = _trained_like_tdnn(seed=5)
    m.frame_layers[-1].bn.weight.data[3] = 0.0       # gamma = 0: a constant channel
    m.frame_layers[1].bn.weight.data[2] = 0.0
    x = torch.randn(2, 33, 20, dtype=torch.float64)
    with torch.no_grad():
        ref = m.forward_reference(x)
    got = FoldedTdnn(m)(x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
