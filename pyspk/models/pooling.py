"""Temporal pooling layers: frame-level (B, C, T) features -> one utterance vector.

- :class:`StatisticsPooling` (Snyder et al. 2018, x-vector): the mean and the
  standard deviation over time of every channel, concatenated -> (B, 2C).
- :class:`AttentiveStatisticsPooling` (Okabe et al. 2018, in the channel- and
  context-dependent form of Desplanques et al. 2020, ECAPA-TDNN §3.4):
  attention scores e_t,c = v_c^T f(W [h_t; μ; σ] + b) + k_c, with μ, σ the
  global mean/std of h appended to every frame (context), α_t,c = softmax_t(e_t,c)
  per channel, then the weighted mean μ̃_c = Σ_t α_t,c h_t,c and weighted std
  σ̃_c = sqrt(Σ_t α_t,c h_t,c² − μ̃_c²) -> (B, 2C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import bn_last, gemm, linear_1x1

_VAR_FLOOR = 1e-5


def _mean_std(x: torch.Tensor, weights: torch.Tensor | None = None, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over axis ``dim`` (time), optionally weighted (weights sum to 1 over time)."""
    if weights is None:
        mean = x.mean(dim=dim)
        var = (x - mean.unsqueeze(dim)).pow(2).mean(dim=dim)
    else:
        mean = (weights * x).sum(dim=dim)
        var = (weights * (x - mean.unsqueeze(dim)).pow(2)).sum(dim=dim)
    return mean, var.clamp(min=_VAR_FLOOR).sqrt()


def _softmax_time(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over time in at least float32, even under autocast: frames can number in the thousands."""
    if scores.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(scores.float(), dim=dim).to(scores.dtype)
    return torch.softmax(scores, dim=dim)


class StatisticsPooling(nn.Module):
    """(B, C, T) -> (B, 2C): [mean_t h; std_t h]."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_dim = 2 * in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = _mean_std(x)
        return torch.cat([mean, std], dim=1)

    def forward_btc(self, x: torch.Tensor) -> torch.Tensor:
        """The same statistics of (B, T, C) frames."""
        mean, std = _mean_std(x, dim=1)
        return torch.cat([mean, std], dim=1)


class AttentiveStatisticsPooling(nn.Module):
    """Channel- and context-dependent attentive statistics pooling (ECAPA-TDNN).

    f is Conv1d(3C -> A) + ReLU + BatchNorm + tanh, then a Conv1d(A -> C) gives
    one score per channel and frame; softmax over time. ``global_context=False``
    drops the appended [μ; σ] (plain channel-dependent attention).
    """

    def __init__(self, in_channels: int, attention_channels: int = 128, global_context: bool = True):
        super().__init__()
        self.in_channels = in_channels
        self.out_dim = 2 * in_channels
        self.global_context = global_context
        att_in = 3 * in_channels if global_context else in_channels
        self.attention = nn.Sequential(
            nn.Conv1d(att_in, attention_channels, kernel_size=1),
            nn.ReLU(),
            nn.BatchNorm1d(attention_channels),
            nn.Tanh(),
            nn.Conv1d(attention_channels, in_channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1]
        if self.global_context:
            mean, std = _mean_std(x)
            context = torch.cat(
                [x, mean.unsqueeze(-1).expand(-1, -1, frames), std.unsqueeze(-1).expand(-1, -1, frames)], dim=1
            )
        else:
            context = x
        alpha = _softmax_time(self.attention(context), dim=-1)
        mean, std = _mean_std(x, alpha)
        return torch.cat([mean, std], dim=1)

    def forward_btc(self, x: torch.Tensor) -> torch.Tensor:
        """The same pooling on (B, T, C) frames. The global context enters the first layer as
        W_h h_t + (W_mu mu + W_sigma sigma): the concat is never built and its two constant
        thirds cost one (B, 2C) x (2C, A) product instead of a (B*T, 2C) x (2C, A) one."""
        first, relu, bn, tanh, last = self.attention
        w = first.weight.squeeze(-1)
        c = self.in_channels
        a = gemm(x, w[:, :c], first.bias)
        if self.global_context:
            mean, std = _mean_std(x, dim=1)
            a = a + F.linear(torch.cat([mean, std], dim=1), w[:, c:]).unsqueeze(1)
        e = linear_1x1(last, tanh(bn_last(bn, relu(a))))
        alpha = _softmax_time(e, dim=1)
        mean, std = _mean_std(x, alpha, dim=1)
        return torch.cat([mean, std], dim=1)
