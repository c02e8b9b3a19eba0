"""Thin ResNet34 speaker encoder (He et al. 2016 basic blocks; the "thin" speaker
variant with a quarter of the ImageNet widths, as in Chung et al. 2020 and Zeinali et
al. 2019's ResNet r-vectors).

    (B, T, F) -> (B, 1, F, T) -> Conv3x3(1 -> c) + BN + ReLU
              -> stage1: 3 basic blocks, c channels,  stride 1
              -> stage2: 4 basic blocks, 2c channels, stride 2
              -> stage3: 6 basic blocks, 4c channels, stride 2
              -> stage4: 3 basic blocks, 8c channels, stride 2     -> (B, 8c, F', T')
              -> flatten channels x frequency -> (B, 8c*F', T')
              -> statistics pooling over time (mean, std)         -> 2*8c*F'
              -> Linear -> embed_dim (256)

c = ``base_channels`` = 32 gives the thin ResNet34 (channels 32/64/128/256);
F' = F halved (rounding up) three times, 10 for 80 filterbanks.

The weights and activations are kept channels-last (``torch.channels_last``, NHWC),
the layout oneDNN's CPU convolutions run fastest in (faster than NCHW, docs/speed.md);
the maths and the checkpoint keys are those of the NCHW model
(:meth:`ResNet34.forward_reference`, tests hold the two equal). Models narrower than
``CHANNELS_LAST_MIN`` base channels stay NCHW: with torch 2.13's oneDNN the channels-last
backward of their convolutions aborts the process ("double free or corruption"; seen
with 2, 4, 8 and 12 base channels, not with 16, 20, 24, 32, 40 or 64).
"""

from __future__ import annotations

import torch
from torch import nn

from pyspk.models import ENCODERS

from .pooling import StatisticsPooling


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BN; ReLU after the residual sum. A 1x1 strided
    convolution + BN projects the shortcut when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


CHANNELS_LAST_MIN = 16


def _halve(n: int) -> int:
    """Output size of a 3x3, stride-2, padding-1 convolution."""
    return (n - 1) // 2 + 1


@ENCODERS.register("resnet34")
class ResNet34(nn.Module):
    """Thin ResNet34: (B, T, feat_dim) -> (B, embed_dim). See the module docstring."""

    def __init__(
        self,
        feat_dim: int = 80,
        base_channels: int = 32,
        embed_dim: int = 256,
        num_blocks: tuple[int, ...] = (3, 4, 6, 3),
    ):
        super().__init__()
        if min(feat_dim, base_channels, embed_dim) <= 0 or len(num_blocks) != 4 or min(num_blocks) <= 0:
            raise ValueError(
                f"ResNet34: bad sizes feat_dim={feat_dim} base_channels={base_channels} "
                f"embed_dim={embed_dim} num_blocks={num_blocks} (want 4 positive stage depths)"
            )
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        c = base_channels
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        stages = []
        in_ch = c
        for i, depth in enumerate(num_blocks):
            out_ch = c * 2**i
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_ch, out_ch, stride)] + [BasicBlock(out_ch, out_ch) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        freq_out = _halve(_halve(_halve(feat_dim)))
        self.pooling = StatisticsPooling(in_ch * freq_out)
        self.embedding = nn.Linear(self.pooling.out_dim, embed_dim)
        self.memory_format = torch.channels_last if c >= CHANNELS_LAST_MIN else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, feat_dim) -> (B, embed_dim), activations channels-last (see the module docstring)."""
        return self._forward(feats, self.memory_format)

    def forward_reference(self, feats: torch.Tensor) -> torch.Tensor:
        """The same maths with an NCHW input: the reference for tests (an NCHW result needs
        NCHW weights too: ``model.to(memory_format=torch.contiguous_format)``)."""
        return self._forward(feats, torch.contiguous_format)

    def _forward(self, feats: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        if feats.dim() != 3 or feats.shape[-1] != self.feat_dim:
            raise ValueError(f"ResNet34 expects (batch, frames, {self.feat_dim}) features, got {tuple(feats.shape)}")
        x = feats.transpose(1, 2).unsqueeze(1).contiguous(memory_format=memory_format)
        x = self.stages(self.stem(x))  # (B, C, F', T')
        x = x.flatten(1, 2)
        return self.embedding(self.pooling(x))
