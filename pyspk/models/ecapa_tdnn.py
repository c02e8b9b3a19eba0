"""ECAPA-TDNN speaker encoder (Desplanques, Thienpondt, Demuynck, Interspeech 2020).

Layout (C = ``channels``, 512 or 1024 in the paper; small values such as 64-256
give a fast CPU model):

    (B, T, F) -> transpose -> Conv1D(k=5) + ReLU + BN                     -> C x T
              -> SE-Res2Block(k=3, d=2) -> SE-Res2Block(k=3, d=3) -> SE-Res2Block(k=3, d=4)
                 (each: 1x1 conv, Res2 dilated conv with ``scale`` groups, 1x1 conv,
                 squeeze-excitation, residual; the input of block j is the sum of the
                 outputs of the first layer and of blocks < j: §3.3 "summed residuals")
              -> multi-layer feature aggregation: concat of the 3 block outputs,
                 Conv1D(k=1) to ``mfa_channels`` (1536 in the paper) + ReLU
              -> channel- and context-dependent attentive statistics pooling -> 2*mfa
              -> BN -> FC(embed_dim = 192) -> BN                              -> (B, 192)

Two layouts, one set of weights. :meth:`EcapaTdnn.forward` keeps the frames as rows,
(B, T, C): every convolution, kernel 1 or dilated, is then one GEMM over the spliced
context (:mod:`pyspk.models.layers`), which MKL runs faster than ``conv1d`` on (B, C, T)
on CPU and which needs no kernel compiled per utterance length (docs/speed.md); BatchNorm
normalises the last axis of a (B*T, C) view. The attention's global context is applied
without building the (B, T, 3C) concat: W [h_t; mu; sigma] = W_h h_t + (W_mu mu + W_sigma
sigma), the second term once per utterance. :meth:`EcapaTdnn.forward_reference` is the
textbook (B, C, T) form of the same maths; tests hold the two equal (outputs, gradients).
"""

from __future__ import annotations

import torch
from torch import nn

from pyspk.models import ENCODERS

from .layers import ConvReluBn, linear_1x1
from .pooling import AttentiveStatisticsPooling


