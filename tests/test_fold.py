"""BatchNorm folding for inference (pyspk/models/fold.py): the folded TDNN is the eval model."""

import pytest
import torch

from pyspk.models import build_encoder
from pyspk.models.ecapa_tdnn import EcapaTdnn
from pyspk.models.fold import FoldedTdnn, for_inference


def _trained_like_tdnn(seed=0, **kw):
    """A TDNN whose BatchNorms are far from the identity (random statistics and affine), eval mode."""
    torch.manual_seed(seed)
    m = build_encoder(
        "tdnn",
        feat_dim=kw.get("feat_dim", 20),
        channels=kw.get("channels", 16),
        stats_channels=kw.get("stats_channels", 24),
        embed_dim=kw.get("embed_dim", 8),
    )
    for layer in m.frame_layers:
        bn = layer.bn
        c = bn.num_features
        bn.running_mean.copy_(torch.rand(c) * 2)
        bn.running_var.copy_(torch.rand(c) * 3 + 0.1)
        bn.weight.data.copy_(torch.randn(c))  # negative gammas too: |a| in the std path
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
    m.frame_layers[-1].bn.weight.data[3] = 0.0  # gamma = 0: a constant channel
    m.frame_layers[1].bn.weight.data[2] = 0.0
    x = torch.randn(2, 33, 20, dtype=torch.float64)
    with torch.no_grad():
        ref = m.forward_reference(x)
    got = FoldedTdnn(m)(x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_embed_list_takes_mixed_lengths_in_one_buffer():
    """Utterances of every length at once (shorter than the widest context too): each the
    per-utterance eval model's embedding, in any order."""
    m = _trained_like_tdnn(seed=7)
    m.frame_layers[2].bn.weight.data[1] = 0.0  # a dead channel feeding a Winograd layer
    folded = FoldedTdnn(m)
    torch.manual_seed(1)
    xs = [torch.randn(t, 20, dtype=torch.float64) for t in (1, 2, 3, 5, 7, 40, 203, 4, 11, 12, 13)]
    with torch.no_grad():
        ref = torch.cat([m.forward_reference(x[None]) for x in xs])
    torch.testing.assert_close(folded.embed_list(xs), ref, rtol=1e-10, atol=1e-10)
    order = torch.randperm(len(xs)).tolist()
    torch.testing.assert_close(folded.embed_list([xs[i] for i in order]), ref[order], rtol=1e-10, atol=1e-10)


def test_embed_list_float32_at_recipe_widths():
    torch.manual_seed(2)
    m = build_encoder("tdnn", feat_dim=80, channels=128, stats_channels=384, embed_dim=128).eval()
    xs = [torch.randn(t, 80) for t in (150, 447, 9, 801)]
    with torch.no_grad():
        ref = torch.cat([m.forward_reference(x[None]) for x in xs])
    got = FoldedTdnn(m).embed_list(xs)
    assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_embed_list_rejects_bad_input():
    folded = FoldedTdnn(_trained_like_tdnn().float())
    with pytest.raises(ValueError, match="at least one"):
        folded.embed_list([])
    with pytest.raises(ValueError, match="frames >= 1"):
        folded.embed_list([torch.zeros(5, 20), torch.zeros(0, 20)])
    with pytest.raises(ValueError, match="20"):
        folded.embed_list([torch.zeros(5, 21)])


def test_embedder_ragged_calls_and_chunks_match_the_eval_model():
    """The extractor's path for the folded TDNN: windows of chunked utterances and whole ones
    in calls of at most RAGGED_FRAMES frames (one window may exceed it alone)."""
    import numpy as np

    from pyspk.embed.extractor import ChunkConfig, Embedder

    m = _trained_like_tdnn(seed=9).float()
    emb = Embedder(m, {"cmn": False}, ChunkConfig(max_frames=120, chunk_frames=50, chunk_hop=40), "cpu")
    emb.RAGGED_FRAMES = 100
    rng = np.random.default_rng(0)
    items = [(f"u{i}", rng.normal(size=(t, 20)).astype(np.float32)) for i, t in enumerate((30, 130, 80, 7, 260, 45))]
    got = emb.embed_prepared(items)

    def reference(x):
        starts, size = ([0], x.shape[0]) if x.shape[0] <= 120 else (list(range(0, x.shape[0] - 50 + 1, 40)), 50)
        if starts[-1] != x.shape[0] - size:
            starts.append(x.shape[0] - size)
        with torch.no_grad():
            return np.mean(
                [m.forward_reference(torch.from_numpy(x[s : s + size])[None])[0].numpy() for s in starts], axis=0
            )

    for (utt, x), e in zip(items, got):
        np.testing.assert_allclose(e, reference(x), rtol=1e-4, atol=1e-5, err_msg=utt)
