"""Margin schedules: a loss's margin as a pure function of the training position.

The position is the number of epochs done, a float (epoch + step / steps_per_epoch), which the
objective hands to every component before each step (``set_progress``). A pure function of it
needs no state: a resumed run gets the same margin at the same step.

    m(e) = start + (margin - start) * min(1, e / warmup_epochs)      (warmup_epochs > 0)
    m(e) = margin                                                    (warmup_epochs <= 0)

A full margin on an untrained head or a near-collapsed random encoder stalls or collapses
training, so the recipes ramp both margins in (docs/method.md, 'The formulas').
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MarginSchedule:
    """``margin_schedule:`` of a head or a pair loss: a linear ramp from ``start`` to its margin."""

    start: float = 0.0
    warmup_epochs: float = 0.0  # 0: the full margin from the first step

    def at(self, epochs: float, margin: float) -> float:
        return margin_at(epochs, margin, self.start, self.warmup_epochs)


def margin_at(epoch_float: float, margin: float, start: float = 0.0, warmup_epochs: float = 0.0) -> float:
    """Margin after ``epoch_float`` epochs of training (see the module docstring)."""
    if warmup_epochs <= 0:
        return margin
    return start + (margin - start) * min(1.0, epoch_float / warmup_epochs)
