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

Two more exact rewrites make it fast on CPU (bench/bench_extract.py, docs/speed.md):

* the ReLU is shifted, r' = max(h, -c) = relu(h + c) - c for the pre-activation h without its
  bias c: one pass that also writes the layer's output, and the constant c joins the BatchNorm's
  shift (b' = a c + b) in the next folding step;
* the convolutions with 5 and 3 taps run as Winograd F(4, 5) and F(6, 3)
  (:mod:`pyspk.models.winograd`): 2/5 and 4/9 of the direct products' FLOPs, on a buffer
  that holds many utterances of any lengths separated by zero rows (:meth:`FoldedTdnn.embed_list`).

The result is the same function as the eval model within float rounding (tests/test_fold.py),
for inference only (no gradients, BatchNorm statistics frozen): :func:`for_inference` gives it
to the extractor. ECAPA-TDNN and ResNet34 are returned as they are (their BatchNorms feed
residual sums, Res2Net splits and SE gates; folding them is not done).
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from .pooling import _VAR_FLOOR
from .tdnn import XVectorTdnn
from .winograd import WinogradWeights, conv_rows_padded


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return a, bn.bias - a * bn.running_mean


class _FoldedLayer(nn.Module):
    """One frame layer on a row buffer of utterances separated by zero rows (see
    :class:`FoldedTdnn`): the convolution without its bias, h, the previous layer's BatchNorm
    folded in (a, b), then the shifted ReLU r' = max(h, -c) = relu(h + c) - c, one pass that
    also writes the output rows in place (the bias c goes on to the next layer as b' = a c + b).

    Taps k > 1 run as Winograd F(m, k) (:mod:`pyspk.models.winograd`); the buffer's zero rows are
    the padding. Folding b turns padding zeros of y into zeros of r', so rows whose tap reads the
    padding take W_k b back out, before the ReLU: ``edge[t]`` for the t-th frame of an
    utterance, ``edge[pad + q]`` for the q-th frame from its end."""

    def __init__(self, conv: nn.Conv1d, a: torch.Tensor | None, b: torch.Tensor | None, tile: int):
        super().__init__()
        w = conv.weight.detach().double()  # (C_out, C_in, k)
        bias = conv.bias.detach().double()
        k, d, pad = w.shape[2], conv.dilation[0], conv.padding[0]
        if conv.stride[0] != 1 or 2 * pad != d * (k - 1):
            raise ValueError(
                f"folding needs a centred stride-1 convolution, got kernel {k} dilation {d} "
                f"padding {pad} stride {conv.stride[0]}"
            )
        self.k, self.pad = k, pad
        shifts = [i * d - pad for i in range(k)]  # output frame t reads input frame t + shift
        edge = None
        if a is not None:
            a64, b64 = a.detach().double(), b.detach().double()
            edge = torch.einsum("oik,i->ko", w, b64)  # W_k b per tap: (k, C_out)
            bias = bias + edge.sum(0)
            w = w * a64[None, :, None]
        self.bias64 = bias  # c, for the next layer's folding
        dt = conv.weight.dtype  # folded in float64, kept in the model's dtype
        taps = w.permute(2, 1, 0).contiguous()  # (k, C_in, C_out)
        self.wino = WinogradWeights(taps.to(dt), d, tile) if k > 1 else None
        self.register_buffer("weight", taps[0].to(dt).contiguous() if k == 1 else None)
        self.register_buffer("floor", (-bias).to(dt))  # -c: the shifted ReLU's floor
        if edge is not None and pad > 0:
            zero = torch.zeros_like(edge[0])
            left = [sum((edge[i] for i, s in enumerate(shifts) if t + s < 0), zero) for t in range(pad)]
            right = [sum((edge[i] for i, s in enumerate(shifts) if s > q), zero) for q in range(pad)]
            self.register_buffer("edge", -torch.stack(left + right).to(dt))  # (2 pad, C_out), negated
        else:
            self.register_buffer("edge", None)

    def extra_rows(self) -> int:
        """Rows past the last utterance's gap that the Winograd tiles may read."""
        return 0 if self.wino is None else self.pad + self.wino.d * self.wino.m

    def edge_rows(self, starts: torch.Tensor, lengths: torch.Tensor, rows: int):
        """(index, which edge term) of every utterance frame whose taps read the padding; the
        index is into the Winograd output's own row order (:func:`conv_rows_padded`)."""
        p = self.pad
        t = torch.arange(p, device=starts.device)
        keep = t[None] < lengths[:, None]  # utterances shorter than pad
        out_rows = torch.cat(
            [(starts[:, None] + t[None])[keep], (starts[:, None] + lengths[:, None] - 1 - t[None])[keep]]
        )
        terms = t[None].expand_as(keep)[keep]
        w = self.wino
        j = w.tiles(rows - p)
        t_out = out_rows - p  # = d * (m * tile + i) + phase
        tile, i, phase = t_out // (w.d * w.m), (t_out // w.d) % w.m, t_out % w.d
        return (i * j + tile) * w.d + phase, torch.cat([terms, terms + p])

    def forward(self, x: torch.Tensor, rows: int, edges) -> torch.Tensor:
        """x: (N, C_in) buffer, finite, zero outside the utterances; rows: the first N rows that
        matter (the rest is read padding). Returns r' (N, C_out) before the gap rows are zeroed."""
        if self.wino is None:
            return torch.mm(x, self.weight).clamp_min_(self.floor)
        w = self.wino
        j = w.tiles(rows - self.pad)
        y = conv_rows_padded(x, w, j)  # (J, m, d, C_out) view
        if edges is not None:
            idx, term = edges
            y.permute(1, 0, 2, 3).view(-1, y.shape[-1]).index_add_(0, idx, self.edge[term])  # in place
        out = x.new_empty(x.shape[0], y.shape[-1])
        end = self.pad + w.d * w.m * j
        torch.clamp_min(y, self.floor, out=out[self.pad : end].view(y.shape))
        out[: self.pad].zero_()  # gap rows either way: finite, whatever reads them
        out[end:].zero_()
        return out


class FoldedTdnn(nn.Module):
    """:class:`XVectorTdnn` in eval mode with every BatchNorm folded (see the module docstring):
    (B, T, feat_dim) -> (B, embed_dim), inference only.

    :meth:`embed_list` takes utterances of any lengths at once: they are laid out one after
    another in one row buffer, ``gap`` zero rows before, between and after them (the widest
    context, 3 frames), so every layer is one pass over the whole buffer (one Winograd
    convolution or one GEMM) and the zero gaps are every utterance's padding, zeroed again before
    each convolution that reads them. The maths is the per-utterance model's (tests/test_fold.py)."""

    TILES = {5: 4, 3: 6}  # Winograd outputs per tile by kernel size: F(4, 5), F(6, 3), 8 rows each

    def __init__(self, model: XVectorTdnn, tiles: dict | None = None):
        super().__init__()
        self.feat_dim, self.embed_dim = model.feat_dim, model.embed_dim
        layers: List[_FoldedLayer] = []
        prev = None
        for layer in model.frame_layers:
            k = layer.conv.kernel_size[0]
            layers.append(_FoldedLayer(layer.conv, *(prev if prev else (None, None)), (tiles or self.TILES).get(k, 2)))
            a, b = (v.detach().double() for v in _bn_affine(layer.bn))
            prev = a, a * layers[-1].bias64 + b  # y = a relu(h + c) + b = a r' + (a c + b)
        if layers[-1].k != 1:
            raise ValueError(f"folding expects the x-vector's kernel-1 last frame layer, got kernel {layers[-1].k}")
        self.frame_layers = nn.ModuleList(layers)
        self.gap = max(1, max(layer.pad for layer in layers))
        self.tail = self.gap + max(layer.extra_rows() for layer in layers)
        a, b = prev
        w = model.segment6.weight.detach().double()
        c = a.shape[0]
        w_mean, w_std = w[:, :c] * a, w[:, c:] * a.abs()
        dt = model.segment6.weight.dtype
        self.register_buffer("w_mean", w_mean.t().to(dt).contiguous())
        self.register_buffer("w_std", w_std.t().to(dt).contiguous())
        bias = model.segment6.bias.detach().double() + w[:, :c] @ b
        dead = a == 0  # gamma = 0: the channel is the constant b, its std the floor's root
        bias = bias + w[:, c:][:, dead].sum(1) * _VAR_FLOOR**0.5
        floor = torch.where(dead, torch.ones_like(a), _VAR_FLOOR / torch.where(dead, torch.ones_like(a), a).pow(2))
        self.register_buffer("bias", bias.to(dt))
        self.register_buffer("var_floor", floor.to(dt))

    @torch.inference_mode()
    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.dim() != 3 or feats.shape[-1] != self.feat_dim:
            raise ValueError(f"TDNN expects (batch, frames, {self.feat_dim}) features, got {tuple(feats.shape)}")
        return self.embed_list(list(feats))

    @torch.inference_mode()
    def embed_list(self, xs: List[torch.Tensor]) -> torch.Tensor:
        """[(T_u, feat_dim)] of any lengths T_u >= 1 -> (len(xs), embed_dim)."""
        if not xs:
            raise ValueError("embed_list needs at least one utterance")
        for x in xs:
            if x.dim() != 2 or x.shape[-1] != self.feat_dim or x.shape[0] < 1:
                raise ValueError(f"TDNN expects (frames >= 1, {self.feat_dim}) features, got {tuple(x.shape)}")
        g, ref = self.gap, xs[0]
        lengths = torch.tensor([x.shape[0] for x in xs], device=ref.device)
        starts = g + torch.cumsum(lengths + g, 0) - (lengths + g)
        rows = int(starts[-1] + lengths[-1]) + g  # the gap after the last one
        total = rows + self.tail
        zeros = ref.new_zeros(g, self.feat_dim)
        parts = [zeros]
        for x in xs:
            parts += [x.to(ref.dtype), zeros]
        parts.append(ref.new_zeros(total - rows, self.feat_dim))
        x = torch.cat(parts)
        valid = torch.zeros(total, dtype=torch.bool, device=ref.device)
        frame_rows = torch.repeat_interleave(starts - torch.cumsum(lengths, 0) + lengths, lengths) + torch.arange(
            int(lengths.sum()), device=ref.device
        )
        valid[frame_rows] = True
        gaps = (~valid).nonzero().squeeze(1)
        for layer, after in zip(self.frame_layers[:-1], self.frame_layers[1:]):
            x = layer(x, rows, None if layer.edge is None else layer.edge_rows(starts, lengths, rows))
            if after.k > 1:  # the padding of the next convolution
                x.index_fill_(0, gaps, 0)
        # the last (kernel-1) layer one utterance at a time, its statistics taken while its
        # output is still in cache (faster than one GEMM over the buffer in an interleaved
        # comparison); mean, then the centred squares (torch.var_mean over rows was slower)
        last = self.frame_layers[-1]
        means, variances = [], []
        for s, t in zip(starts.tolist(), lengths.tolist()):
            frames = torch.mm(x[s : s + t], last.weight).clamp_min_(last.floor)
            means.append(frames.sum(dim=0).div_(t))
            variances.append((frames - means[-1]).pow_(2).sum(dim=0).div_(t))
        mean, var = torch.stack(means), torch.stack(variances)
        std = torch.maximum(var, self.var_floor).sqrt_()
        return torch.addmm(torch.addmm(self.bias, mean, self.w_mean), std, self.w_std)


def for_inference(model: nn.Module) -> nn.Module:
    """The fastest exact inference form of an eval-mode encoder: :class:`FoldedTdnn` for the
    x-vector TDNN, the model itself otherwise."""
    if isinstance(model, XVectorTdnn) and not model.training:
        return FoldedTdnn(model).to(next(model.parameters()).device)
    return model
