"""BatchNorm folded into the weights for inference: the x-vector TDNN with no BatchNorm pass.

In eval mode every frame layer of :class:`~pyspk.models.tdnn.XVectorTdnn` ends in an affine map
per channel, y = a * relu(h) + b (a = gamma / sqrt(var + eps), b = beta - a * mean). It follows
the ReLU, so it folds forward into what reads y:

* the next convolution, taps W_k (zero padding keeps T frames):
      sum_k W_k y[t + s_k] + c = sum_k (W_k diag a) r[t + s_k] + (c + sum_k W_k b)
                                 - sum_{k: t + s_k outside [0, T)} W_k b
  the last term is the padding: a zero-padded frame of y is not a + b * 0, so the taps that
  fall outside the utterance take their W_k b back out (a few rows at each edge);
* the statistics pooling and segment6 after the last layer: mean(a r + b) = a mean(r) + b and
  std(a r + b) = |a| std(r), so segment6's weights take diag(a) and diag(|a|), its bias W_mean b,
  and the variance floor becomes floor / a^2 per channel (sqrt(max(a^2 v, f)) = |a| sqrt(max(v, f / a^2))).

The result is the same function as the eval model within float rounding (tests/test_fold.py),
for inference only (no gradients, BatchNorm statistics frozen): :func:`for_inference` gives it
to the extractor. ECAPA-TDNN and ResNet34 are returned as they are (their BatchNorms feed
residual sums, Res2Net splits and SE gates; folding them is not done).
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from .layers import tap_range
from .pooling import _VAR_FLOOR
from .tdnn import XVectorTdnn


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return a, bn.bias - a * bn.running_mean


class _FoldedConv(nn.Module):
    """One frame layer's convolution with the previous layer's BatchNorm folded in (a, b),
    on frames as rows (B, T, C_in) -> (B, T, C_out), followed by the ReLU."""

    def __init__(self, conv: nn.Conv1d, a: torch.Tensor | None, b: torch.Tensor | None):
        super().__init__()
        w = conv.weight.detach().double()                      # (C_out, C_in, k)
        bias = conv.bias.detach().double()
        k = w.shape[2]
        edge = None
        if a is not None:
            a64, b64 = a.detach().double(), b.detach().double()
            edge = torch.einsum("oik,i->ko", w, b64)           # W_k b per tap: (k, C_out)
            bias = bias + edge.sum(0)
            w = w * a64[None, :, None]
        d, pad = conv.dilation[0], conv.padding[0]
        self.shifts = [i * d - pad for i in range(k)]     # output frame t reads input frame t + shift
        if 0 not in self.shifts:
            raise ValueError(f"folding needs a centred convolution, got kernel {k} dilation {d} padding {pad}")
        self.centre = self.shifts.index(0)
        dt = conv.weight.dtype                                  # folded in float64, kept in the model's dtype
        self.register_buffer("taps", w.permute(2, 1, 0).to(dt).contiguous())   # (k, C_in, C_out)
        self.register_buffer("bias", bias.to(dt))
        self.register_buffer("edge", None if edge is None else edge.to(dt))   # None: nothing folded in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C_in) -> (B, T, C_out), one utterance at a time (at one thread batching buys
        nothing: docs/speed.md), each as 2-D GEMMs added in place."""
        outs = [self._one(u) for u in x]
        return outs[0].unsqueeze(0) if len(outs) == 1 else torch.stack(outs)

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        out = torch.addmm(self.bias, x, self.taps[self.centre])
        for i, s in enumerate(self.shifts):
            if i == self.centre:
                continue
            lo, hi = tap_range(s, t)
            if hi > lo:
                out[lo:hi].addmm_(x[lo + s:hi + s], self.taps[i])
            if self.edge is not None:          # frames whose tap reads the padding: take W_k b back out
                out[:lo] -= self.edge[i]
                out[hi:] -= self.edge[i]
        return torch.relu_(out)


class FoldedTdnn(nn.Module):
    """:class:`XVectorTdnn` in eval mode with every BatchNorm folded (see the module docstring):
    (B, T, feat_dim) -> (B, embed_dim), inference only."""

    def __init__(self, model: XVectorTdnn):
        super().__init__()
        self.feat_dim, self.embed_dim = model.feat_dim, model.embed_dim
        layers: List[_FoldedConv] = []
        prev = None
        for layer in model.frame_layers:
            layers.append(_FoldedConv(layer.conv, *(prev if prev else (None, None))))
            prev = _bn_affine(layer.bn)
        self.frame_layers = nn.ModuleList(layers)
        a, b = (p.detach().double() for p in prev)
        w = model.segment6.weight.detach().double()
        c = a.shape[0]
        w_mean, w_std = w[:, :c] * a, w[:, c:] * a.abs()
        dt = model.segment6.weight.dtype
        self.register_buffer("w_mean", w_mean.t().to(dt).contiguous())
        self.register_buffer("w_std", w_std.t().to(dt).contiguous())
        bias = model.segment6.bias.detach().double() + w[:, :c] @ b
        dead = a == 0            # gamma = 0: the channel is the constant b, its std the floor's root
        bias = bias + w[:, c:][:, dead].sum(1) * _VAR_FLOOR ** 0.5
        floor = torch.where(dead, torch.ones_like(a), _VAR_FLOOR / torch.where(dead, torch.ones_like(a), a).pow(2))
        self.register_buffer("bias", bias.to(dt))
        self.register_buffer("var_floor", floor.to(dt))

    @torch.inference_mode()
    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.dim() != 3 or feats.shape[-1] != self.feat_dim:
            raise ValueError(f"TDNN expects (batch, frames, {self.feat_dim}) features, got {tuple(feats.shape)}")
        x = feats
        for layer in self.frame_layers:
            x = layer(x)
        mean = x.mean(dim=1)
        var = (x - mean.unsqueeze(1)).pow_(2).mean(dim=1)
        std = torch.maximum(var, self.var_floor).sqrt_()
        return torch.addmm(torch.addmm(self.bias, mean, self.w_mean), std, self.w_std)


def for_inference(model: nn.Module) -> nn.Module:
    """The fastest exact inference form of an eval-mode encoder: :class:`FoldedTdnn` for the
    x-vector TDNN, the model itself otherwise."""
    if isinstance(model, XVectorTdnn) and not model.training:
        return FoldedTdnn(model).to(next(model.parameters()).device)
    return model
