"""Epoch checkpoints: write atomically, find the latest, restore RNGs, average.

``EXP/checkpoints/epoch_N.pt`` (N = epochs completed, 1-based) holds

    model (encoder state), head, prototypes (EMA), optimizer, scheduler,
    sampler, rng {python, numpy, torch, cuda}, epoch, step, speakers, config

and is written under a temporary name and renamed (:func:`pyspk.io.atomic_path`),
so a killed run leaves either the old set of checkpoints or the new one.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from pyspk.io import atomic_path

_EPOCH_RE = re.compile(r"^epoch_(\d+)\.pt$")


def checkpoint_path(exp_dir, epoch: int) -> Path:
    return Path(exp_dir) / "checkpoints" / f"epoch_{epoch}.pt"


def list_checkpoints(exp_dir) -> List[Path]:
    """Epoch checkpoints of ``exp_dir`` sorted by epoch."""
    d = Path(exp_dir) / "checkpoints"
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _EPOCH_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(exp_dir) -> Optional[Path]:
    ckpts = list_checkpoints(exp_dir)
    return ckpts[-1] if ckpts else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path, map_location="cpu") -> dict:
    try:
        # our own files; RNG states hold numpy arrays, so not weights_only
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path}: {e}") from e


def average_state_dicts(states: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Element-wise mean of floating tensors; integer buffers (BatchNorm counters) from the last."""
    if not states:
        raise ValueError("no checkpoints to average")
    out = {}
    for k, last in states[-1].items():
        if torch.is_floating_point(last):
            acc = torch.zeros_like(last, dtype=torch.float64)
            for s in states:
                acc += s[k].double()
            out[k] = (acc / len(states)).to(last.dtype)
        else:
            out[k] = last.clone()
    return out


def average_encoder(exp_dir, last_n: int) -> Dict[str, torch.Tensor]:
    """Mean encoder weights of the last ``last_n`` epoch checkpoints of ``exp_dir``."""
    ckpts = list_checkpoints(exp_dir)[-last_n:]
    return average_state_dicts([load_checkpoint(p)["model"] for p in ckpts])
