"""Layers shared by the encoders, and the two layouts they run in.

Frames as columns, (B, C, T), is the layout of the papers' figures and of ``nn.Conv1d``.
Frames as rows, (B, T, C), turns every kernel-1 convolution into one (B*T, C_in) x
(C_in, C_out) GEMM, which MKL runs at 1.3-1.9x the FLOP/s of ``conv1d`` with kernel 1 on
this kind of CPU (docs/speed.md). The weights are the same ``nn.Conv1d`` /
``nn.BatchNorm1d`` modules in both layouts, so checkpoints do not depend on the layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def linear_1x1(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 ``Conv1d`` applied along the last axis of ``x`` (..., C_in) -> (..., C_out):
    the same weights and maths as ``conv`` on the transposed input, run as one GEMM."""
    return F.linear(x, conv.weight.squeeze(-1), conv.bias)


def tap_range(shift: int, t: int) -> tuple[int, int]:
    """Output frames [lo, hi) of a T-frame utterance whose tap, reading input frame
    ``frame + shift``, falls inside the utterance (lo <= hi <= t; the rest read the zero padding)."""
    lo = min(t, max(0, -shift))
    return lo, max(lo, min(t, t - shift))


def conv_rows(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (any kernel size and dilation, stride 1, zero padding that keeps T) on frames
    as rows: (B, T, C_in) -> (B, T, C_out), the same sums as ``conv1d``, run as GEMMs. Unlike
    oneDNN's convolution it needs no kernel compiled per input length (which made extraction
    of variable-length utterances slow: each new length built new primitives).

    * training (autograd): the k dilated shifts of the zero-padded input side by side,
      (B, T, k*C_in), times the weights reshaped to (C_out, k*C_in): one GEMM;
    * inference, one utterance: the centre tap's GEMM, then each other tap's GEMM added in
      place to the frames it reaches (no column copy at all);
    * inference, a batch: the columns filled in place (one copy per tap), one GEMM.
    """
    k, d = conv.kernel_size[0], conv.dilation[0]
    if k == 1:
        return linear_1x1(conv, x)
    pad, t, c = conv.padding[0], x.shape[1], x.shape[2]
    w = conv.weight
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        xp = F.pad(x, (0, 0, pad, pad))
        cols = torch.cat([xp[:, i * d:i * d + t] for i in range(k)], dim=-1)
        return F.linear(cols, w.permute(0, 2, 1).reshape(conv.out_channels, k * c), conv.bias)
    taps = [(i, i * d - pad) for i in range(k)]   # frame s of tap i reads input frame s + shift
    if x.shape[0] == 1 and pad == d * (k - 1) // 2 and k % 2 == 1:
        x2 = x[0]
        centre = k // 2
        out = F.linear(x2, w[:, :, centre], conv.bias)
        for i, shift in taps:
            lo, hi = tap_range(shift, t)
            if i != centre and hi > lo:
                out[lo:hi].addmm_(x2[lo + shift:hi + shift], w[:, :, i].t())
        return out.unsqueeze(0)
    cols = x.new_empty(x.shape[0], t, k * c)
    for i, shift in taps:
        lo, hi = tap_range(shift, t)
        dst = cols[:, :, i * c:(i + 1) * c]
        dst[:, lo:hi] = x[:, lo + shift:hi + shift]
        dst[:, :lo] = 0
        dst[:, hi:] = 0
    return F.linear(cols, w.permute(0, 2, 1).reshape(conv.out_channels, k * c), conv.bias)


def bn_last(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """``bn`` over the last axis of (B, T, C): per-channel statistics over B and T, exactly
    those of ``bn`` on the (B, C, T) transpose (BatchNorm1d takes (N, C) input)."""
    return bn(x.reshape(-1, x.shape[-1])).view(x.shape)


class ConvReluBn(nn.Module):
    """Conv1d + ReLU + BatchNorm1d: ECAPA's "TDNN layer" and the x-vector's frame layer.
    Edge frames are zero-padded so the output keeps T frames."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm1d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T) -> (B, C_out, T)."""
        return self.bn(self.relu(self.conv(x)))

    def forward_btc(self, x: torch.Tensor) -> torch.Tensor:
        """The same layer on (B, T, C) input and output: one GEMM (:func:`conv_rows`)."""
        h = conv_rows(self.conv, x)
        h = torch.relu(h) if h.requires_grad else torch.relu_(h)   # in place when nothing keeps h
        return bn_last(self.bn, h)
