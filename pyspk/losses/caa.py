"""Class-aware attention (CAA): the weights ω of hard negative pairs (docs/method.md, 'The formulas').

Adapted by Li, Mak & Meng (ICASSP 2023) from OSM-CAA (Wang et al., AAAI 2019). A sample's
class confidence is the posterior of its own speaker under the class prototypes; a negative
pair counts as much as its least confident member:

    a_i  = softmax_c( s · ŵ_c·ẑ_i )[y_i]
    ω_ik = max(floor, min(a_i, a_k))   if y_i ≠ y_k,   1 otherwise.

Prototypes are the AAM head's W, or :class:`EmaPrototypes` (running class means) when no head
is trained. :func:`normalize_negative_weights` rescales each anchor's negative weights to mean 1,
so only their relative sizes act. :func:`weight_statistics` says what the weights are doing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyspk.losses.supcon import check_inputs


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
        raise ValueError(f"caa_weights: labels must lie in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    omega = pair_confidence(embeddings, labels, prototypes, scale).clamp(min=floor)
    same = labels.view(-1, 1) == labels.view(1, -1)
    return torch.where(same, torch.ones_like(omega), omega)


@torch.no_grad()
def pair_confidence(embeddings, labels, prototypes, scale: float) -> torch.Tensor:
    """min(a_i, a_k) for every pair (N x N), positives included.

    :func:`caa_weights` uses it on negative pairs; on positive pairs it is the weight of the
    OSM-CAA variant (Wang et al. 2019 weight positive pairs too), ``loss.caa_positives``: a
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
    return {"caa_w_mean": float(vals.mean()), "caa_w_std": float(vals.std()) if vals.numel() > 1 else 0.0,
            "caa_w_lt_half": float((w < 0.5 * row_mean)[neg].float().mean())}


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
