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

Registered as the pair losses ``supcon`` (:class:`SupCon`) and ``am_supcon`` (:class:`AmSupCon`) of
:data:`pyspk.losses.PAIR_LOSSES`, with the settings of the ``pair_loss:`` block below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from pyspk.losses import PAIR_LOSSES, PairWeights
from pyspk.losses.schedule import MarginSchedule

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


def margined_cosine(
    cos: torch.Tensor, margin: float, margin_type: str = "angular", threshold: float = math.pi / 4
) -> torch.Tensor:
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
    return am_supcon_and_cosines(
        embeddings, labels, margin, temperature, weights, margin_type, placement, weight_mode, threshold, pos_weights
    )[0]


def am_supcon_and_cosines(
    embeddings,
    labels,
    margin=0.2,
    temperature=0.07,
    weights=None,
    margin_type="angular",
    placement="own",
    weight_mode="exp",
    threshold=math.pi / 4,
    pos_weights=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`am_supcon_loss`, the N x N cosine matrix it was computed from, in its graph)."""
    check_inputs(embeddings, labels, "am_supcon_loss")
    if temperature <= 0:
        raise ValueError(f"am_supcon_loss: temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        z = F.normalize(_at_least_float32(embeddings), dim=1)
        cos = z @ z.t()
        loss = supcon_from_cosines(
            cos,
            labels,
            margin,
            temperature,
            None if weights is None else _at_least_float32(weights),
            margin_type,
            placement,
            weight_mode,
            threshold,
            None if pos_weights is None else _at_least_float32(pos_weights),
        )
        return loss, cos


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def supcon_from_cosines(
    cos,
    labels,
    margin,
    temperature,
    weights=None,
    margin_type="angular",
    placement="own",
    weight_mode="exp",
    threshold=math.pi / 4,
    pos_weights=None,
) -> torch.Tensor:
    """:func:`am_supcon_loss` from the N x N cosine matrix (so its gradient per pair can be measured)."""
    _choice(placement, PLACEMENTS, "placement")
    _choice(weight_mode, WEIGHT_MODES, "weight_mode")
    n = cos.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=cos.device)
    pos = (labels.view(-1, 1) == labels.view(1, -1)) & ~eye
    num_pos = pos.sum(dim=1)
    anchors = num_pos > 0
    if not bool(anchors.any()):
        raise ValueError(
            f"am_supcon_loss: no anchor has a positive in a batch of {n} with "
            f"{int(labels.unique().numel())} distinct labels (need >= 2 samples of some class)"
        )
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
        log_rest = torch.where(
            keep, log_s + torch.log1p(-torch.where(keep, x, torch.zeros_like(x))), torch.full_like(x, float("-inf"))
        )
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


def pair_cosines(z: torch.Tensor) -> torch.Tensor:
    """cos θ_ij of every pair of ``z`` (N x N), detached, in float32 at least."""
    zz = F.normalize(_at_least_float32(z.detach()), dim=1)
    return zz @ zz.t()


def pair_statistics(cos: torch.Tensor, labels: torch.Tensor, loss: Optional[torch.Tensor] = None) -> dict:
    """What a pair loss sees and does per pair type, for train.csv (no effect on training).

    ``cos``: the N x N cosine matrix, ``loss``: the pair loss computed from it in the step's
    forward (or None). cos_pos / cos_neg: mean cosine of positive / negative pairs (anchor
    excluded). With ``loss``, also the angular force on each pair, taken from the graph the
    forward built (a backward from ``loss`` to ``cos`` only):
    |∂L/∂θ_ij| = |(∂L/∂cos_ij + ∂L/∂cos_ji) sin θ_ij| (the norm of the pair's gradient on the
    unit sphere), summed per type and divided by N: grad_pos (pull) and grad_neg (push).
    """
    n = cos.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=cos.device)
    same = labels.view(-1, 1) == labels.view(1, -1)
    pos, neg = same & ~eye, ~same
    c = cos.detach().clamp(-1.0, 1.0)
    out = {
        "cos_pos": float(c[pos].mean()) if bool(pos.any()) else float("nan"),
        "cos_neg": float(c[neg].mean()) if bool(neg.any()) else float("nan"),
        "grad_pos": float("nan"),
        "grad_neg": float("nan"),
    }
    if loss is not None and cos.requires_grad:
        with torch.enable_grad():
            (g,) = torch.autograd.grad(loss, cos, retain_graph=True)
        force = ((g + g.t()) * torch.sqrt((1.0 - c * c).clamp_min(0.0))).abs()
        out["grad_pos"] = float(force[pos].sum()) / (2 * n)  # each pair appears as (i,j) and (j,i)
        out["grad_neg"] = float(force[neg].sum()) / (2 * n)
    return out


# --------------------------------------------------------------------------- the pair losses
def _temperature_errors(temperature: float) -> list:
    return [("temperature", "must be > 0")] if temperature <= 0 else []


@dataclass
class SupConSettings:
    """``pair_loss: {name: supcon, ...}``: SupCon, no margin (Khosla et al. 2020, L_out)."""

    name: str = "supcon"
    temperature: float = 0.07

    def errors(self, config) -> list:
        return _temperature_errors(self.temperature)


@dataclass
class AmSupConSettings:
    """``pair_loss: {name: am_supcon, ...}``: AM-SupCon, a margin on the positive pairs."""

    name: str = "am_supcon"
    margin: float = 0.2  # m on positive pairs
    # the form of the margin (module doc): angular cos(θ+m) (the paper), additive cos θ − m (the
    # authors' later code), threshold (angular past margin_threshold rad, additive below it).
    # Default additive: docs/method.md, 'What the recipes ship, and why'
    margin_type: str = field(default="additive", metadata={"choices": MARGIN_TYPES})
    # own: the margined positive only in its own numerator and denominator term (the paper's
    # formula as written); positives: every positive entry of the logit matrix margined (the authors' code)
    margin_on: str = field(default="positives", metadata={"choices": PLACEMENTS})
    margin_threshold: float = 0.7854  # radians (pi/4), threshold form only
    # ramp of the margin (pyspk/losses/schedule.py): from a near-collapsed random encoder the full
    # margin pulls every positive pair together faster than negatives push apart
    margin_schedule: MarginSchedule = field(default_factory=MarginSchedule)
    temperature: float = 0.07

    def errors(self, config) -> list:
        out = _temperature_errors(self.temperature)
        if not 0.0 < self.margin_threshold < 3.1416:
            out.append(("margin_threshold", "must be in (0, pi) radians"))
        return out


@PAIR_LOSSES.register("supcon", SupConSettings)
class SupCon:
    """L_con of a batch: :func:`am_supcon_loss` with margin 0 and the step's pair weights, if any.

    Called as ``loss(z, labels, weights, stats)``; records its cosine matrix and loss in the
    step's statistics hook ``stats`` (pair cosines and forces of train.csv)."""

    margin_type, placement, threshold = "additive", "positives", math.pi / 4

    def __init__(self, settings):
        self.settings = settings
        self.margin = 0.0

    def __call__(
        self, z: torch.Tensor, labels: torch.Tensor, weights: Optional[PairWeights] = None, stats=None
    ) -> torch.Tensor:
        w = weights or PairWeights(None)
        loss, cos = am_supcon_and_cosines(
            z,
            labels,
            margin=self.margin,
            temperature=self.settings.temperature,
            weights=w.negatives,
            margin_type=self.margin_type,
            placement=self.placement,
            weight_mode=w.mode,
            threshold=self.threshold,
            pos_weights=w.positives,
        )
        if stats is not None:
            stats.pairs(cos, loss)
        return loss


@PAIR_LOSSES.register("am_supcon", AmSupConSettings)
class AmSupCon(SupCon):
    """AM-SupCon: :class:`SupCon` with the margin of its settings, ramped by its schedule."""

    def __init__(self, settings):
        super().__init__(settings)
        self.margin = settings.margin
        self.margin_type, self.placement = settings.margin_type, settings.margin_on
        self.threshold = settings.margin_threshold

    def set_progress(self, epochs: float) -> None:
        self.margin = self.settings.margin_schedule.at(epochs, self.settings.margin)
