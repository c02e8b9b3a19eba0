"""Class-aware attention (CAA): the weights ω of hard negative pairs (docs/method.md, 'The formulas').

Adapted by Li, Mak & Meng (ICASSP 2023) from OSM-CAA (Wang et al., AAAI 2019). A sample's
class confidence is the posterior of its own speaker under the class prototypes; a negative
pair counts as much as its least confident member:

    a_i  = softmax_c( s · ŵ_c·ẑ_i )[y_i]
    ω_ik = max(floor, min(a_i, a_k))   if y_i ≠ y_k,   1 otherwise.

Prototypes are the AAM head's W, or :class:`EmaPrototypes` (running class means) when no head
is trained. :func:`normalize_negative_weights` rescales each anchor's negative weights to mean 1,
so only their relative sizes act. :func:`weight_statistics` says what the weights are doing.

Registered as the pair weights ``caa`` (:class:`ClassAwareAttention`) of
:data:`pyspk.losses.PAIR_WEIGHTS`, with the settings of the ``pair_weights:`` block below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from pyspk.losses import PAIR_WEIGHTS, PairWeights
from pyspk.losses.supcon import WEIGHT_MODES, check_inputs


@torch.no_grad()
def caa_weights(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    scale: float = 30.0,
    floor: float = 0.0,
) -> torch.Tensor:
    """Class-aware attention weights ω (N x N, no gradient); formula in the module doc.

    ``prototypes`` is C x d (normalised here): the AAM head's W, or EMA class means.
    """
    check_inputs(embeddings, labels, "caa_weights")
    if prototypes.dim() != 2 or prototypes.shape[1] != embeddings.shape[1]:
        raise ValueError(f"caa_weights: prototypes must be (C, {embeddings.shape[1]}), got {tuple(prototypes.shape)}")
    num_classes = prototypes.shape[0]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"caa_weights: labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]"
        )
    omega = pair_confidence(embeddings, labels, prototypes, scale).clamp(min=floor)
    same = labels.view(-1, 1) == labels.view(1, -1)
    return torch.where(same, torch.ones_like(omega), omega)


@torch.no_grad()
def pair_confidence(embeddings, labels, prototypes, scale: float) -> torch.Tensor:
    """min(a_i, a_k) for every pair (N x N), positives included.

    :func:`caa_weights` uses it on negative pairs; on positive pairs it is the weight of the
    OSM-CAA variant (Wang et al. 2019 weight positive pairs too), ``pair_weights.positives``: a
    positive pair with a mislabelled member (low a) counts less in its anchor's mean over P(i).
    """
    a = class_confidence(embeddings, labels, prototypes, scale)
    return torch.minimum(a.view(-1, 1), a.view(1, -1))


@torch.no_grad()
def class_confidence(embeddings, labels, prototypes, scale: float) -> torch.Tensor:
    """a_i = softmax_c(s · ŵ_c·ẑ_i)[y_i], the posterior of each sample's own class."""
    z = F.normalize(embeddings.detach().float(), dim=1)
    w = F.normalize(prototypes.detach().float().to(z.device), dim=1)
    post = torch.softmax(scale * (z @ w.t()), dim=1)
    return post.gather(1, labels.view(-1, 1)).squeeze(1)


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


@torch.no_grad()
def weight_statistics(weights: torch.Tensor, labels: torch.Tensor) -> dict:
    """Spread of the negative-pair weights as used, for train.csv.

    caa_w_mean, caa_w_std: mean and standard deviation of ω over negative pairs;
    caa_w_lt_half: fraction of negative pairs whose ω is below half its anchor's mean negative
    weight (the negatives CAA has down-weighted by more than 2x relative to the others).
    """
    neg = labels[:, None] != labels[None, :]
    if not bool(neg.any()):
        return {"caa_w_mean": float("nan"), "caa_w_std": float("nan"), "caa_w_lt_half": float("nan")}
    w = weights.float()
    row_mean = (w * neg).sum(1, keepdim=True) / neg.sum(1, keepdim=True).clamp_min(1)
    vals = w[neg]
    return {
        "caa_w_mean": float(vals.mean()),
        "caa_w_std": float(vals.std()) if vals.numel() > 1 else 0.0,
        "caa_w_lt_half": float((w < 0.5 * row_mean)[neg].float().mean()),
    }


