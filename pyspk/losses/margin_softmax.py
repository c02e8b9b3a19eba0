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
margin). ``.margin`` follows the head's ``margin_schedule`` (:meth:`MarginSoftmax.set_progress`)
and is checkpointed with the state dict.

Registered as the heads ``softmax``, ``am`` and ``aam`` (:data:`pyspk.losses.HEADS`), with the
settings of the ``head:`` block below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from pyspk.losses import HEADS
from pyspk.losses.schedule import MarginSchedule

KINDS = ("aam", "am", "softmax")


@dataclass
class SoftmaxSettings:
    """``head: {name: softmax}``: a plain linear classifier; no settings."""

    name: str = "softmax"


@dataclass
class AmSettings:
    """``head: {name: am, ...}``: AM-softmax, ψ(θ) = cos θ − m."""

    name: str = "am"
    margin: float = 0.2
    scale: float = 30.0
    # a full margin on an untrained head stalls training: ramp it in (pyspk/losses/schedule.py)
    margin_schedule: MarginSchedule = field(default_factory=MarginSchedule)


@dataclass
class AamSettings:
    """``head: {name: aam, ...}``: AAM-softmax, ψ(θ) = cos(θ + m)."""

    name: str = "aam"
    margin: float = 0.2
    scale: float = 30.0
    easy_margin: bool = False
    margin_schedule: MarginSchedule = field(default_factory=MarginSchedule)


@HEADS.register("softmax", SoftmaxSettings)
@HEADS.register("am", AmSettings)
@HEADS.register("aam", AamSettings)
def build_margin_softmax(settings, embed_dim: int, num_classes: int) -> "MarginSoftmax":
    """The head ``settings.name`` (softmax, am, aam) over ``num_classes`` speakers."""
    return MarginSoftmax(
        embed_dim,
        num_classes,
        kind=settings.name,
        margin=getattr(settings, "margin", 0.0),
        scale=getattr(settings, "scale", 30.0),
        easy_margin=getattr(settings, "easy_margin", False),
        margin_schedule=getattr(settings, "margin_schedule", None),
    )


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
        margin_schedule: Optional[MarginSchedule] = None,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"MarginSoftmax: unknown kind {kind!r} (valid: {', '.join(KINDS)})")
        if embed_dim <= 0 or num_classes <= 0:
            raise ValueError(
                f"MarginSoftmax: embed_dim and num_classes must be positive, got {embed_dim}, {num_classes}"
            )
        self.kind = kind
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.scale = float(scale)
        self.easy_margin = bool(easy_margin)
        self.margin = float(margin)
        self.final_margin = float(margin)
        self.margin_schedule = margin_schedule or MarginSchedule()  # None: the full margin throughout
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_normal_(self.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if kind == "softmax" else None

    # The margin follows the schedule; keep it in the state dict so a resumed run restarts from it.
    def get_extra_state(self) -> dict:
        return {"margin": self.margin}

    def set_extra_state(self, state: dict) -> None:
        self.margin = float(state["margin"])

    def set_progress(self, epochs: float) -> None:
        """Set the margin of the step after ``epochs`` epochs of training (its schedule)."""
        self.margin = self.margin_schedule.at(epochs, self.final_margin)

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
        return (
            f"kind={self.kind}, embed_dim={self.embed_dim}, num_classes={self.num_classes}, "
            f"margin={self.margin}, scale={self.scale}, easy_margin={self.easy_margin}"
        )
