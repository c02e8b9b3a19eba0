"""Epoch checkpoints: write atomically, find the latest, restore RNGs, average.

``EXP/checkpoints/epoch_N.pt`` (N = epochs completed, 1-based) holds

    model (encoder state), head, objective (EMA prototypes), optimizer, scheduler,
    scaler, sampler, rng {python, numpy, torch, cuda}, epoch, step, speakers, config,
    data_id

and is written under a temporary name and renamed (:func:`pyspk.io.atomic_path`),
so a killed run leaves either the old set of checkpoints or the new one.

Every value is a tensor or a plain Python value, so checkpoints are read with
``weights_only=True`` (:mod:`pyspk.safe_load`): a file holding a pickled object is
refused, never run. The RNG states are stored in that form (:func:`rng_state`);
checkpoints written before, with numpy's state as an ndarray, are converted by
:func:`migrate_checkpoint` (``pyspk migrate-checkpoint``).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from pyspk.io import atomic_path, payload_nbytes
from pyspk.safe_load import check_plain, load_legacy, safe_load, to_plain

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


def _numpy_state(legacy: tuple) -> dict:
    """``np.random.get_state()`` (name, uint32 keys, pos, has_gauss, cached_gaussian) as plain values."""
    name, keys, pos, has_gauss, gauss = legacy
    return {
        "bit_generator": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def rng_state() -> dict:
    """Every RNG training draws from, as tensors and plain values (a weights-only load reads it)."""
    state = {"python": random.getstate(), "numpy": _numpy_state(np.random.get_state()), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["bit_generator"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path, state: dict) -> None:
    check_plain(state, "state", f"checkpoint {path}")
    with atomic_path(path, payload_nbytes(state)) as tmp:  # a full disk: one line with the space needed
        torch.save(state, tmp)


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint read with ``weights_only=True``; :class:`pyspk.safe_load.UnsafeCheckpoint`
    (a ValueError) naming the file and the refused type when it holds anything else."""
    return safe_load(path, map_location)


def migrate_checkpoint(src, dst=None, i_trust_this_file: bool = False) -> Path:
    """Rewrite a checkpoint of an earlier format (numpy RNG state, numpy scalars, paths) so that
    a weights-only load reads it; ``dst`` defaults to ``src``. ``src`` is read weights-only with
    numpy values allowed (:func:`pyspk.safe_load.load_legacy`), and only with
    ``i_trust_this_file`` (the user's word, never a default). The result is
    written atomically and read back with ``weights_only=True`` before it replaces anything;
    TypeError when some value has no plain form."""
    dst = Path(src if dst is None else dst)
    state = load_legacy(src, i_trust_this_file)
    if isinstance(state, dict) and isinstance(state.get("rng"), dict):
        rng = dict(state["rng"])
        if isinstance(rng.get("numpy"), tuple):
            rng["numpy"] = _numpy_state(rng["numpy"])
        state = {**state, "rng": rng}
    state = to_plain(state, "checkpoint")
    check_plain(state, "checkpoint", f"migrate {src}")
    with atomic_path(dst) as tmp:
        torch.save(state, tmp)
        safe_load(tmp)
    return dst


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
