"""Supervised contrastive losses in angular space, and the class-aware attention weights.

References: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (SupCon,
the L_out form); Li, Mak, Meng, ICASSP 2023, arXiv 2210.16622 (AM-SupCon and CAA;
METHOD.md §2-§3); Wang et al., AAAI 2019 (OSM-CAA, the origin of the CAA weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_COS_EPS = 1e-6  # acos is evaluated on cosines clamped to [-1 + eps, 1 - eps]


def _check_inputs(embeddings: torch.Tensor, labels: torch.Tensor, who: str) -> None:
    if embeddings.dim() != 2:
        raise ValueError(f"{who}: embeddings must be (N, d), got {tuple(embeddings.shape)}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"{who}: labels must be ({embeddings.shape[0]},), got {tuple(labels.shape)}")


def am_supcon_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
    temperature: float = 0.07,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Additive-angular-margin supervised contrastive loss (METHOD.md §2).

    With ẑ_i = z_i/‖z_i‖, cos θ_ij = ẑ_i·ẑ_j, P(i) = {p ≠ i: y_p = y_i}, A(i) = {a ≠ i}:

        ℓ_ip = −log  exp(cos(θ_ip + m)/τ)
                     / ( exp(cos(θ_ip + m)/τ) + Σ_{a∈A(i), a≠p} ω_ia exp(cos θ_ia/τ) )

        L = (1/N') Σ_{i: |P(i)|>0} (1/|P(i)|) Σ_{p∈P(i)} ℓ_ip

    θ_ip + m is clamped to [0, π] (θ from acos of the cosine clamped to [−1+1e-6, 1−1e-6]).
    The sum over A(i)\\{p} contains the other positives (unmargined) and the negatives;
    ``weights`` is the N x N matrix ω (None: all ones; CAA gives 1 on positives).
    margin = 0 and weights = None is SupCon (Khosla et al. 2020, L_out).

    Computed in O(N²) memory: with S_i = Σ_{a≠i} ω_ia exp(cos θ_ia/τ) (a log-sum-exp),
    the pair denominator is exp(cos(θ_ip+m)/τ) + (S_i − ω_ip exp(cos θ_ip/τ)), the
    bracket formed in log space as log S_i + log1p(−x_ip), x_ip = ω_ip exp(cos θ_ip/τ)/S_i.
    Raises ValueError if no anchor has a positive.
    """
    _check_inputs(embeddings, labels, "am_supcon_loss")
    if temperature <= 0:
        raise ValueError(f"am_supcon_loss: temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        return _am_supcon(_at_least_float32(embeddings), labels, margin, temperature,
                          None if weights is None else _at_least_float32(weights))


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _am_supcon(embeddings, labels, margin, temperature, weights) -> torch.Tensor:
    """The computation of :func:`am_supcon_loss`, in the inputs' dtype (float32 or float64)."""
    n = embeddings.shape[0]
    z = F.normalize(embeddings, dim=1)
    cos = z @ z.t()
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (labels.view(-1, 1) == labels.view(1, -1)) & ~eye
    num_pos = pos.sum(dim=1)
    anchors = num_pos > 0
    if not bool(anchors.any()):
        raise ValueError(f"am_supcon_loss: no anchor has a positive in a batch of {n} with "
                         f"{int(labels.unique().numel())} distinct labels (need >= 2 samples of some class)")

    # log of every denominator term ω_ia exp(cos θ_ia/τ), the anchor itself excluded.
    log_terms = cos / temperature
    if weights is not None:
        if weights.shape != (n, n):
            raise ValueError(f"am_supcon_loss: weights must be ({n}, {n}), got {tuple(weights.shape)}")
        # ω = 0 becomes the smallest normal float: the term vanishes, its log stays finite
        weights = weights.to(log_terms.dtype)
        log_terms = log_terms + torch.log(weights.clamp(min=torch.finfo(weights.dtype).tiny))
    log_terms = log_terms.masked_fill(eye, float("-inf"))
    log_s = torch.logsumexp(log_terms, dim=1, keepdim=True)  # log S_i

    # log(S_i − ω_ip exp(cos θ_ip/τ)): -inf where the pair term is (numerically) all of S_i.
    x = torch.exp(log_terms - log_s.clamp(min=torch.finfo(log_s.dtype).min))  # a row of zeros stays 0, not NaN
    tiny = 4 * torch.finfo(x.dtype).eps
    keep = x < 1.0 - tiny
    log_rest = torch.where(keep, log_s + torch.log1p(-torch.where(keep, x, torch.zeros_like(x))),
                           torch.full_like(x, float("-inf")))

    if margin == 0.0:
        log_pos = cos / temperature
    else:
        theta = torch.acos(cos.clamp(-1.0 + _COS_EPS, 1.0 - _COS_EPS))
        log_pos = torch.cos((theta + margin).clamp(0.0, torch.pi)) / temperature

    loss_pair = torch.logaddexp(log_pos, log_rest) - log_pos  # ℓ_ip for every (i, j)
    loss_pair = torch.where(pos, loss_pair, torch.zeros_like(loss_pair))
    per_anchor = loss_pair.sum(dim=1)[anchors] / num_pos[anchors].to(loss_pair.dtype)
    return per_anchor.mean()


def supcon_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Plain SupCon (Khosla et al. 2020, L_out): :func:`am_supcon_loss` with m = 0, ω ≡ 1."""
    return am_supcon_loss(embeddings, labels, margin=0.0, temperature=temperature, weights=None)


@torch.no_grad()
def caa_weights(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    scale: float = 30.0,
    floor: float = 0.0,
) -> torch.Tensor:
    """Class-aware attention weights ω (N x N, no gradient; METHOD.md §3).

        a_i  = softmax_c( s · ŵ_c·ẑ_i )[y_i]            (class confidence of sample i)
        ω_ik = max(floor, min(a_i, a_k))   if y_i ≠ y_k
        ω_ik = 1                           otherwise (positives and the diagonal)

    ``prototypes`` is C x d (normalised here): the AAM head's W, or EMA class means.
    """
    _check_inputs(embeddings, labels, "caa_weights")
    if prototypes.dim() != 2 or prototypes.shape[1] != embeddings.shape[1]:
        raise ValueError(f"caa_weights: prototypes must be (C, {embeddings.shape[1]}), got {tuple(prototypes.shape)}")
    num_classes = prototypes.shape[0]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"caa_weights: labels must lie in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    z = F.normalize(embeddings.detach().float(), dim=1)
    w = F.normalize(prototypes.detach().float().to(z.device), dim=1)
    post = torch.softmax(scale * (z @ w.t()), dim=1)
    a = post.gather(1, labels.view(-1, 1)).squeeze(1)
    omega = torch.minimum(a.view(-1, 1), a.view(1, -1)).clamp(min=floor)
    same = labels.view(-1, 1) == labels.view(1, -1)
    return torch.where(same, torch.ones_like(omega), omega)


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
        _check_inputs(embeddings, labels, "EmaPrototypes.update")
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
