"""Per-step training records: a log line every ``log_interval`` steps and ``EXP/train.csv``.

The CSV holds one row per optimiser step (columns :data:`COLUMNS`) and is
rewritten atomically at each epoch end, so it always matches the checkpoints;
after a resume, rows beyond the restored step are dropped.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Dict, List

from pyspk.io import atomic_write_text

log = logging.getLogger("pyspk.train")
# cos_pos/cos_neg: mean cosine of positive/negative pairs in the batch; grad_pos/grad_neg: the
# contrastive loss's angular force on them per anchor (pyspk.losses.supcon.pair_statistics);
# caa_w_*: the CAA weights of negative pairs (pyspk.losses.caa.weight_statistics)
COLUMNS = (
    "epoch",
    "step",
    "loss",
    "loss_cls",
    "loss_con",
    "alpha",
    "lr",
    "margin",
    "con_margin",
    "acc",
    "frames_per_s",
    "cos_pos",
    "cos_neg",
    "grad_pos",
    "grad_neg",
    "caa_w_mean",
    "caa_w_std",
    "caa_w_lt_half",
)


class StepLog:
    def __init__(self, csv_path, log_interval: int, enabled: bool = True):
        self.path, self.interval, self.enabled = Path(csv_path), log_interval, enabled
        self.rows: List[Dict[str, float]] = []

    def restore(self, upto_step: int) -> None:
        """Keep the rows of an earlier run up to (and including) step ``upto_step``."""
        if not self.path.is_file():
            return
        with open(self.path, newline="") as f:
            self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= upto_step]

    def add(self, row: Dict[str, float], steps_per_epoch: int) -> None:
        self.rows.append(row)
        if self.enabled and (row["step"] % self.interval == 0):
            log.info(format_row(row, steps_per_epoch))

    def flush(self) -> None:
        if not self.enabled:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            vals = {k: r.get(k, "nan") for k in COLUMNS}  # rows restored from an older csv lack new columns
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in vals.items()})
        atomic_write_text(self.path, buf.getvalue())


def _f(x: float, fmt: str) -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else format(x, fmt)


def format_row(r: Dict[str, float], steps_per_epoch: int) -> str:
    in_epoch = (r["step"] - 1) % steps_per_epoch + 1
    return (
        f"epoch {r['epoch']} step {in_epoch}/{steps_per_epoch} (global {r['step']}) "
        f"loss {_f(r['loss'], '.4f')} cls {_f(r['loss_cls'], '.4f')} con {_f(r['loss_con'], '.4f')} "
        f"alpha {_f(r['alpha'], '.3f')} lr {r['lr']:.3g} margin {_f(r['margin'], '.3f')} "
        f"con_margin {_f(r['con_margin'], '.3f')} "
        f"acc {_f(r['acc'] * 100, '.1f')}% {r['frames_per_s']:.0f} frames/s"
    )
