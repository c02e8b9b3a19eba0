"""Nash-MTL balancing of the classification and contrastive losses (docs/method.md, 'The formulas').

Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022. The update is the Nash
bargaining solution among the tasks: d = Σ_t α_t g_t with α > 0 solving

    (Gᵀ G α)_t = 1 / α_t   for every task t          (G = [g_1 … g_T], the tasks' gradients)

so that every task's directional derivative d·g_t = 1/α_t is positive, and the product of the
tasks' gains is maximal within a ball. The paper proves convergence to a Pareto-stationary point
(their Theorems 5.3-5.4), the guarantee MGDA has too, with an update that is invariant to each
loss's scale, where MGDA's min-norm point leans towards the smaller gradient. Their code solves
the system by a sequence of convex programs. For two tasks it has a closed form:

    with n_t = ‖g_t‖ and c = g1·g2 / (n1 n2), the two equations are
        α1 (n1² α1 + n1 n2 c α2) = 1,   α2 (n1 n2 c α1 + n2² α2) = 1;
    their difference gives n1² α1² = n2² α2², so n1 α1 = n2 α2 (both positive), and then
        α_t = 1 / (n_t √(1 + c)),   d = (g1/n1 + g2/n2) / √(1 + c),

the bisector of the two unit gradients (‖d‖ = √2 whatever the gradients). It exists when the
gradients are not exactly opposed (c > −1); ``min_one_plus_cos`` floors 1 + c. Liu et al.'s IMTL-G
("Towards Impartial Multi-task Learning", ICLR 2021: equal projections of d on every unit
gradient, weights summing to one) gives the same direction for two tasks, α_t ∝ 1/n_t;
``scale: unit_sum`` divides the weights by their sum, which is IMTL-G's update.

Registered as the balancer ``nash_mtl``; the gradients are the encoder parameters' by default
(``level``, pyspk/balance/gradients.py). train.csv's ``alpha`` is α1 / (α1 + α2), the share of the
classification loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pyspk.balance import BALANCERS
from pyspk.balance.gradients import HEAD_GRADS, LEVELS, task_gradients

SCALES = ("nash", "unit_sum")


def nash_weights(g11: float, g12: float, g22: float, min_one_plus_cos: float = 1e-3) -> tuple:
    """(α1, α2) of the two-task Nash bargaining solution from the inner products (module doc).

    A zero gradient has no direction to bargain over: its weight is taken as that of a gradient
    of norm 1e-12 (the other task keeps the whole step). Non-finite products raise
    FloatingPointError."""
    if not all(math.isfinite(v) for v in (g11, g12, g22)):
        raise FloatingPointError("nash_mtl: non-finite gradient (NaN or inf)")
    n1, n2 = max(g11, 0.0) ** 0.5, max(g22, 0.0) ** 0.5
    n1, n2 = max(n1, 1e-12), max(n2, 1e-12)
    one_plus_cos = max(1.0 + g12 / (n1 * n2), min_one_plus_cos)
    root = one_plus_cos**0.5
    return 1.0 / (n1 * root), 1.0 / (n2 * root)


@dataclass
class NashMtlSettings:
    """``balance: {name: nash_mtl, ...}``: Nash-MTL (module doc)."""

    name: str = "nash_mtl"
    # where the gradients are taken (pyspk/balance/gradients.py): the encoder's parameters, as the
    # method is stated, or the batch of embeddings (one cheap backward through the heads per task)
    level: str = field(default="parameters", metadata={"choices": LEVELS})
    # nash: the published weights (the update has norm sqrt(2)); unit_sum: divided by their sum
    # (IMTL-G's update for two tasks: the same direction)
    scale: str = field(default="nash", metadata={"choices": SCALES})
    # 1 + cos(g1, g2) floored here: exactly opposed gradients have no bargaining solution
    min_one_plus_cos: float = 1e-3
    # as mgda's: the head's own weights follow all of dL_cls/dW (full) or alpha_1 times it (alpha)
    head_grad: str = field(default="full", metadata={"choices": HEAD_GRADS})

    def errors(self, config) -> list:
        ok = math.isfinite(self.min_one_plus_cos) and 0 < self.min_one_plus_cos <= 1
        return [] if ok else [("min_one_plus_cos", "must be in (0, 1]")]


@BALANCERS.register("nash_mtl", NashMtlSettings)
class NashMtl:
    """The step follows α1·g1 + α2·g2 with the weights of :func:`nash_weights`."""

    level = property(lambda self: self.settings.level)

    def __init__(self, settings: NashMtlSettings):
        self.settings = settings

    def __call__(self, loss_cls, loss_con, shared, head_loss, all_reduce=None, **context):
        s = self.settings
        grads = task_gradients(s.level, loss_cls, loss_con, shared, all_reduce, context)
        if grads.overflowed():
            w1 = w2 = 0.5
        else:
            w1, w2 = nash_weights(*grads.products(), min_one_plus_cos=s.min_one_plus_cos)
        share = w1 / (w1 + w2)
        if s.scale == "unit_sum":
            w1, w2 = share, 1.0 - share
        total = grads.total(w1, w2, s.head_grad, head_loss, shared)
        return total, share, grads.logged(share, total)