class EmaPrototypes(nn.Module):
    """Running class means of normalised embeddings, for CAA without a classifier head.

    For each class c present in a batch, with m̄_c the mean of its normalised embeddings:
        p_c ← normalise(momentum · p_c + (1 − momentum) · m̄_c)   (p_c ← normalise(m̄_c) the first time)
    Updated without gradient; ``prototypes`` (C x d) and ``seen`` (C,) are buffers, so
    they are part of the state dict and checkpointed. Classes never seen stay zero.
    Under DDP each process updates from its own batches unless the caller all-reduces.
    """

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.9):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EmaPrototypes: momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.register_buffer("prototypes", torch.zeros(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        check_inputs(embeddings, labels, "EmaPrototypes.update")
        z = F.normalize(embeddings.detach().to(self.prototypes), dim=1)
        labels = labels.to(self.prototypes.device)
        sums = torch.zeros_like(self.prototypes).index_add_(0, labels, z)
        counts = torch.bincount(labels, minlength=self.prototypes.shape[0]).to(z.dtype)
        present = counts > 0
        means = sums[present] / counts[present].unsqueeze(1)
        old = self.prototypes[present]
        blend = self.momentum * old + (1.0 - self.momentum) * means
        new = torch.where(self.seen[present].unsqueeze(1), blend, means)
        self.prototypes[present] = F.normalize(new, dim=1)
        self.seen |= present


@dataclass
class CaaSettings:
    """``pair_weights: {name: caa, ...}``: class-aware attention (module doc)."""

    name: str = "caa"
    scale: float = 30.0  # s inside the class posterior a_i
    floor: float = 0.0  # lower bound of the weights
    normalize: bool = True  # scale each anchor's negative weights to mean 1 (raw ones collapse)
    mode: str = field(default="exp", metadata={"choices": WEIGHT_MODES})  # ω on the exp terms, or inside the logits
    start_epoch: float = 0.0  # no weights (ω = 1) before this epoch: prototypes trained first
    positives: bool = True  # also weight positive pairs by min(a_i, a_p) (OSM-CAA)
    # where a_i's prototypes come from: the head's W (head), running class means (ema), or
    # the head when there is one (auto)
    prototypes: str = field(default="auto", metadata={"choices": ("auto", "head", "ema")})
    ema_momentum: float = 0.9

    def errors(self, config) -> list:
        out = []
        if self.start_epoch < 0:
            out.append(("start_epoch", "must be >= 0"))
        if not 0.0 <= self.floor <= 1.0:
            out.append(("floor", "must be in [0, 1]"))
        if not 0.0 <= self.ema_momentum < 1.0:
            out.append(("ema_momentum", "must be in [0, 1)"))
        if self.prototypes == "head" and getattr(config, "head", None) is None:
            out.append(("prototypes", "'head' needs a classification head (a head: block); use 'ema'"))
        return out


@PAIR_WEIGHTS.register("caa", CaaSettings)
class ClassAwareAttention:
    """CAA weights of a step's pairs: ``caa(z, labels, stats)`` -> :class:`PairWeights`, or None
    before ``start_epoch``. The prototypes are ``head.weight``, or :class:`EmaPrototypes` kept
    here and updated by :meth:`after_step` when there is no head (or ``prototypes: ema``)."""

    def __init__(self, settings: CaaSettings, num_classes: int, embed_dim: int, head: Optional[nn.Module] = None):
        self.settings, self.head = settings, head
        use_ema = settings.prototypes == "ema" or (settings.prototypes == "auto" and head is None)
        self.ema = EmaPrototypes(num_classes, embed_dim, momentum=settings.ema_momentum) if use_ema else None
        self.set_progress(0.0)

    def set_progress(self, epochs: float) -> None:
        self.active = not epochs < self.settings.start_epoch

    def to(self, device) -> "ClassAwareAttention":
        if self.ema is not None:
            self.ema.to(device)
        return self

    def __call__(self, z: torch.Tensor, labels: torch.Tensor, stats=None) -> Optional[PairWeights]:
        if not self.active:
            return None
        s = self.settings
        protos = (self.head.weight if self.ema is None else self.ema.prototypes).detach()
        weights = caa_weights(z.detach(), labels, protos, scale=s.scale, floor=s.floor)
        if s.normalize:
            weights = normalize_negative_weights(weights, labels)
        pos_w = pair_confidence(z.detach(), labels, protos, s.scale) if s.positives else None
        if stats is not None:
            stats.pair_weights(weights)
        return PairWeights(weights, pos_w, s.mode)

    @torch.no_grad()
    def after_step(
        self, z: torch.Tensor, labels: torch.Tensor, gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    ) -> None:
        """Update the EMA prototypes with this step's embeddings (``gather``: all ranks' under DDP,
        so that every rank keeps the same prototypes)."""
        if self.ema is None:
            return
        zz, ll = z.detach().float(), labels
        if gather is not None:
            zz, ll = gather(zz), gather(ll)
        self.ema.update(zz, ll)

    def state_dict(self) -> dict:
        return {"prototypes": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.ema is not None and state.get("prototypes") is not None:
            self.ema.load_state_dict(state["prototypes"])
