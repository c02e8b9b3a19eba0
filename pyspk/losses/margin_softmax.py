"""Classification heads over speaker labels: softmax, AM-softmax, AAM-softmax.

With ẑ = z/‖z‖ and ŵ_c = w_c/‖w_c‖ (rows of the head's W, C x d), cos θ_c = ŵ_c·ẑ:

- ``kind="aam"`` (ArcFace, Deng et al. 2019; docs/method.md, 'The formulas'):
  logit_c = s·cos θ_c for c ≠ y and s·ψ(θ_y) for the true class, with
  ψ(θ) = cos(θ + m) while θ + m ≤ π, else cos θ − m·sin m (keeps ψ decreasing in θ
  past π − m). ``easy_margin=True`` instead uses ψ(θ) = cos(θ + m) only where
  cos θ > 0 and cos θ elsewhere.
- ``kind="am"`` (AM-softmax / CosFace, Wang et al. 2018): ψ(θ) = cos θ − m.
- ``kind="softmax"``: a plain linear classifier, logit_c = w_c·z + b_c (with a bias;
  ``margin`` and ``scale`` are unused). Its ``.weight`` rows, L2-normalised, still
  serve as class prototypes for the class-aware attention.

L_cls = cross-entropy(logits, y). ``forward`` returns ``(loss, logits)``; the
logits include the margin (accuracy from them is the training accuracy under the
margin). ``.margin`` is settable and checkpointed with the state dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("aam", "am", "softmax")


class MarginSoftmax(nn.Module):
    """Softmax / AM-softmax / AAM-softmax head owning the prototypes ``weight`` (C x d)."""

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        kind: str = "aam",
        margin: float = 0.2,
        scale: float = 32.0,
        easy_margin: bool = False,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"MarginSoftmax: unknown kind {kind!r} (valid: {', '.join(KINDS)})")
        if embed_dim <= 0 or num_classes <= 0:
            raise ValueError(f"MarginSoftmax: embed_dim and num_classes must be positive, got {embed_dim}, {num_classes}")
        self.kind = kind
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.scale = float(scale)
        self.easy_margin = bool(easy_margin)
        self.margin = float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_normal_(self.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if kind == "softmax" else None

    # The margin follows the schedule; keep it in the state dict so a resumed run restarts from it.
    def get_extra_state(self) -> dict:
        return {"margin": self.margin}

    def set_extra_state(self, state: dict) -> None:
        self.margin = float(state["margin"])

    @property
    def prototypes(self) -> torch.Tensor:
        """L2-normalised rows of W (C x d), detached: the class prototypes for CAA."""
        return F.normalize(self.weight.detach(), dim=1)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """cos θ_{i,c} = ẑ_i · ŵ_c, (N, C)."""
        return F.linear(F.normalize(emb, dim=1), F.normalize(self.weight, dim=1))

    def target_psi(self, cos_t: torch.Tensor) -> torch.Tensor:
        """ψ(θ_y) for the true-class cosines ``cos_t`` (see the module docstring)."""
        m = self.margin
        if self.kind == "am":
            return cos_t - m
        sin_t = (1.0 - cos_t * cos_t).clamp(min=1e-12).sqrt()
        phi = cos_t * math.cos(m) - sin_t * math.sin(m)  # cos(θ + m)
        if self.easy_margin:
            return torch.where(cos_t > 0, phi, cos_t)
        # θ + m > π  <=>  cos θ < cos(π − m) = −cos m
        return torch.where(cos_t > -math.cos(m), phi, cos_t - m * math.sin(m))

    def logits(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if emb.dim() != 2 or emb.shape[1] != self.embed_dim:
            raise ValueError(f"MarginSoftmax expects (N, {self.embed_dim}) embeddings, got {tuple(emb.shape)}")
        if self.kind == "softmax":
            return F.linear(emb, self.weight, self.bias)
        cos = self.cosine(emb)
        if self.margin == 0.0:
            return self.scale * cos
        cos_t = cos.gather(1, labels.view(-1, 1))
        cos = cos.scatter(1, labels.view(-1, 1), self.target_psi(cos_t))
        return self.scale * cos

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # cosines, margins and the cross-entropy in float32 (float64 if given), also under autocast
        if emb.dtype in (torch.float16, torch.bfloat16):
            emb = emb.float()
        with torch.autocast(device_type=emb.device.type, enabled=False):
            logits = self.logits(emb, labels)
            return F.cross_entropy(logits, labels), logits

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, embed_dim={self.embed_dim}, num_classes={self.num_classes}, "
                f"margin={self.margin}, scale={self.scale}, easy_margin={self.easy_margin}")


class MarginScheduler:
    """Raise ``head.margin`` from 0 to ``final_margin`` (docs/method.md, 'The formulas', as peers do).

    margin(e) = 0 for e < start_epoch; final_margin for e ≥ start_epoch + ramp_epochs;
    in between, with f = (e − start_epoch)/ramp_epochs ∈ [0, 1):
      ``mode="linear"``: final_margin · f
      ``mode="exp"``:    final_margin · (1 − exp(−k f)) / (1 − exp(−k)), k = 5
                         (fast at first, flattening out near the end).
    ``step(epoch)`` takes a fractional epoch (e.g. epoch + step/steps_per_epoch),
    sets the margin and returns it. The schedule is a pure function of the epoch,
    so resuming needs no state.
    """

    MODES = ("linear", "exp")

    def __init__(self, head: MarginSoftmax, final_margin: float, start_epoch: float = 0.0,
                 ramp_epochs: float = 0.0, mode: str = "linear", k: float = 5.0):
        if mode not in self.MODES:
            raise ValueError(f"MarginScheduler: unknown mode {mode!r} (valid: {', '.join(self.MODES)})")
        if ramp_epochs < 0 or start_epoch < 0:
            raise ValueError(f"MarginScheduler: start_epoch and ramp_epochs must be >= 0, got {start_epoch}, {ramp_epochs}")
        self.head = head
        self.final_margin = float(final_margin)
        self.start_epoch = float(start_epoch)
        self.ramp_epochs = float(ramp_epochs)
        self.mode = mode
        self.k = float(k)

    def margin_at(self, epoch: float) -> float:
        if epoch < self.start_epoch:
            return 0.0
        if self.ramp_epochs == 0 or epoch >= self.start_epoch + self.ramp_epochs:
            return self.final_margin
        f = (epoch - self.start_epoch) / self.ramp_epochs
        if self.mode == "linear":
            return self.final_margin * f
        return self.final_margin * (1.0 - math.exp(-self.k * f)) / (1.0 - math.exp(-self.k))

    def step(self, epoch: float) -> float:
        self.head.margin = self.margin_at(float(epoch))
        return self.head.margin
