"""Balancers: how the head's loss and the pair loss combine into the loss of a step.

``BALANCERS`` (:class:`pyspk.registry.Registry`): ``fixed`` (fixed.py), ``mgda`` with its
variants (mgda.py) and ``nash_mtl`` (nash.py), chosen by the ``balance:`` block of a system's yaml, which holds the
balancer's settings (a dataclass with ``name: str`` first, as for the losses:
:mod:`pyspk.losses`). A system with one loss has no ``balance:`` block.

A balancer is built as ``obj(settings)`` and called once per step as

    balancer(loss_cls, loss_con, shared, head_loss, all_reduce) -> (total, alpha, logged)

with ``shared`` the batch of embeddings both losses were computed from, ``head_loss(x)`` the
head's loss on other embeddings (x) with this step's labels, ``all_reduce`` a sum over ranks
(None on one process); ``total`` is what the step back-propagates, ``alpha`` the weight it
logs (NaN if none) and ``logged`` the loss it reports (a float, NaN when ``total`` is not finite).
A balancer whose settings have ``level: parameters`` weighs the gradients of the encoder's
parameters; it is also handed ``params`` (:class:`pyspk.balance.gradients.ParamGroups`),
``world_size`` and ``loss_scale`` as keywords, and builds its gradients with
:func:`pyspk.balance.gradients.task_gradients`.
"""

from __future__ import annotations

from pyspk.registry import Registry

BALANCERS = Registry("balancer")

# the built-in balancers register themselves on import
from pyspk.balance import fixed, mgda, nash  # noqa: E402,F401
