"""The losses of the training objective, each chosen by name in a system's yaml.

Three registries (:class:`pyspk.registry.Registry`); the block of the same name in the yaml
picks one entry and holds its settings (docs/method.md, 'The variants the configs offer'):

    HEADS          head:          classification heads over the training speakers
                                  (margin_softmax.py: softmax, am, aam)
    PAIR_LOSSES    pair_loss:     losses over the pairs of a P x K batch (supcon.py: supcon, am_supcon)
    PAIR_WEIGHTS   pair_weights:  weights of those pairs (caa.py: caa)

A new component is one file with ``@PAIR_LOSSES.register("name", Settings)`` over the object
that builds it, in this package or in a module named by ``PYSPK_PLUGINS``. ``Settings`` is a
dataclass whose first field is ``name: str`` and whose other fields are the block's keys
(typed; ``metadata={"choices": (...)}`` restricts a string); it may define
``errors(self, config) -> [(key, message)]`` for checks of values and of the other blocks.
What each kind is built with and called with (:class:`pyspk.train.objective.Objective` calls them):

    head          obj(settings, embed_dim, num_classes) -> nn.Module;
                  forward(z, labels) -> (loss, logits). Optional: set_progress(epochs),
                  ``margin`` (logged), ``weight`` (C x d: the prototypes CAA may use)
    pair loss     obj(settings) -> callable(z, labels, weights, stats) -> loss, where
                  ``weights`` is a :class:`PairWeights` or None and ``stats`` the step's
                  statistics hook (call ``stats.pairs(cos, loss)`` with the N x N cosines
                  the loss was computed from). Optional: set_progress(epochs), ``margin`` (logged)
    pair weights  obj(settings, num_classes, embed_dim, head) -> callable(z, labels, stats)
                  -> PairWeights or None (call ``stats.pair_weights(negatives)``). Optional:
                  set_progress, after_step(z, labels, gather), to(device), state_dict,
                  load_state_dict
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from pyspk.registry import Registry

HEADS = Registry("head")
PAIR_LOSSES = Registry("pair loss")
PAIR_WEIGHTS = Registry("pair weights")


@dataclass
class PairWeights:
    """What pair weights hand to a pair loss: ω of every pair (N x N; the loss applies it to the
    negative pairs), optional weights v of the positive pairs (N x N: a weighted mean over P(i)),
    and whether ω multiplies the exp terms (``exp``) or sits inside the logits (``logit``)."""

    negatives: torch.Tensor
    positives: Optional[torch.Tensor] = None
    mode: str = "exp"


# the built-in components register themselves on import
from pyspk.losses import caa, margin_softmax, supcon  # noqa: E402,F401
