"""The network that leaves pyspk: raw fbank in, embedding out.

pyspk's encoders are trained on mean-normalised features (``features.cmn``,
:func:`pyspk.features.cmvn.apply_cmn`); a runtime outside pyspk only has the raw
log-mel frames.  :class:`ExportModule` puts that normalisation inside the graph,
so the exported file maps raw fbank (batch, frames, F) to the embedding
(batch, D) and any runtime that computes Kaldi fbank can use it:

    whole utterance:  y_t = x_t - (1/T) sum_s x_s
    sliding window W: y_t = x_t - (1/w) sum_{s=a_t}^{a_t+w-1} x_s,
                      w = min(W, T),  a_t = min(max(t - floor(W/2), 0), T - w)

which is :func:`pyspk.features.cmvn.sliding_mean` written without a branch on T
(when W >= T, w = T and a_t = 0: the whole-utterance mean), so the frame axis stays
dynamic in ONNX and TorchScript.  The sliding sums are cumulative sums in float64,
as the numpy version computes them.  VAD frame selection is *not* in the graph
(it needs the raw frame energies, which fbank frames do not carry); the metadata
says whether the encoder was trained with it.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def sliding_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Per-frame mean of (B, T, F) ``x`` over the centred window of the module docstring."""
    t = torch.arange(x.shape[1], device=x.device)
    total = t[-1:] + 1  # T as a (1,) tensor: no Python int of a dynamic size
    w = torch.clamp(total, max=window)
    start = torch.minimum(torch.clamp(t - window // 2, min=0), total - w)
    csum = torch.cumsum(x.double(), dim=1)
    csum = torch.cat([torch.zeros_like(csum[:, :1]), csum], dim=1)
    mean = (csum[:, start + w] - csum[:, start]) / w.double()
    return mean.to(x.dtype)


class ExportModule(nn.Module):
    """``forward(feats (B, T, F) raw log-mel) -> (B, D)``: CMN (see module doc), then the encoder."""

    def __init__(self, encoder: nn.Module, cmn: bool = True, cmn_window: Optional[int] = None):
        super().__init__()
        self.encoder = encoder.eval()
        self.cmn = bool(cmn)
        self.cmn_window = int(cmn_window) if cmn_window and int(cmn_window) > 0 else 0

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats
        if self.cmn:
            if self.cmn_window > 0:
                x = x - sliding_mean(x, self.cmn_window)
            else:
                x = x - x.mean(dim=1, keepdim=True)
        return self.encoder(x)