class Res2Conv(nn.Module):
    """Res2Net dilated convolution (Gao et al. 2019): split the channels into
    ``scale`` groups x_1..x_s; y_1 = x_1, y_2 = K_2(x_2), y_i = K_i(x_i + y_{i-1});
    output concat(y_1..y_s). Each K_i is Conv1d(k, dilation) + ReLU + BN."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int):
        super().__init__()
        if channels % scale:
            raise ValueError(f"ECAPA-TDNN: channels={channels} must be divisible by scale={scale}")
        self.scale = scale
        width = channels // scale
        self.convs = nn.ModuleList(ConvReluBn(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, 1, lambda conv, h: conv(h))

    def forward_btc(self, x: torch.Tensor) -> torch.Tensor:
        """The same on (B, T, C): the groups are slices of the last axis."""
        return self._run(x, -1, lambda conv, h: conv.forward_btc(h))

    def _run(self, x: torch.Tensor, dim: int, apply) -> torch.Tensor:
        chunks = torch.chunk(x, self.scale, dim=dim)
        outs = [chunks[0]]
        y = None
        for i, conv in enumerate(self.convs, start=1):
            y = apply(conv, chunks[i] if y is None else chunks[i] + y)
            outs.append(y)
        return torch.cat(outs, dim=dim)


class SqueezeExcitation(nn.Module):
    """SE block (Hu et al. 2018): s = sigmoid(W2 relu(W1 mean_t(h))); h * s per channel."""

    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        self.fc1 = nn.Conv1d(channels, bottleneck, kernel_size=1)
        self.fc2 = nn.Conv1d(bottleneck, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=-1, keepdim=True)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * s

    def forward_btc(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=1)
        s = torch.sigmoid(linear_1x1(self.fc2, torch.relu(linear_1x1(self.fc1, s))))
        return x * s.unsqueeze(1)


class SERes2Block(nn.Module):
    """1x1 ConvReluBn -> Res2Conv -> 1x1 ConvReluBn -> SE, plus the residual input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int, se_channels: int):
        super().__init__()
        self.conv1 = ConvReluBn(channels, channels, 1)
        self.res2 = Res2Conv(channels, kernel_size, dilation, scale)
        self.conv2 = ConvReluBn(channels, channels, 1)
        self.se = SqueezeExcitation(channels, se_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se(self.conv2(self.res2(self.conv1(x))))

    def forward_btc(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1.forward_btc(x)
        h = self.res2.forward_btc(h)
        return x + self.se.forward_btc(self.conv2.forward_btc(h))


@ENCODERS.register("ecapa_tdnn")
class EcapaTdnn(nn.Module):
    """ECAPA-TDNN: (B, T, feat_dim) -> (B, embed_dim). See the module docstring."""

    def __init__(
        self,
        feat_dim: int = 80,
        channels: int = 512,
        embed_dim: int = 192,
        scale: int = 8,
        dilations: tuple[int, ...] = (2, 3, 4),
        mfa_channels: int | None = None,
        attention_channels: int = 128,
        se_channels: int = 128,
        global_context: bool = True,
        sum_residuals: bool = True,
    ):
        super().__init__()
        if channels <= 0 or embed_dim <= 0 or feat_dim <= 0:
            raise ValueError(
                f"ECAPA-TDNN: feat_dim, channels and embed_dim must be positive, got "
                f"{feat_dim}, {channels}, {embed_dim}"
            )
        # The paper uses 1536 for both C=512 and C=1024; small CPU models use 3C.
        if mfa_channels is None:
            mfa_channels = 1536 if channels >= 512 else 3 * channels
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.sum_residuals = sum_residuals
        self.layer1 = ConvReluBn(feat_dim, channels, kernel_size=5)
        self.blocks = nn.ModuleList(SERes2Block(channels, 3, d, scale, min(se_channels, channels)) for d in dilations)
        self.mfa = nn.Sequential(nn.Conv1d(channels * len(dilations), mfa_channels, kernel_size=1), nn.ReLU())
        self.pooling = AttentiveStatisticsPooling(mfa_channels, attention_channels, global_context)
        self.bn_pool = nn.BatchNorm1d(2 * mfa_channels)
        self.fc = nn.Linear(2 * mfa_channels, embed_dim)
        self.bn_embed = nn.BatchNorm1d(embed_dim)

    def _check(self, feats: torch.Tensor) -> None:
        if feats.dim() != 3 or feats.shape[-1] != self.feat_dim:
            raise ValueError(f"ECAPA-TDNN expects (batch, frames, {self.feat_dim}) features, got {tuple(feats.shape)}")

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, feat_dim) -> (B, embed_dim), frames as rows (see the module docstring)."""
        self._check(feats)
        outs = self._block_outputs(self.layer1.forward_btc(feats), lambda block, h: block.forward_btc(h))
        x = torch.relu(linear_1x1(self.mfa[0], torch.cat(outs, dim=-1)))
        x = self.bn_pool(self.pooling.forward_btc(x))
        return self.bn_embed(self.fc(x))

    def forward_reference(self, feats: torch.Tensor) -> torch.Tensor:
        """The same maths in the (B, C, T) layout of the paper's figure: the reference for tests."""
        self._check(feats)
        outs = self._block_outputs(self.layer1(feats.transpose(1, 2)), lambda block, h: block(h))
        x = self.mfa(torch.cat(outs, dim=1))
        x = self.bn_pool(self.pooling(x))
        return self.bn_embed(self.fc(x))

    def _block_outputs(self, x: torch.Tensor, apply) -> list:
        """The SE-Res2Blocks' outputs; block j sees the sum of the first layer's and blocks < j's."""
        outs = []
        block_in = x
        for block in self.blocks:
            y = apply(block, block_in)
            outs.append(y)
            block_in = block_in + y if self.sum_residuals else y
        return outs
