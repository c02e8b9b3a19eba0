"""The training objective of docs/method.md, composed of the components a config names.

Per step, with Z the batch of embeddings and y the speaker labels:

    L_cls = head(Z, y)                                   (head: softmax / am / aam, in SpeakerModel)
    w     = pair_weights(Z, y)                           (pair_weights: caa; no gradient)
    L_con = pair_loss(Z, y, w)                           (pair_loss: supcon / am_supcon)
    L     = L_cls | L_con                                (one loss: no balance)
          = balance(L_cls, L_con, Z)                     (two: fixed, mgda, nash_mtl)

The components come from their registries (:mod:`pyspk.losses`, :mod:`pyspk.balance`), each
built from its block of the config; :class:`Objective` only wires them. Each component owns
its schedule: :meth:`Objective.set_progress` hands every one of them the training position
(epochs done, a float) before the step, and each sets its own margin, its own start epoch.
What the step's forward computes is also what train.csv logs (:data:`STAT_COLUMNS`): the pair
loss and the pair weights record their cosine matrix, their loss and their weights in a
:class:`StepStats` as they compute them, and the statistics come from those values.

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

from pyspk.balance import BALANCERS
from pyspk.balance.gradients import ParamGroups
from pyspk.losses import HEADS, PAIR_LOSSES, PAIR_WEIGHTS
from pyspk.losses.caa import weight_statistics
from pyspk.losses.supcon import pair_cosines, pair_statistics
from pyspk.train import distributed as D

STAT_COLUMNS = ("cos_pos", "cos_neg", "grad_pos", "grad_neg", "caa_w_mean", "caa_w_std", "caa_w_lt_half")


class SpeakerModel(nn.Module):
    """Encoder + optional classification head; ``forward`` -> (Z, L_cls or None, logits or None)."""

    def __init__(self, encoder: nn.Module, head: Optional[nn.Module]):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, feats: torch.Tensor, labels: torch.Tensor):
        z = self.encoder(feats).float()  # under autocast: the losses see float32 embeddings
        if self.head is None:
            return z, None, None
        with torch.autocast(device_type=z.device.type, enabled=False):
            loss_cls, logits = self.head(z.float(), labels)
        return z, loss_cls, logits


def build_head(settings, embed_dim: int, num_classes: int) -> Optional[nn.Module]:
    """The head a config's ``head:`` block names (None: no head)."""
    if settings is None:
        return None
    return HEADS.get(settings.name).obj(settings, embed_dim, num_classes)


class StepStats:
    """The statistics hook of one step: the components fill it during their forward, and
    :meth:`columns` turns what they left into the :data:`STAT_COLUMNS` of train.csv.

    ``pairs(cos, loss)``: a pair loss's N x N cosine matrix, as in its graph, and its loss;
    ``pair_weights(w)``: the negative-pair weights as the pair loss used them."""

    def __init__(self, labels: torch.Tensor):
        self.labels = labels
        self.cos: Optional[torch.Tensor] = None
        self.loss: Optional[torch.Tensor] = None
        self.weights: Optional[torch.Tensor] = None

    def pairs(self, cos: torch.Tensor, loss: Optional[torch.Tensor] = None) -> None:
        self.cos, self.loss = cos, loss

    def pair_weights(self, weights: torch.Tensor) -> None:
        self.weights = weights

    def columns(self, z: torch.Tensor) -> Dict[str, float]:
        out = {k: float("nan") for k in STAT_COLUMNS}
        if self.cos is not None:
            out.update(pair_statistics(self.cos, self.labels, self.loss))
        else:  # no pair loss: the cosines of the batch alone
            out.update(pair_statistics(pair_cosines(z), self.labels))
        if self.weights is not None:
            out.update(weight_statistics(self.weights, self.labels))
        return out


