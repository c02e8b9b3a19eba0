"""Layers shared by the encoders, and the two layouts they run in.

Frames as columns, (B, C, T), is the layout of the papers' figures and of ``nn.Conv1d``.
Frames as rows, (B, T, C), turns every kernel-1 convolution into one (B*T, C_in) x
(C_in, C_out) GEMM, which MKL runs at a higher FLOP/s than ``conv1d`` with kernel 1 on
(B, C, T) on CPUs (docs/speed.md). The weights are the same ``nn.Conv1d`` /
``nn.BatchNorm1d`` modules in both layouts, so checkpoints do not depend on the layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GEMM_BACKENDS = ("mkl", "onednn")
_backend = "mkl"


def set_gemm_backend(name: str) -> None:
    """Which library runs the frames-as-rows float32 GEMMs under autograd: ``mkl`` (``F.linear``)
    or ``onednn`` (:func:`_dnn_rows`). The same sums either way, rounded differently. A process
    setting (the trainer's ``train.gemm``); inference always runs ``F.linear``."""
    global _backend
    if name not in GEMM_BACKENDS:
        raise ValueError(f"GEMM backend {name!r}: want one of {', '.join(GEMM_BACKENDS)}")
    _backend = name


def default_gemm_backend() -> str:
    """``train.gemm: auto``: onednn on AMD CPUs, whose MKL float32 GEMM is slower than
    oneDNN's at the encoders' shapes (docs/speed.md); mkl elsewhere (on Intel CPUs MKL is the
    faster)."""
    try:
        with open("/proc/cpuinfo") as f:
            amd = any(line.startswith("vendor_id") and "AuthenticAMD" in line for line in f)
    except OSError:
        amd = False
    return "onednn" if amd else "mkl"


@torch.library.custom_op("pyspk::dnn_rows", mutates_args=())
def _dnn_rows(x2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(N, C_in) rows times w (C_out, C_in)^T through oneDNN: the rows are read in place as a
    channels-last (1, C_in, N, 1) image and convolved with a 1x1 kernel, a plain GEMM there.
    A custom op, so that torch.compile calls it as it is instead of re-laying out its operands
    around a convolution (which cost more copies than the faster GEMM saved)."""
    n, c = x2.shape
    y = F.conv2d(x2.view(1, n, 1, c).permute(0, 3, 1, 2), w.reshape(w.shape[0], c, 1, 1))
    return y.permute(0, 2, 3, 1).reshape(n, w.shape[0]).contiguous()


@_dnn_rows.register_fake
def _(x2, w):
    return x2.new_empty(x2.shape[0], w.shape[0])


def _dnn_rows_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _dnn_rows_backward(ctx, gy):
    """The input gradient through oneDNN's forward GEMM too (oneDNN's own convolution backward is
    slower than both libraries' forward GEMMs), the weight gradient, a (C_out x N)(N x C_in)
    product, in MKL."""
    x2, w = ctx.saved_tensors
    gy = gy.contiguous()
    dx = _dnn_rows(gy, w.t().contiguous()) if ctx.needs_input_grad[0] else None
    dw = gy.t().mm(x2) if ctx.needs_input_grad[1] else None
    return dx, dw


_dnn_rows.register_autograd(_dnn_rows_backward, setup_context=_dnn_rows_setup)


def gemm(x: torch.Tensor, w: torch.Tensor, b=None) -> torch.Tensor:
    """``F.linear(x, w, b)`` over the last axis, by the library :func:`set_gemm_backend` chose
    (oneDNN only when autograd records the product; inference stays in ``F.linear``)."""
    if (
        _backend == "onednn"
        and torch.is_grad_enabled()
        and (x.requires_grad or w.requires_grad)
        and x.dtype == torch.float32
        and w.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    ):
        y = _dnn_rows(x.reshape(-1, x.shape[-1]).contiguous(), w).view(*x.shape[:-1], w.shape[0])
        return y if b is None else y + b
    return F.linear(x, w, b)


def linear_1x1(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 ``Conv1d`` applied along the last axis of ``x`` (..., C_in) -> (..., C_out):
    the same weights and maths as ``conv`` on the transposed input, run as one GEMM."""
    return gemm(x, conv.weight.squeeze(-1), conv.bias)


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
        cols = torch.cat([xp[:, i * d : i * d + t] for i in range(k)], dim=-1)
        return gemm(cols, w.permute(0, 2, 1).reshape(conv.out_channels, k * c), conv.bias)
    taps = [(i, i * d - pad) for i in range(k)]  # frame s of tap i reads input frame s + shift
    if x.shape[0] == 1 and pad == d * (k - 1) // 2 and k % 2 == 1:
        x2 = x[0]
        centre = k // 2
        out = F.linear(x2, w[:, :, centre], conv.bias)
        for i, shift in taps:
            lo, hi = tap_range(shift, t)
            if i != centre and hi > lo:
                out[lo:hi].addmm_(x2[lo + shift : hi + shift], w[:, :, i].t())
        return out.unsqueeze(0)
    cols = x.new_empty(x.shape[0], t, k * c)
    for i, shift in taps:
        lo, hi = tap_range(shift, t)
        dst = cols[:, :, i * c : (i + 1) * c]
        dst[:, lo:hi] = x[:, lo + shift : hi + shift]
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
        h = torch.relu(h) if h.requires_grad else torch.relu_(h)  # in place when nothing keeps h
        return bn_last(self.bn, h)
