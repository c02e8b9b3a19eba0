"""The training objective of METHOD.md: L_cls, L_con (AM-SupCon with CAA), balance.

Per step, with Z the batch of embeddings and y the speaker labels:

    L_cls = MarginSoftmax(Z, y)                              (softmax / AM / AAM head)
    w     = caa_weights(Z, y, prototypes)   if CAA           (no gradient)
    L_con = am_supcon_loss(Z, y, margin, tau, w)             (margin 0 for plain SupCon)
    L     = L_cls | L_con                                    (balance none)
          = L_cls + lambda * L_con                           (fixed)
          = alpha * L_cls + (1 - alpha) * L_con              (MGDA-UB, alpha from dL/dZ)
            [+ (1 - alpha) * L_cls(sg(Z))  with head_grad: full]

MGDA-UB (Sener & Koltun 2018, Alg. 2) moves the shared parameters (the encoder)
along the min-norm combination, but each task's own parameters along their own
loss gradient. With ``balance.head_grad: full`` (default) the extra term, the
head applied to the detached Z, gives the head W the full dL_cls/dW and leaves
the encoder's gradient alpha*g1 + (1-alpha)*g2 unchanged. Without it, a small
alpha (the min-norm point leans to the smaller gradient, here often L_con whose
CAA weights start near 1/C) would freeze the head, and with it CAA's prototypes.

The prototypes of CAA are the head's class weights W when a head is trained,
else :class:`pyspk.losses.supcon.EmaPrototypes`, running means of each speaker's
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
from pyspk.balance.mgda import alpha_from_inner_products, inner_products, mgda_combine
from pyspk.losses.margin_softmax import MarginSoftmax
from pyspk.losses.supcon import EmaPrototypes, am_supcon_loss, caa_weights
from pyspk.train import distributed as D


class SpeakerModel(nn.Module):
    """Encoder + optional classification head; ``forward`` -> (Z, L_cls or None, logits or None)."""

    def __init__(self, encoder: nn.Module, head: Optional[nn.Module]):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, feats: torch.Tensor, labels: torch.Tensor):
        z = self.encoder(feats)
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


def normalize_negative_weights(weights: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Scale each anchor's negative-pair weights to mean 1 (positives keep weight 1).

    omega'_ik = omega_ik / mean_{k' in Neg(i)} omega_ik'. CAA's min(a_i, a_k) is ~1/C for
    every pair while the prototypes are still uninformative (start of training, EMA
    prototypes of a random encoder), which silences all negatives and lets the
    contrastive loss collapse the embeddings. Normalised, only the *relative* weights
    act: hard negatives count less than easy ones, as in OSM-CAA (Wang et al. 2019),
    whose loss divides by the sum of the attention weights.
    """
    neg = labels[:, None] != labels[None, :]
    mean = (weights * neg).sum(1, keepdim=True) / neg.sum(1, keepdim=True).clamp_min(1)
    return torch.where(neg, weights / mean.clamp_min(1e-12), weights)


class Objective:
    """Combine the configured losses; see the module docstring."""

    def __init__(self, loss_cfg, balance_cfg, num_classes: int, embed_dim: int, distributed: bool = False):
        self.loss, self.balance, self.distributed = loss_cfg, balance_cfg, distributed
        self.con_margin = loss_cfg.con_margin if loss_cfg.con == "am_supcon" else 0.0  # set per step
        self.prototypes = (EmaPrototypes(num_classes, embed_dim, momentum=loss_cfg.ema_momentum)
                           if uses_ema_prototypes(loss_cfg) else None)

    def to(self, device) -> "Objective":
        if self.prototypes is not None:
            self.prototypes.to(device)
        return self

    def _contrastive(self, z: torch.Tensor, labels: torch.Tensor, head) -> torch.Tensor:
        cfg = self.loss
        weights = None
        if cfg.caa:
            protos = head.weight if self.prototypes is None else self.prototypes.prototypes
            weights = caa_weights(z.detach(), labels, protos.detach(), scale=cfg.caa_scale)
            if cfg.caa_floor > 0:
                weights = weights.clamp_min(cfg.caa_floor)
            if cfg.caa_normalize:
                weights = normalize_negative_weights(weights, labels)
        margin = self.con_margin if cfg.con == "am_supcon" else 0.0
        return am_supcon_loss(z, labels, margin=margin, temperature=cfg.temperature, weights=weights)

    def __call__(self, z: torch.Tensor, loss_cls: Optional[torch.Tensor], labels: torch.Tensor,
                 head: Optional[nn.Module]) -> Tuple[torch.Tensor, Dict[str, float]]:
        shared = z              # the tensor the head saw; under AMP z.float() is a new node
        z = z.float()
        loss_con = self._contrastive(z, labels, head) if self.loss.con != "none" else None
        alpha = float("nan")
        if loss_cls is not None and loss_con is not None:
            if self.balance.kind == "fixed":
                total = fixed_combine(loss_cls, loss_con, self.balance.lambda_)
            elif self.balance.normalize != "none":
                total, alpha = self._normalized_mgda(loss_cls, loss_con, shared)
            else:
                total, alpha = mgda_combine(loss_cls, loss_con, shared,
                                            all_reduce=D.all_reduce_sum if self.distributed else None)
        else:
            total = loss_cls if loss_cls is not None else loss_con
        logged = total.detach()
        if self.balance.kind == "mgda" and loss_cls is not None and loss_con is not None:
            logged = alpha * loss_cls.detach() + (1.0 - alpha) * loss_con.detach()   # unnormalised
        parts = {"loss": float(logged) if math.isfinite(float(total.detach())) else float("nan"),
                 "loss_cls": float(loss_cls.detach()) if loss_cls is not None else float("nan"),
                 "loss_con": float(loss_con.detach()) if loss_con is not None else float("nan"),
                 "alpha": float(alpha)}
        if self.balance.kind == "mgda" and self.balance.head_grad == "full" and alpha < 1.0:
            total = total + (1.0 - alpha) * head(shared.detach().float(), labels)[0]
        return total, parts

    def _normalized_mgda(self, loss_cls, loss_con, shared):
        """MGDA-UB on normalised gradients c_t g_t (c_t = 1/||g_t|| or 1/L_t, detached):
        alpha = min-norm weight of (c1 g1, c2 g2); total = alpha c1 L_cls + (1 - alpha) c2 L_con."""
        g1, g2 = (torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)[0]
                  for loss in (loss_cls, loss_con))
        g1 = torch.zeros_like(shared) if g1 is None else g1
        g2 = torch.zeros_like(shared) if g2 is None else g2
        g11, g12, g22 = D.all_reduce_sum(inner_products(g1, g2)).tolist()
        if self.balance.normalize == "l2":
            c1, c2 = 1.0 / max(g11, 1e-24) ** 0.5, 1.0 / max(g22, 1e-24) ** 0.5
        else:
            c1, c2 = 1.0 / max(float(loss_cls.detach()), 1e-12), 1.0 / max(float(loss_con.detach()), 1e-12)
        alpha = alpha_from_inner_products(c1 * c1 * g11, c1 * c2 * g12, c2 * c2 * g22)
        return alpha * c1 * loss_cls + (1.0 - alpha) * c2 * loss_con, alpha

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
