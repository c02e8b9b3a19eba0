"""Fixed-weight combination of the two losses: the baseline beside MGDA (docs/method.md, 'The formulas')."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from pyspk.balance import BALANCERS


def fixed_combine(loss_cls: torch.Tensor, loss_con: torch.Tensor, lam: float) -> torch.Tensor:
    """L = L_cls + λ·L_con, with λ ≥ 0 a hand-tuned constant."""
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"fixed_combine: lam must be a finite number >= 0, got {lam}")
    return loss_cls + lam * loss_con


@dataclass
class FixedSettings:
    """``balance: {name: fixed, lambda: λ}``: L = L_cls + λ·L_con."""

    name: str = "fixed"
    lambda_: float = field(default=1.0, metadata={"key": "lambda"})

    def errors(self, config) -> list:
        return [("lambda", "must be >= 0")] if self.lambda_ < 0 else []


@BALANCERS.register("fixed", FixedSettings)
class Fixed:
    def __init__(self, settings: FixedSettings):
        self.settings = settings

    def __call__(self, loss_cls, loss_con, shared, head_loss, all_reduce=None):
        total = fixed_combine(loss_cls, loss_con, self.settings.lambda_)
        return total, float("nan"), float(total.detach())
