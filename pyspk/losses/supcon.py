"""Supervised contrastive losses in angular space: SupCon and AM-SupCon with its margin forms.

References: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (SupCon,
the L_out form); Li, Mak, Meng, ICASSP 2023, arXiv 2210.16622 (AM-SupCon; docs/method.md, 'The formulas').
The class-aware attention weights ω that these losses accept live in
:mod:`pyspk.losses.caa`.

Margin forms (``margin_type``), as functions of θ = acos(cos θ_ip) of a positive pair:

    angular     cos(θ + m)                                  (the paper; θ + m clamped to [0, π])
    additive    cos θ − m                                   (the authors' later SupMarginCon code)
    threshold   cos(θ + m)            if θ ≥ t              (angular past a threshold t, and
                cos θ − (cos t − cos(t + m))   if θ < t      below it the additive form with the
                                                            margin that makes the logit continuous)

Why more than one: the pull of the angular form on a positive pair, −∂/∂θ cos(θ + m) =
sin(θ + m), tends to sin m as θ → 0, so it keeps pulling pairs that are already together
(and, in embedding space, the direction of that pull becomes the noise of the pair's
residual), while the push on negatives is ∝ sin θ. The additive and threshold forms pull
with sin θ near θ = 0: their pull vanishes when a pair coincides. ``studies/study_losses.py``
measures which one trains better encoders.

Margin placement (``placement``):

    own         ℓ_ip = −log e^{ℓ⁺_ip} / (e^{ℓ⁺_ip} + Σ_{a∈A(i), a≠p} ω_ia e^{cos θ_ia/τ})
                (the paper's formula as written: the other positives of the anchor enter unmargined)
    positives   ℓ_ip = −log e^{ℓ⁺_ip} / (Σ_{q∈P(i)} e^{ℓ⁺_iq} + Σ_{n∈Neg(i)} ω_in e^{cos θ_in/τ})
                (every positive entry of the logit matrix margined, numerator and denominator
                alike: the consistent SupCon form of the authors' code)

with ℓ⁺_ip = (margined cosine)/τ and L = (1/N') Σ_{i: |P(i)|>0} (1/|P(i)|) Σ_{p∈P(i)} ℓ_ip.

Weights (``weight_mode``): ``exp`` multiplies the exp terms by ω, ω_ia e^{cos/τ} (docs/method.md,
'The formulas'); ``logit`` puts ω inside the exponent, e^{ω_ia cos θ_ia/τ}, as the authors' code does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_COS_EPS = 1e-6  # acos is evaluated on cosines clamped to [-1 + eps, 1 - eps]
MARGIN_TYPES = ("angular", "additive", "threshold")
PLACEMENTS = ("own", "positives")
WEIGHT_MODES = ("exp", "logit")


def check_inputs(embeddings: torch.Tensor, labels: torch.Tensor, who: str) -> None:
    if embeddings.dim() != 2:
        raise ValueError(f"{who}: embeddings must be (N, d), got {tuple(embeddings.shape)}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"{who}: labels must be ({embeddings.shape[0]},), got {tuple(labels.shape)}")


def _choice(value: str, choices, what: str) -> None:
    if value not in choices:
        raise ValueError(f"am_supcon_loss: {what} must be one of {', '.join(choices)}, got {value!r}")


def margined_cosine(cos: torch.Tensor, margin: float, margin_type: str = "angular",
                    threshold: float = math.pi / 4) -> torch.Tensor:
    """The margined similarity of a positive pair (before the 1/τ), elementwise; see the module doc."""
    _choice(margin_type, MARGIN_TYPES, "margin_type")
    if margin == 0.0:
        return cos
    if margin_type == "additive":
        return cos - margin
    theta = torch.acos(cos.clamp(-1.0 + _COS_EPS, 1.0 - _COS_EPS))
    angular = torch.cos((theta + margin).clamp(0.0, math.pi))
    if margin_type == "angular":
        return angular
    shift = math.cos(threshold) - math.cos(min(threshold + margin, math.pi))
    return torch.where(theta >= threshold, angular, cos - shift)


def am_supcon_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
    temperature: float = 0.07,
    weights: torch.Tensor | None = None,
    margin_type: str = "angular",
    placement: str = "own",
    weight_mode: str = "exp",
    threshold: float = math.pi / 4,
    pos_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Margin supervised contrastive loss (docs/method.md, 'The formulas'); forms and placements in the module doc.

    ẑ_i = z_i/‖z_i‖, cos θ_ij = ẑ_i·ẑ_j, P(i) = {p ≠ i: y_p = y_i}, A(i) = {a ≠ i}.
    ``weights`` is the N x N matrix ω (None: all ones). With ``placement="own"`` ω applies to
    every a ∈ A(i)\\{p} (CAA gives 1 on positives); with ``"positives"`` only to negatives.
    margin = 0 and weights = None is SupCon (Khosla et al. 2020, L_out) in either placement.
    ``pos_weights`` (N x N, optional) replaces each anchor's plain mean over P(i) by the weighted
    mean Σ_p v_ip ℓ_ip / Σ_p v_ip (the OSM-CAA weighting of positive pairs).
    Computed in float32 (float64 inputs stay float64) with log-sum-exp. Raises ValueError if
    no anchor has a positive.
    """
    check_inputs(embeddings, labels, "am_supcon_loss")
    if temperature <= 0:
        raise ValueError(f"am_supcon_loss: temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        z = F.normalize(_at_least_float32(embeddings), dim=1)
        return supcon_from_cosines(z @ z.t(), labels, margin, temperature,
                                   None if weights is None else _at_least_float32(weights),
                                   margin_type, placement, weight_mode, threshold,
                                   None if pos_weights is None else _at_least_float32(pos_weights))


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def supcon_from_cosines(cos, labels, margin, temperature, weights=None, margin_type="angular",
                        placement="own", weight_mode="exp", threshold=math.pi / 4,
                        pos_weights=None) -> torch.Tensor:
    """:func:`am_supcon_loss` from the N x N cosine matrix (so its gradient per pair can be measured)."""
    _choice(placement, PLACEMENTS, "placement")
    _choice(weight_mode, WEIGHT_MODES, "weight_mode")
    n = cos.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=cos.device)
    pos = (labels.view(-1, 1) == labels.view(1, -1)) & ~eye
    num_pos = pos.sum(dim=1)
    anchors = num_pos > 0
    if not bool(anchors.any()):
        raise ValueError(f"am_supcon_loss: no anchor has a positive in a batch of {n} with "
                         f"{int(labels.unique().numel())} distinct labels (need >= 2 samples of some class)")
    log_pos = margined_cosine(cos, margin, margin_type, threshold) / temperature

    # log of every denominator term ω_ia exp(cos θ_ia/τ) (or exp(ω_ia cos θ_ia/τ)), anchor excluded
    log_terms = cos / temperature
    if weights is not None:
        if weights.shape != (n, n):
            raise ValueError(f"am_supcon_loss: weights must be ({n}, {n}), got {tuple(weights.shape)}")
        weights = weights.to(log_terms.dtype)
        if weight_mode == "exp":
            # ω = 0 becomes the smallest normal float: the term vanishes, its log stays finite
            log_terms = log_terms + torch.log(weights.clamp(min=torch.finfo(weights.dtype).tiny))
        else:
            log_terms = log_terms * weights
    if placement == "positives":
        log_terms = torch.where(pos, log_pos, log_terms)
    log_terms = log_terms.masked_fill(eye, float("-inf"))
    log_s = torch.logsumexp(log_terms, dim=1, keepdim=True)  # log S_i

    if placement == "positives":
        loss_pair = log_s - log_pos
    else:
        # log(S_i − term_ip): -inf where the pair term is (numerically) all of S_i.
        x = torch.exp(log_terms - log_s.clamp(min=torch.finfo(log_s.dtype).min))  # a zero row stays 0
        tiny = 4 * torch.finfo(x.dtype).eps
        keep = x < 1.0 - tiny
        log_rest = torch.where(keep, log_s + torch.log1p(-torch.where(keep, x, torch.zeros_like(x))),
                               torch.full_like(x, float("-inf")))
        loss_pair = torch.logaddexp(log_pos, log_rest) - log_pos  # ℓ_ip for every (i, j)
    loss_pair = torch.where(pos, loss_pair, torch.zeros_like(loss_pair))
    if pos_weights is None:
        per_anchor = loss_pair.sum(dim=1)[anchors] / num_pos[anchors].to(loss_pair.dtype)
    else:
        v = torch.where(pos, pos_weights.to(loss_pair.dtype), torch.zeros_like(loss_pair))
        per_anchor = (v * loss_pair).sum(dim=1)[anchors] / v.sum(dim=1)[anchors].clamp_min(1e-12)
    return per_anchor.mean()