class Objective:
    """The pair loss, pair weights and balancer a config names, around its head; see the module doc.

    ``cfg``: a :class:`pyspk.train.config.Config` (its ``head``, ``pair_loss``, ``pair_weights``
    and ``balance`` blocks); ``head``: the module built from ``cfg.head`` (:func:`build_head`);
    ``encoder``: the module whose parameters a ``level: parameters`` balancer differentiates."""

    def __init__(
        self,
        cfg,
        num_classes: int,
        embed_dim: int,
        head: Optional[nn.Module] = None,
        distributed: bool = False,
        encoder: Optional[nn.Module] = None,
        world_size: int = 1,
    ):
        self.cfg, self.head, self.distributed, self.world_size = cfg, head, distributed, world_size
        if (cfg.head is None) != (head is None):
            raise ValueError("Objective: the head module must be the one cfg.head names (both or neither)")
        self.pair_loss = PAIR_LOSSES.get(cfg.pair_loss.name).obj(cfg.pair_loss) if cfg.pair_loss else None
        self.pair_weights = (
            PAIR_WEIGHTS.get(cfg.pair_weights.name).obj(cfg.pair_weights, num_classes, embed_dim, head)
            if cfg.pair_weights
            else None
        )
        self.balancer = BALANCERS.get(cfg.balance.name).obj(cfg.balance) if cfg.balance else None
        if head is None and self.pair_loss is None:
            raise ValueError("Objective: no head and no pair loss: nothing to train")
        if head is not None and self.pair_loss is not None and self.balancer is None:
            raise ValueError("Objective: a head and a pair loss need a balance")
        self.params = None
        if getattr(self.balancer, "level", None) == "parameters":
            if encoder is None:
                raise ValueError("Objective: balance.level parameters needs the encoder")
            own = [
                p
                for c in (head, self.pair_loss, self.pair_weights)
                if isinstance(c, nn.Module)
                for p in c.parameters()
                if p.requires_grad
            ]
            self.params = ParamGroups(list(encoder.parameters()), own)
        self.progress = 0.0

    def components(self):
        return [c for c in (self.head, self.pair_loss, self.pair_weights, self.balancer) if c is not None]

    def set_progress(self, epochs: float) -> None:
        """The training position of the next step (epochs done, a float): every component's schedules."""
        self.progress = epochs
        for c in self.components():
            if hasattr(c, "set_progress"):
                c.set_progress(epochs)

    def to(self, device) -> "Objective":
        for c in (self.pair_loss, self.pair_weights, self.balancer):
            if c is not None and hasattr(c, "to"):
                c.to(device)
        return self

    def _margin(self, settings, component) -> float:
        """The margin a component trains with now, for train.csv (NaN when it has none)."""
        return float(getattr(component, "margin", math.nan)) if hasattr(settings, "margin") else math.nan

    def __call__(
        self, z: torch.Tensor, loss_cls: Optional[torch.Tensor], labels: torch.Tensor, loss_scale: float = 1.0
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """(the loss to back-propagate, train.csv's columns). ``loss_scale``: float16's gradient
        scale of this step (1 otherwise), for balancers that differentiate the losses themselves."""
        shared = z  # the tensor the head saw; under AMP z.float() is a new node
        z = z.float()
        stats = StepStats(labels)
        loss_con = None
        if self.pair_loss is not None:
            weights = self.pair_weights(z, labels, stats) if self.pair_weights is not None else None
            loss_con = self.pair_loss(z, labels, weights, stats)
        columns = stats.columns(z)
        alpha = float("nan")
        if loss_cls is not None and loss_con is not None:
            context = {}
            if self.params is not None:
                context = {"params": self.params, "world_size": self.world_size, "loss_scale": loss_scale}
            total, alpha, logged = self.balancer(
                loss_cls,
                loss_con,
                shared,
                lambda x: self.head(x, labels)[0],
                D.all_reduce_sum if self.distributed else None,
                **context,
            )
        else:
            total = loss_cls if loss_cls is not None else loss_con
            logged = float(total.detach())
        parts = {
            "loss": logged if math.isfinite(logged) else float("nan"),
            "loss_cls": float(loss_cls.detach()) if loss_cls is not None else float("nan"),
            "loss_con": float(loss_con.detach()) if loss_con is not None else float("nan"),
            "alpha": float(alpha),
            "margin": self._margin(self.cfg.head, self.head),
            "con_margin": self._margin(self.cfg.pair_loss, self.pair_loss),
            **columns,
        }
        return total, parts

    @torch.no_grad()
    def after_step(self, z: torch.Tensor, labels: torch.Tensor) -> None:
        """Components that learn from the step's embeddings (CAA's EMA prototypes), all ranks' under DDP."""
        gather = D.all_gather_cat if self.distributed else None
        for c in (self.pair_loss, self.pair_weights, self.balancer):
            if c is not None and hasattr(c, "after_step"):
                c.after_step(z, labels, gather)

    _STATEFUL = ("pair_loss", "pair_weights", "balancer")

    def state_dict(self) -> dict:
        return {
            name: getattr(self, name).state_dict()
            for name in self._STATEFUL
            if hasattr(getattr(self, name), "state_dict")
        }

    def load_state_dict(self, state: dict) -> None:
        if "prototypes" in state:  # checkpoints before the registries: CAA's EMA prototypes
            state = {"pair_weights": {"prototypes": state["prototypes"]}}
        for name in self._STATEFUL:
            c = getattr(self, name)
            if c is not None and hasattr(c, "load_state_dict") and name in state:
                c.load_state_dict(state[name])
