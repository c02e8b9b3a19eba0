"""Large-margin fine-tuning (LMFT): a few more epochs of a trained system with longer crops, its
margins raised and a low learning rate (Thienpondt et al., "The IDLAB VoxSRC-20 submission",
2020; the ``*_lm.yaml`` configs of WeSpeaker and the LMFT stage of 3D-Speaker).

Longer crops make the training condition closer to whole test utterances, and a larger margin
asks for tighter speaker clusters once the embedding space is in place; a low learning rate keeps
the fine-tuning from undoing what was learnt. A system's LMFT config is its own config with the
changes of an ``lmft`` yaml (``conf/lmft.yaml``, or ``conf/<corpus>/lmft.yaml``; keys below) and
``train.init_from`` its training directory, whose last checkpoint holds the encoder and the head
(:meth:`pyspk.train.trainer.Trainer.init_from`): the head is kept, the optimiser starts afresh.

A head without a margin (``softmax``) and a system without a head get the longer crops and the
learning rate only; a pair loss's margin is raised only when ``pair_margin`` is set.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pyspk.train.config import ConfigError
from pyspk.train.config import _build as build_settings
from pyspk.yamlio import safe_load


@dataclass
class LmftSettings:
    """The keys of an lmft yaml (every one optional)."""

    epochs: int = 3  # fine-tuning epochs (the system's steps per epoch unless steps_per_epoch is set)
    steps_per_epoch: Optional[int] = None
    crop_frames: int = 600  # 6 s crops
    lr: float = 1.0e-4  # peak learning rate, decaying to final_lr as the system's schedule does
    final_lr: float = 2.5e-5
    warmup_steps: int = 0
    head_margin: Optional[float] = 0.5  # the head's margin (am, aam); null keeps the system's
    pair_margin: Optional[float] = None  # the pair loss's margin (am_supcon); null keeps it
    # the raised margins ramp from the system's over this many epochs (0: the new margin at once,
    # as WeSpeaker's *_lm.yaml)
    margin_warmup_epochs: float = 0.0

    def check(self, source: str) -> None:
        def fail(key, msg):
            raise ConfigError(f"{source}: key '{key}': {msg}")

        for key in ("epochs", "crop_frames"):
            if getattr(self, key) < 1:
                fail(key, "must be >= 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            fail("steps_per_epoch", "must be >= 1 or null")
        for key in ("lr", "final_lr", "margin_warmup_epochs"):
            v = getattr(self, key)
            if not (math.isfinite(v) and v >= 0):
                fail(key, "must be a finite number >= 0")
        for key in ("head_margin", "pair_margin"):
            v = getattr(self, key)
            if v is not None and not (math.isfinite(v) and 0 <= v < math.pi / 2):
                fail(key, "must be null or a margin in [0, pi/2)")


def read_lmft(path) -> LmftSettings:
    """An lmft yaml, read with the training config's schema (an unknown key or a wrong type is an
    error naming the file and the key), then range-checked."""
    data = safe_load(Path(path).read_text()) or {}
    settings = build_settings(LmftSettings, data, "", str(path))
    settings.check(str(path))
    return settings


def _raise_margin(block: dict, margin: Optional[float], warmup: float) -> None:
    """Ramp the block's margin from its trained value to ``margin``; with ``margin`` None keep the
    trained value from the first step (the system's own warm-up ramp from 0 must not run again
    on a model that has already trained at the full margin)."""
    if block is None or "margin" not in block:
        return
    old = block["margin"]
    if margin is None:
        block["margin_schedule"] = {"start": old, "warmup_epochs": 0.0}
        return
    block["margin"] = margin
    block["margin_schedule"] = {"start": old, "warmup_epochs": warmup}


def lmft_config(data: dict, settings: LmftSettings, init_from: str) -> dict:
    """The resolved config ``data`` (plain yaml data, every block filled in) with LMFT's changes."""
    out = copy.deepcopy(data)
    s = settings
    out["features"]["crop_frames"] = s.crop_frames
    out["optim"].update(lr=s.lr, final_lr=s.final_lr, warmup_steps=s.warmup_steps)
    out["train"]["epochs"] = s.epochs
    if s.steps_per_epoch is not None:
        out["train"]["steps_per_epoch"] = s.steps_per_epoch
    out["train"]["init_from"] = str(init_from)
    _raise_margin(out.get("head"), s.head_margin, s.margin_warmup_epochs)
    _raise_margin(out.get("pair_loss"), s.pair_margin, s.margin_warmup_epochs)
    return out
