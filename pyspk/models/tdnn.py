"""TDNN x-vector encoder (Snyder, Garcia-Romero, Sell, Povey, Khudanpur, ICASSP 2018).

Frame-level layers, each an affine map over a spliced context, ReLU, BatchNorm
(a dilated Conv1d is exactly a TDNN layer with a symmetric context):

    frame1  context [t-2, t+2]     k=5, d=1   -> 512
    frame2  context {t-2, t, t+2}  k=3, d=2   -> 512
    frame3  context {t-3, t, t+3}  k=3, d=3   -> 512
    frame4  context {t}            k=1        -> 512
    frame5  context {t}            k=1        -> 1500
    statistics pooling (mean and std over time)  -> 3000
    segment6 affine                             -> 512: the x-vector (taken before its ReLU)

:meth:`XVectorTdnn.forward` keeps frames as rows, (B, T, C): each layer is one GEMM over
the spliced context (:func:`pyspk.models.layers.conv_rows`), the statistics plain reductions;
:meth:`XVectorTdnn.forward_reference` is the all-(B, C, T) form, for tests.

Widths are configurable (``channels``, ``stats_channels``, ``embed_dim``) so a
small model trains quickly on CPU. The paper's segment7 and softmax belong to the
loss heads in :mod:`pyspk.losses.margin_softmax`, not to the encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from pyspk.models import ENCODERS

from .layers import ConvReluBn
from .pooling import StatisticsPooling

# (kernel_size, dilation) per frame-level layer: contexts [-2..2], [-2,0,2], [-3,0,3], {0}, {0}.
_FRAME_CONTEXTS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))


class TdnnLayer(ConvReluBn):
    """Affine over the spliced context + ReLU + BatchNorm. Frames at the edges are
    zero-padded so the output keeps T frames (Kaldi trims them instead; with
    utterance-level pooling the difference is a few edge frames)."""


@ENCODERS.register("tdnn")
class XVectorTdnn(nn.Module):
    """x-vector TDNN: (B, T, feat_dim) -> (B, embed_dim). See the module docstring."""

    def __init__(self, feat_dim: int = 80, channels: int = 512, stats_channels: int = 1500, embed_dim: int = 512):
        super().__init__()
        if min(feat_dim, channels, stats_channels, embed_dim) <= 0:
            raise ValueError(
                f"TDNN: widths must be positive, got feat_dim={feat_dim} channels={channels} "
                f"stats_channels={stats_channels} embed_dim={embed_dim}"
            )
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        widths = [feat_dim] + [channels] * 4 + [stats_channels]
        self.frame_layers = nn.Sequential(
            *(TdnnLayer(widths[i], widths[i + 1], k, d) for i, (k, d) in enumerate(_FRAME_CONTEXTS))
        )
        self.pooling = StatisticsPooling(stats_channels)
        self.segment6 = nn.Linear(2 * stats_channels, embed_dim)

    def _check(self, feats: torch.Tensor) -> None:
        if feats.dim() != 3 or feats.shape[-1] != self.feat_dim:
            raise ValueError(f"TDNN expects (batch, frames, {self.feat_dim}) features, got {tuple(feats.shape)}")

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, feat_dim) -> (B, embed_dim), frames as rows: every layer one GEMM."""
        self._check(feats)
        x = feats
        for layer in self.frame_layers:
            x = layer.forward_btc(x)
        return self.segment6(self.pooling.forward_btc(x))

    def forward_reference(self, feats: torch.Tensor) -> torch.Tensor:
        """The same maths with every layer on (B, C, T): the reference for tests."""
        self._check(feats)
        x = self.frame_layers(feats.transpose(1, 2))
        return self.segment6(self.pooling(x))
