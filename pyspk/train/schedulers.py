"""The learning-rate schedule as a pure function of the training position.

It is a function of (step, epoch) only, so a resumed run that restores the
step counter gets exactly the same values; its "state" in a checkpoint is
just its settings (kept for inspection). The margins' schedules belong to the
losses that have margins (:mod:`pyspk.losses.schedule`).

Learning rate (warm-up, then exponential decay from ``lr`` to ``final_lr``):

    lr(t) = lr * (t + 1) / warmup_steps                      t < warmup_steps
    lr(t) = lr * (final_lr / lr) ** p                        otherwise

with ``p`` the fraction of decay done: ``epoch / (epochs - 1)`` for per-epoch
decay, ``(t - warmup) / (total_steps - warmup - 1)`` for per-step decay, 0 for none.
"""

from __future__ import annotations


class LrSchedule:
    def __init__(self, lr: float, final_lr: float, warmup_steps: int, decay: str, epochs: int, steps_per_epoch: int):
        if decay not in ("none", "epoch", "step"):
            raise ValueError(f"unknown decay '{decay}' (none, epoch, step)")
        self.lr, self.final_lr, self.warmup_steps = lr, final_lr, warmup_steps
        self.decay, self.epochs, self.steps_per_epoch = decay, epochs, steps_per_epoch

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based, global over epochs)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.decay == "none":
            return self.lr
        if self.decay == "epoch":
            p = (step // self.steps_per_epoch) / max(1, self.epochs - 1)
        else:
            total = self.epochs * self.steps_per_epoch
            p = (step - self.warmup_steps) / max(1, total - self.warmup_steps - 1)
        return self.lr * (self.final_lr / self.lr) ** min(1.0, p)

    def apply(self, optimizer, step: int) -> float:
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        """Settings come from the config; a checkpoint's are only checked for drift."""
        return None
