"""MGDA-UB balancing of the classification and contrastive losses (METHOD.md §4).

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018:
for two tasks the min-norm point of the convex hull of the gradients {g1, g2} is
α·g1 + (1 − α)·g2 with

    α = clip( ((g2 − g1)·g2) / ‖g1 − g2‖², 0, 1 )       (α = 0.5 when g1 = g2).

"UB" (upper bound): the gradients are taken with respect to the shared
representation Z — here the batch of embeddings the encoder outputs — instead of
the encoder's parameters, so they cost one backward through the two small heads
each, and the encoder is back-propagated once, through the combined loss.
"""

from __future__ import annotations

import math

import torch


def min_norm_alpha(g1: torch.Tensor, g2: torch.Tensor) -> float:
    """α ∈ [0, 1] minimising ‖α·g1 + (1 − α)·g2‖² (the two-gradient case of MGDA).

    Tensors of any shape (flattened); dot products in float64. Equal gradients
    (‖g1 − g2‖² ≤ 1e-12·max(‖g1‖², ‖g2‖²), both zero included) give 0.5.
    Non-finite gradients raise FloatingPointError.
    """
    a = g1.detach().reshape(-1).double()
    b = g2.detach().reshape(-1).to(a.device).double()
    if a.shape != b.shape:
        raise ValueError(f"min_norm_alpha: gradients differ in size ({a.numel()} vs {b.numel()})")
    diff = b - a
    dd = float(diff @ diff)
    scale = max(float(a @ a), float(b @ b))
    if not (math.isfinite(dd) and math.isfinite(scale)):
        raise FloatingPointError("min_norm_alpha: non-finite gradient (NaN or inf)")
    if dd <= 1e-12 * scale or dd == 0.0:
        return 0.5
    alpha = float(diff @ b) / dd
    return min(1.0, max(0.0, alpha))


def mgda_combine(loss_cls: torch.Tensor, loss_con: torch.Tensor, shared: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Combine the two losses with the MGDA-UB weight; return ``(total, alpha)``.

    g1 = ∂loss_cls/∂shared and g2 = ∂loss_con/∂shared come from
    ``torch.autograd.grad(..., retain_graph=True)``, which runs only the graph
    between the losses and ``shared`` (the heads), not the encoder. Then
    total = α·loss_cls + (1 − α)·loss_con with α a detached Python float; the caller
    does one ``total.backward()`` through heads and encoder. The encoder therefore
    receives α·g1 + (1 − α)·g2 through Z, and each head's own parameters get the
    gradient of the combined loss (the AAM head's W: α·∂L_cls/∂W). A loss that does
    not depend on ``shared`` contributes a zero gradient. Under fp16 autocast the
    gradients w.r.t. ``shared`` may underflow; α is invariant to scaling both
    losses by one constant, so the caller may scale them if needed.
    """
    if not shared.requires_grad:
        raise ValueError("mgda_combine: `shared` (the embedding batch) must require grad")
    grads = []
    for loss in (loss_cls, loss_con):
        (g,) = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        grads.append(torch.zeros_like(shared) if g is None else g)
    alpha = min_norm_alpha(grads[0], grads[1])
    total = alpha * loss_cls + (1.0 - alpha) * loss_con
    return total, alpha
