"""Fixed-weight combination of the two losses: the baseline beside MGDA (docs/method.md, 'The formulas')."""

from __future__ import annotations

import math

import torch


def fixed_combine(loss_cls: torch.Tensor, loss_con: torch.Tensor, lam: float) -> torch.Tensor:
    """L = L_cls + λ·L_con, with λ ≥ 0 a hand-tuned constant."""
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"fixed_combine: lam must be a finite number >= 0, got {lam}")
    return loss_cls + lam * loss_con
