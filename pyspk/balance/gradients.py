"""The two tasks' gradients a balancer weighs, at the level its settings name, and the loss whose
backward applies the weights it picks.

Two levels (``balance.level``):

``embeddings``
    g_t = ∂L_t/∂Z, Z the batch of embeddings (Sener & Koltun's MGDA-UB, "upper bound"). Each costs
    one backward through the heads only; the step then back-propagates the weighted sum
    w1·L_cls + w2·L_con once through the encoder.
``parameters``
    g_t = ∂L_t/∂θ, θ the shared (encoder) parameters: the gradients the min-norm problem is
    stated for. One backward per task through the encoder (``torch.autograd.grad``); the
    encoder's gradient of the step is then w1·g1 + w2·g2, which by linearity is the gradient of
    w1·L_cls + w2·L_con, so no third backward is needed: :meth:`TaskGradients.total` returns the
    surrogate Σ_p ⟨G_p, p⟩ (G detached), whose backward writes exactly G into every parameter's
    ``.grad`` (and lets DDP, gradient scaling and clipping see it as usual). The step costs one
    forward and two backwards instead of one and one.

Task-specific parameters (the head's class weights; anything with a gradient that is not the
encoder's) follow their own loss: ``head_grad: full`` gives them ∂L_cls/∂W + ∂L_con/∂W
(Sener & Koltun 2018, Alg. 2: each task's parameters take their task's gradient), ``head_grad:
alpha`` w1·∂L_cls/∂W + w2·∂L_con/∂W (the gradient of the weighted sum).

Under data parallelism the inner products are those of the global batch's gradients: at the
embedding level each rank holds a block of rows of Z, so summing the ranks' products is exact;
at the parameter level each rank holds a partial sum of the same vector, so the gradients
themselves are summed over ranks first (their mean is what DDP would apply).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

LEVELS = ("embeddings", "parameters")
HEAD_GRADS = ("full", "alpha")


@dataclass
class ParamGroups:
    """The parameters a parameter-level balancer differentiates: ``shared`` (the encoder's) and
    ``own`` (every other trained parameter of the objective: the head's)."""

    shared: List[torch.nn.Parameter]
    own: List[torch.nn.Parameter]


def _grads(loss: torch.Tensor, params: Sequence[torch.Tensor], retain: bool) -> List[torch.Tensor]:
    got = torch.autograd.grad(loss, list(params), retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(got, params)]


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    if not tensors:
        return torch.zeros(0)
    return torch.cat([t.detach().reshape(-1).float() for t in tensors])


class TaskGradients:
    """g1 (of L_cls) and g2 (of L_con) at one level; build with :meth:`at_embeddings` or
    :meth:`at_parameters`, read :meth:`products`, then :meth:`total` for the step's loss."""

    def __init__(self, level: str, loss_cls: torch.Tensor, loss_con: torch.Tensor, loss_scale: float = 1.0):
        self.level, self.loss_cls, self.loss_con, self.loss_scale = level, loss_cls, loss_con, float(loss_scale)
        self.g1 = self.g2 = None  # flat float32 vectors (the global batch's at the parameter level)
        self.params: Optional[ParamGroups] = None
        self.own1: List[torch.Tensor] = []
        self.own2: List[torch.Tensor] = []
        self.prods: Optional[torch.Tensor] = None

    @classmethod
    def at_embeddings(
        cls, loss_cls, loss_con, shared: torch.Tensor, all_reduce: Optional[Callable] = None
    ) -> "TaskGradients":
        if not shared.requires_grad:
            raise ValueError("balance: `shared` (the embedding batch) must require grad")
        self = cls("embeddings", loss_cls, loss_con)
        (g1,) = _grads(loss_cls, [shared], retain=True)
        (g2,) = _grads(loss_con, [shared], retain=True)
        self.g1, self.g2 = g1.detach().reshape(-1), g2.detach().reshape(-1)
        self.prods = inner_products(self.g1, self.g2)
        if all_reduce is not None:  # rows of Z split over ranks: the products add up
            self.prods = all_reduce(self.prods)
        return self

    @classmethod
    def at_parameters(
        cls,
        loss_cls,
        loss_con,
        params: ParamGroups,
        all_reduce: Optional[Callable] = None,
        world_size: int = 1,
        loss_scale: float = 1.0,
    ) -> "TaskGradients":
        """``loss_scale``: the losses are multiplied by it before differentiating and the
        gradients divided by it after (float16's gradient scaling; 1 elsewhere)."""
        shared = [p for p in params.shared if p.requires_grad]
        if not shared:
            raise ValueError("balance.level parameters: the encoder has no trained parameters")
        own = [p for p in params.own if p.requires_grad]
        self = cls("parameters", loss_cls, loss_con, loss_scale)
        self.params = ParamGroups(shared, own)
        both = shared + own
        s = self.loss_scale
        grads1 = _grads(loss_cls * s if s != 1.0 else loss_cls, both, retain=True)
        grads2 = _grads(loss_con * s if s != 1.0 else loss_con, both, retain=False)  # the last use
        n = len(shared)
        g = torch.cat([_flat(grads1[:n]), _flat(grads2[:n])])
        if all_reduce is not None:  # each rank holds a partial sum of the same vector
            g = all_reduce(g) / world_size
        if s != 1.0:
            g = g / s
        self.g1, self.g2 = g[: g.numel() // 2], g[g.numel() // 2 :]
        self.own1 = [t.detach() / s for t in grads1[n:]]
        self.own2 = [t.detach() / s for t in grads2[n:]]
        self.prods = inner_products(self.g1, self.g2)
        return self

    def products(self) -> tuple:
        """(g1·g1, g1·g2, g2·g2) as Python floats (float64 sums)."""
        return tuple(self.prods.tolist())

    def overflowed(self) -> bool:
        """Non-finite gradients of float16-scaled losses: the gradient scaler skips this step, so
        the balancer takes any finite weights instead of solving for them. Unscaled, a non-finite
        gradient is an error, which the balancers' solvers raise."""
        return self.loss_scale != 1.0 and not all(math.isfinite(v) for v in self.products())

    def logged(self, w_cls: float, total: torch.Tensor) -> float:
        """The loss train.csv reports: w_cls·L_cls + (1 − w_cls)·L_con (NaN when ``total`` is not finite)."""
        if not math.isfinite(float(total.detach())):
            return float("nan")
        return w_cls * float(self.loss_cls.detach()) + (1.0 - w_cls) * float(self.loss_con.detach())

    def total(
        self, w1: float, w2: float, head_grad: str = "full", head_loss: Optional[Callable] = None, shared=None
    ) -> torch.Tensor:
        """The loss whose backward gives the encoder w1·g1 + w2·g2 and the task-specific
        parameters their own gradients (``head_grad``, module doc).

        Embedding level: w1·L_cls + w2·L_con, plus (1 − w1)·L_cls(sg(Z)) with ``head_grad: full``
        (``head_loss`` applied to the detached ``shared``), which gives the head all of ∂L_cls/∂W
        and leaves the encoder's gradient as it is. Parameter level: the surrogate of the module doc.
        """
        if head_grad not in HEAD_GRADS:
            raise ValueError(f"balance: head_grad must be one of {', '.join(HEAD_GRADS)}, got {head_grad!r}")
        if self.level == "embeddings":
            total = w1 * self.loss_cls + w2 * self.loss_con
            if head_grad == "full" and w1 != 1.0 and head_loss is not None:
                total = total + (1.0 - w1) * head_loss(shared.detach().float())
            return total
        combined = w1 * self.g1 + w2 * self.g2
        parts, offset = [], 0
        for p in self.params.shared:
            k = p.numel()
            parts.append((combined[offset : offset + k].view_as(p).to(p.dtype) * p).sum())
            offset += k
        for p, a, b in zip(self.params.own, self.own1, self.own2):
            grad = a + b if head_grad == "full" else w1 * a + w2 * b
            parts.append((grad * p).sum())
        return torch.stack(parts).sum()


def inner_products(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """float64 tensor [g1·g1, g1·g2, g2·g2] of the flattened gradients."""
    a = g1.detach().reshape(-1).double()
    b = g2.detach().reshape(-1).to(a.device).double()
    if a.shape != b.shape:
        raise ValueError(f"balance: gradients differ in size ({a.numel()} vs {b.numel()})")
    return torch.stack([a @ a, a @ b, b @ b])


def task_gradients(level: str, loss_cls, loss_con, shared, all_reduce, context: dict) -> TaskGradients:
    """:class:`TaskGradients` at ``level``; ``context`` is what :class:`pyspk.train.objective.Objective`
    hands a balancer beside its arguments: ``params`` (:class:`ParamGroups`), ``world_size``,
    ``loss_scale``."""
    if level == "embeddings":
        return TaskGradients.at_embeddings(loss_cls, loss_con, shared, all_reduce)
    if level != "parameters":
        raise ValueError(f"balance.level must be one of {', '.join(LEVELS)}, got {level!r}")
    if context.get("params") is None:
        raise ValueError("balance.level parameters: the objective was built without the encoder's parameters")
    return TaskGradients.at_parameters(
        loss_cls,
        loss_con,
        context["params"],
        all_reduce,
        world_size=context.get("world_size", 1),
        loss_scale=context.get("loss_scale", 1.0),
    )
