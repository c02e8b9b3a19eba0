"""The training objective of docs/method.md: L_cls, L_con (AM-SupCon with CAA), balance.

Per step, with Z the batch of embeddings and y the speaker labels:

    L_cls = MarginSoftmax(Z, y)                              (softmax / AM / AAM head)
    w     = caa_weights(Z, y, prototypes)   if CAA           (losses/caa.py, no gradient)
    L_con = am_supcon_loss(Z, y, margin, tau, w, form...)    (losses/supcon.py; margin 0: SupCon)
    L     = L_cls | L_con                                    (balance none)
          = L_cls + lambda * L_con                           (fixed)
          = alpha c1 L_cls + (1 - alpha) c2 L_con            (MGDA-UB and its variants, balance/mgda.py;
                                                                combine: raw sets c1 = c2 = 1)
            [+ (1 - alpha) * L_cls(sg(Z))  with head_grad: full]

MGDA-UB (Sener & Koltun 2018, Alg. 2) moves the shared parameters (the encoder)
along the min-norm combination, but each task's own parameters along their own
loss gradient. With ``balance.head_grad: full`` (default) the extra term, the
head applied to the detached Z, gives the head W the full dL_cls/dW and leaves
the encoder's gradient alpha*g1 + (1-alpha)*g2 unchanged. Without it, a small
alpha (the min-norm point leans to the smaller gradient, here often L_con whose
CAA weights start near 1/C) would freeze the head, and with it CAA's prototypes.

The prototypes of CAA are the head's class weights W when a head is trained,
else :class:`pyspk.losses.caa.EmaPrototypes`, running means of each speaker's
normalised embeddings updated after every step (under DDP with the embeddings of
all ranks, so every rank keeps the same prototypes).

:class:`SpeakerModel` puts the encoder and the head in one module, so DDP wraps
both and their gradients are averaged together. The head runs in float32 even
under AMP.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from pyspk.balance.fixed import fixed_combine
from pyspk.balance.mgda import mgda_combine
from pyspk.losses.caa import (EmaPrototypes, caa_weights, normalize_negative_weights, pair_confidence,
                             weight_statistics)
from pyspk.losses.margin_softmax import MarginSoftmax
from pyspk.losses.supcon import am_supcon_loss, pair_statistics, supcon_from_cosines
from pyspk.train import distributed as D

STAT_COLUMNS = ("cos_pos", "cos_neg", "grad_pos", "grad_neg", "caa_w_mean", "caa_w_std", "caa_w_lt_half")


class SpeakerModel(nn.Module):
    """Encoder + optional classification head; ``forward`` -> (Z, L_cls or None, logits or None)."""

    def __init__(self, encoder: nn.Module, head: Optional[nn.Module]):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, feats: torch.Tensor, labels: torch.Tensor):
        z = self.encoder(feats).float()     # under autocast: the losses see float32 embeddings
        if self.head is None:
            return z, None, None
        with torch.autocast(device_type=z.device.type, enabled=False):
            loss_cls, logits = self.head(z.float(), labels)
        return z, loss_cls, logits


def build_head(loss_cfg, embed_dim: int, num_classes: int) -> Optional[MarginSoftmax]:
    if loss_cfg.cls == "none":
        return None
    return MarginSoftmax(embed_dim, num_classes, kind=loss_cfg.cls, margin=loss_cfg.margin,
                         scale=loss_cfg.scale, easy_margin=loss_cfg.easy_margin)


def uses_ema_prototypes(loss_cfg) -> bool:
    """EMA prototypes when CAA has no head to take them from (or when asked)."""
    if not loss_cfg.caa:
        return False
    return loss_cfg.prototypes == "ema" or (loss_cfg.prototypes == "auto" and loss_cfg.cls == "none")


class Objective:
    """Combine the configured losses; see the module docstring."""

    def __init__(self, loss_cfg, balance_cfg, num_classes: int, embed_dim: int, distributed: bool = False):
        self.loss, self.balance, self.distributed = loss_cfg, balance_cfg, distributed
        self.con_margin = loss_cfg.con_margin if loss_cfg.con == "am_supcon" else 0.0  # set per step
        self.progress = 0.0     # epochs done (fractional), set per step: CAA's start epoch
        self.prototypes = (EmaPrototypes(num_classes, embed_dim, momentum=loss_cfg.ema_momentum)
                           if uses_ema_prototypes(loss_cfg) else None)

    def to(self, device) -> "Objective":
        if self.prototypes is not None:
            self.prototypes.to(device)
        return self

    def _weights(self, z: torch.Tensor, labels: torch.Tensor, head):
        """(CAA weights of negatives, of positives) for this step; None where CAA is off
        (loss.caa false, before loss.caa_start_epoch, positives without loss.caa_positives)."""
        cfg = self.loss
        if not cfg.caa or self.progress < cfg.caa_start_epoch:
            return None, None
        protos = (head.weight if self.prototypes is None else self.prototypes.prototypes).detach()
        weights = caa_weights(z.detach(), labels, protos, scale=cfg.caa_scale, floor=cfg.caa_floor)
        if cfg.caa_normalize:
            weights = normalize_negative_weights(weights, labels)
        pos_w = pair_confidence(z.detach(), labels, protos, cfg.caa_scale) if cfg.caa_positives else None
        return weights, pos_w

    def _con_kwargs(self, weights, pos_weights=None) -> dict:
        cfg = self.loss
        return dict(margin=self.con_margin if cfg.con == "am_supcon" else 0.0, temperature=cfg.temperature,
                    weights=weights, margin_type=cfg.con_margin_type, placement=cfg.con_margin_on,
                    weight_mode=cfg.caa_mode, threshold=cfg.con_margin_threshold, pos_weights=pos_weights)

    def contrastive(self, z: torch.Tensor, labels: torch.Tensor, head):
        """(L_con, the CAA weights or None, the loss's keyword arguments) for this step."""
        weights, pos_w = self._weights(z, labels, head)
        kw = self._con_kwargs(weights, pos_w)
        return am_supcon_loss(z, labels, **kw), weights, kw

    def __call__(self, z: torch.Tensor, loss_cls: Optional[torch.Tensor], labels: torch.Tensor,
                 head: Optional[nn.Module]) -> Tuple[torch.Tensor, Dict[str, float]]:
        shared = z              # the tensor the head saw; under AMP z.float() is a new node
        z = z.float()
        loss_con, stats = None, {k: float("nan") for k in STAT_COLUMNS}
        if self.loss.con != "none":
            loss_con, weights, kw = self.contrastive(z, labels, head)
            stats.update(pair_statistics(z, labels, lambda cos: supcon_from_cosines(cos, labels, **kw)))
            if weights is not None:
                stats.update(weight_statistics(weights, labels))
        else:
            stats.update(pair_statistics(z, labels))
        alpha = float("nan")
        if loss_cls is not None and loss_con is not None:
            if self.balance.kind == "fixed":
                total = fixed_combine(loss_cls, loss_con, self.balance.lambda_)
            else:
                total, alpha = mgda_combine(loss_cls, loss_con, shared, normalize=self.balance.normalize,
                                            combine=self.balance.combine,
                                            all_reduce=D.all_reduce_sum if self.distributed else None)
        else:
            total = loss_cls if loss_cls is not None else loss_con
        logged = total.detach()
        if self.balance.kind == "mgda" and loss_cls is not None and loss_con is not None:
            logged = alpha * loss_cls.detach() + (1.0 - alpha) * loss_con.detach()   # unnormalised
        parts = {"loss": float(logged) if math.isfinite(float(total.detach())) else float("nan"),
                 "loss_cls": float(loss_cls.detach()) if loss_cls is not None else float("nan"),
                 "loss_con": float(loss_con.detach()) if loss_con is not None else float("nan"),
                 "alpha": float(alpha), **stats}
        if self.balance.kind == "mgda" and self.balance.head_grad == "full" and alpha < 1.0:
            total = total + (1.0 - alpha) * head(shared.detach().float(), labels)[0]
        return total, parts

    @torch.no_grad()
    def after_step(self, z: torch.Tensor, labels: torch.Tensor) -> None:
        """Update the EMA prototypes with this step's embeddings (all ranks')."""
        if self.prototypes is None:
            return
        zz, ll = z.detach().float(), labels
        if self.distributed:
            zz, ll = D.all_gather_cat(zz), D.all_gather_cat(ll)
        self.prototypes.update(zz, ll)

    def state_dict(self) -> dict:
        return {"prototypes": self.prototypes.state_dict() if self.prototypes is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.prototypes is not None and state.get("prototypes") is not None:
            self.prototypes.load_state_dict(state["prototypes"])