def supcon_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Plain SupCon (Khosla et al. 2020, L_out): :func:`am_supcon_loss` with m = 0, ω ≡ 1."""
    return am_supcon_loss(embeddings, labels, margin=0.0, temperature=temperature, weights=None)


def pair_statistics(z: torch.Tensor, labels: torch.Tensor, loss_from_cosines=None) -> dict:
    """What the contrastive loss sees and does per pair type, for train.csv (no effect on training).

    cos_pos / cos_neg: mean cosine of positive / negative pairs (anchor excluded).
    With ``loss_from_cosines`` (cos matrix -> loss), also the angular force on each pair,
    |∂L/∂θ_ij| = |(∂L/∂cos_ij + ∂L/∂cos_ji) sin θ_ij| (the norm of the pair's gradient on the
    unit sphere), summed per type and divided by N: grad_pos (pull) and grad_neg (push).
    """
    with torch.enable_grad():
        zz = F.normalize(z.detach().float(), dim=1)
        cos = (zz @ zz.t()).clamp(-1.0, 1.0).requires_grad_(loss_from_cosines is not None)
        n = cos.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=cos.device)
        same = labels.view(-1, 1) == labels.view(1, -1)
        pos, neg = same & ~eye, ~same
        c = cos.detach()
        out = {"cos_pos": float(c[pos].mean()) if bool(pos.any()) else float("nan"),
               "cos_neg": float(c[neg].mean()) if bool(neg.any()) else float("nan"),
               "grad_pos": float("nan"), "grad_neg": float("nan")}
        if loss_from_cosines is not None:
            (g,) = torch.autograd.grad(loss_from_cosines(cos), cos)
            force = ((g + g.t()) * torch.sqrt((1.0 - c * c).clamp_min(0.0))).abs()
            out["grad_pos"] = float(force[pos].sum()) / (2 * n)  # each pair appears as (i,j) and (j,i)
            out["grad_neg"] = float(force[neg].sum()) / (2 * n)
    return out
