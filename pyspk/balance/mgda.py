"""MGDA-UB balancing of the classification and contrastive losses (docs/method.md, 'The formulas').

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018:
for two tasks the min-norm point of the convex hull of the gradients {g1, g2} is
α·g1 + (1 − α)·g2 with

    α = clip( ((g2 − g1)·g2) / ‖g1 − g2‖², 0, 1 )       (α = 0.5 when g1 = g2).

"UB" (upper bound): the gradients are taken with respect to the shared
representation Z — here the batch of embeddings the encoder outputs — instead of
the encoder's parameters, so they cost one backward through the two small heads
each, and the encoder is back-propagated once, through the combined loss.

Variants (``normalize``), each solving the min-norm problem on scaled gradients c_t·g_t:

    none     c_t = 1                 (MGDA-UB as published)
    l2       c_t = 1/‖g_t‖           (Sener & Koltun's code, "l2")
    loss     c_t = 1/L_t             (their "loss" normalisation)
    authors  c_t = 1, α = clip((g2 − g1)·g2 / ‖g1 − g2‖, 0, 1)
             (Li et al.'s MTL.py: divides by the norm, not its square; not scale invariant)

and how the α found is applied (``combine``):

    raw      L = α L_cls + (1 − α) L_con         (Sener & Koltun's train_multi_task.py, and
             docs/method.md's formula: the normalisation only picks α; the losses keep their size)
    scaled   L = α c1 L_cls + (1 − α) c2 L_con   (the step is the min-norm point of the
             scaled gradients; with l2 the encoder gets the mean of the two unit gradients)

With two tasks and ``l2`` the scaled gradients are two unit vectors, whose min-norm
point is always α = 0.5; ``l2`` + ``raw`` is therefore L = (L_cls + L_con) / 2 at every
step, the fixed-weight sum: a fact of the method, kept visible in the logged α.

Registered as the balancer ``mgda`` (:class:`Mgda`) of :data:`pyspk.balance.BALANCERS`, with
the settings of the ``balance:`` block below; ``head_grad`` is in pyspk/train/objective.py's doc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from pyspk.balance import BALANCERS
from pyspk.balance.gradients import HEAD_GRADS, LEVELS, TaskGradients, inner_products, task_gradients

NORMALIZATIONS = ("none", "l2", "loss", "authors")
COMBINES = ("raw", "scaled")


def alpha_from_inner_products(g11: float, g12: float, g22: float, denominator: str = "square") -> float:
    """The min-norm α from the inner products g1·g1, g1·g2, g2·g2.

    ‖g1 − g2‖² = g11 − 2 g12 + g22 and (g2 − g1)·g2 = g22 − g12, so
    α = clip((g22 − g12) / (g11 − 2 g12 + g22), 0, 1). Split out so that a
    data-parallel caller can sum the three products over ranks first (the batch
    gradient is the concatenation of the ranks' gradients). Equal gradients
    (‖g1 − g2‖² ≤ 1e-12·max(g11, g22), both zero included) give 0.5; non-finite
    products raise FloatingPointError. ``denominator="norm"`` divides by ‖g1 − g2‖ instead
    (the authors' MTL.py), which is not the min-norm point.
    """
    dd = g11 - 2.0 * g12 + g22
    if not all(math.isfinite(v) for v in (g11, g12, g22)):
        raise FloatingPointError("min_norm_alpha: non-finite gradient (NaN or inf)")
    if dd <= 1e-12 * max(g11, g22) or dd <= 0.0:
        return 0.5
    if denominator == "norm":
        dd = math.sqrt(dd)
    elif denominator != "square":
        raise ValueError(f"alpha_from_inner_products: denominator must be square or norm, got {denominator!r}")
    return min(1.0, max(0.0, (g22 - g12) / dd))


def min_norm_alpha(g1: torch.Tensor, g2: torch.Tensor) -> float:
    """α ∈ [0, 1] minimising ‖α·g1 + (1 − α)·g2‖² (the two-gradient case of MGDA).

    Tensors of any shape (flattened); dot products in float64; see
    :func:`alpha_from_inner_products` for the formula and the equal-gradient case.
    """
    g11, g12, g22 = inner_products(g1, g2).tolist()
    return alpha_from_inner_products(g11, g12, g22)


def mgda_alpha(prods: tuple, normalize: str, loss_cls: float, loss_con: float) -> tuple:
    """(α, c1, c2) from the inner products (g1·g1, g1·g2, g2·g2) and the normalisation of the
    module doc (the scales c_t are Python floats)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"mgda: normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    g11, g12, g22 = prods
    c1 = c2 = 1.0
    if normalize == "l2":
        c1, c2 = 1.0 / max(g11, 1e-24) ** 0.5, 1.0 / max(g22, 1e-24) ** 0.5
    elif normalize == "loss":
        c1, c2 = 1.0 / max(loss_cls, 1e-12), 1.0 / max(loss_con, 1e-12)
    alpha = alpha_from_inner_products(
        c1 * c1 * g11, c1 * c2 * g12, c2 * c2 * g22, denominator="norm" if normalize == "authors" else "square"
    )
    return alpha, c1, c2


def mgda_combine(
    loss_cls: torch.Tensor,
    loss_con: torch.Tensor,
    shared: torch.Tensor,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    normalize: str = "none",
    combine: str = "raw",
) -> tuple[torch.Tensor, float]:
    """Combine the two losses with the MGDA-UB weight; return ``(total, alpha)``.

    g1 = ∂loss_cls/∂shared and g2 = ∂loss_con/∂shared come from
    ``torch.autograd.grad(..., retain_graph=True)``, which runs only the graph
    between the losses and ``shared`` (the heads), not the encoder. Then
    total = α·loss_cls + (1 − α)·loss_con with α a detached Python float; the caller
    does one ``total.backward()`` through heads and encoder. The encoder therefore
    receives α·g1 + (1 − α)·g2 through Z, and each head's own parameters get the
    gradient of the combined loss (the AAM head's W: α·∂L_cls/∂W). A loss that does
    not depend on ``shared`` contributes a zero gradient.

    ``all_reduce``: under data parallelism, a function that sums a small tensor over
    ranks (e.g. ``dist.all_reduce`` wrapped to return its argument); it is applied to
    the three inner products so that every rank gets the same α for the global batch.
    Under fp16 autocast the gradients w.r.t. ``shared`` may underflow; α is invariant
    to scaling both losses by one constant, so the caller may scale them if needed.
    ``normalize`` picks a variant of the module doc (the scales c_t are detached floats);
    ``combine`` whether the losses are combined with those scales (``scaled``) or as they
    are (``raw``).
    """
    if combine not in COMBINES:
        raise ValueError(f"mgda_combine: combine must be one of {', '.join(COMBINES)}, got {combine!r}")
    grads = TaskGradients.at_embeddings(loss_cls, loss_con, shared, all_reduce)
    alpha, c1, c2 = mgda_alpha(grads.products(), normalize, float(loss_cls.detach()), float(loss_con.detach()))
    if combine == "raw":
        c1 = c2 = 1.0
    return alpha * c1 * loss_cls + (1.0 - alpha) * c2 * loss_con, alpha


@dataclass
class MgdaSettings:
    """``balance: {name: mgda, ...}``: MGDA and its variants (module doc)."""

    name: str = "mgda"
    # where the gradients are taken (pyspk/balance/gradients.py): embeddings (MGDA-UB: the batch of
    # embeddings, one cheap backward through the heads per task) or parameters (the encoder's
    # parameters, Sener & Koltun's exact problem: one backward through the encoder per task)
    level: str = field(default="embeddings", metadata={"choices": LEVELS})
    # gradient normalisation before the min-norm solve (Sener & Koltun's code): none, l2
    # (g_t / ||g_t||), loss (g_t / L_t); authors: Li et al.'s MTL.py, alpha divided by ||g1 - g2||
    # instead of its square
    normalize: str = field(default="l2", metadata={"choices": NORMALIZATIONS})
    # the losses combined as they are (raw: docs/method.md, 'The formulas', Sener & Koltun's code;
    # with l2 that is (L_cls + L_con) / 2 at every step) or with the normalisation's scales (scaled)
    combine: str = field(default="raw", metadata={"choices": COMBINES})
    # "full" trains the head's own weights with the whole dL_cls/dW (Sener & Koltun 2018, Alg. 2:
    # task-specific parameters follow their own loss); "alpha": with alpha * dL_cls/dW
    head_grad: str = field(default="full", metadata={"choices": HEAD_GRADS})


@BALANCERS.register("mgda", MgdaSettings)
class Mgda:
    """α from the min-norm point of the two gradients at the settings' level; the step follows
    α·g1 + (1 − α)·g2 (:class:`pyspk.balance.gradients.TaskGradients`), the head its own loss
    with ``head_grad: full``."""

    level = property(lambda self: self.settings.level)

    def __init__(self, settings: MgdaSettings):
        self.settings = settings

    def __call__(self, loss_cls, loss_con, shared, head_loss, all_reduce=None, **context):
        s = self.settings
        grads = task_gradients(s.level, loss_cls, loss_con, shared, all_reduce, context)
        if grads.overflowed():
            alpha, c1, c2 = 0.5, 1.0, 1.0
        else:
            alpha, c1, c2 = mgda_alpha(
                grads.products(), s.normalize, float(loss_cls.detach()), float(loss_con.detach())
            )
        if s.combine == "raw":
            c1 = c2 = 1.0
        total = grads.total(alpha * c1, (1.0 - alpha) * c2, s.head_grad, head_loss, shared)
        return total, alpha, grads.logged(alpha, total)  # the unnormalised losses
