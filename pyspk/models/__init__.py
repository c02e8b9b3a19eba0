"""Speaker encoders by name, and their checkpoints.

Every encoder maps (batch, frames, feat_dim) float features to (batch, embed_dim)
embeddings and has an ``embed_dim`` attribute:

    ecapa_tdnn  ECAPA-TDNN (Desplanques et al. 2020), 192-d         ecapa_tdnn.EcapaTdnn
    tdnn        x-vector TDNN (Snyder et al. 2018), 512-d           tdnn.XVectorTdnn
    resnet34    thin ResNet34 (32 base channels, stats pooling), 256-d   resnet.ResNet34

A checkpoint written by :func:`save_encoder` is a plain ``torch.save`` dict
``{"encoder": name, "encoder_kwargs": kwargs, "state_dict": ..., "extra": extra}``
holding only tensors and plain Python values (dict, list, tuple, str, int, float,
bool, None), so :func:`load_encoder` can read it with ``weights_only=True``
(:mod:`pyspk.safe_load`): a file that holds any other object is refused, never run.
"""

from __future__ import annotations

import difflib
import inspect
import os
from typing import Any, Union

import torch
from torch import nn

from pyspk.io import atomic_path, payload_nbytes
from pyspk.registry import Registry, RegistryError
from pyspk.safe_load import UnsafeCheckpoint, check_plain, safe_load

# name -> encoder class; a new encoder is one file with @ENCODERS.register("name") over its class
# (here, or in a module named by PYSPK_PLUGINS)
ENCODERS: Registry[type[nn.Module]] = Registry("encoder")

from .ecapa_tdnn import EcapaTdnn  # noqa: E402  (the built-in encoders register themselves)
from .resnet import ResNet34  # noqa: E402
from .tdnn import XVectorTdnn  # noqa: E402

PathLike = Union[str, os.PathLike]


def _nearest(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.0)
    return close[0] if close else ""


def encoder_class(name: str) -> type[nn.Module]:
    """The encoder class registered under ``name``; ValueError naming the nearest name otherwise."""
    try:
        return ENCODERS.get(name).obj
    except RegistryError as e:
        raise ValueError(str(e)) from None


def encoder_kwargs(name: str) -> list[str]:
    """The keyword arguments ``build_encoder(name, ...)`` accepts (besides feat_dim)."""
    params = inspect.signature(encoder_class(name).__init__).parameters
    return [p for p in params if p not in ("self", "feat_dim")]


def build_encoder(name: str, feat_dim: int = 80, **kwargs: Any) -> nn.Module:
    """Build the encoder ``name`` for ``feat_dim``-dimensional features.

    An unknown name or keyword raises ValueError naming the nearest valid one.
    Initialisation is PyTorch's default and so fixed by ``torch.manual_seed``.
    """
    cls = encoder_class(name)
    valid = encoder_kwargs(name)
    for key in kwargs:
        if key not in valid:
            raise ValueError(
                f"encoder {name!r} has no option {key!r}; did you mean {_nearest(key, valid)!r}? "
                f"(valid: {', '.join(valid)})"
            )
    return cls(feat_dim=feat_dim, **kwargs)


def save_encoder(path: PathLike, model: nn.Module, name: str, kwargs: dict, extra: dict | None = None) -> None:
    """Atomically write ``{"encoder", "encoder_kwargs", "state_dict", "extra"}`` to ``path``.

    ``model`` may be wrapped in DDP (its ``.module`` is saved). ``kwargs`` are the
    arguments of :func:`build_encoder` other than ``name`` (``feat_dim`` included
    when it is not 80).
    """
    encoder_class(name)
    model = getattr(model, "module", model)
    kwargs = dict(kwargs)
    extra = dict(extra or {})
    check_plain(kwargs, "kwargs", "save_encoder")
    check_plain(extra, "extra", "save_encoder")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {"encoder": name, "encoder_kwargs": kwargs, "state_dict": state, "extra": extra}
    with atomic_path(path, payload_nbytes(state)) as tmp:
        torch.save(ckpt, tmp)


def load_encoder(path: PathLike, map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Read a :func:`save_encoder` checkpoint; return ``(model.eval(), checkpoint_dict)``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_encoder: no checkpoint at {path}")
    try:
        ckpt = safe_load(path, map_location)  # weights_only: a pickled object is refused, not run
    except UnsafeCheckpoint:
        raise
    except ValueError as e:  # corrupt or truncated file
        raise ValueError(f"load_encoder: cannot read {path} as an encoder checkpoint: {e}") from e
    missing = [k for k in ("encoder", "encoder_kwargs", "state_dict") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"load_encoder: {path} is not an encoder checkpoint (missing {', '.join(missing)})")
    kwargs = dict(ckpt["encoder_kwargs"])
    feat_dim = kwargs.pop("feat_dim", 80)
    model = build_encoder(ckpt["encoder"], feat_dim=feat_dim, **kwargs)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"load_encoder: weights in {path} do not fit encoder {ckpt['encoder']!r} {kwargs}: {e}") from e
    ckpt.setdefault("extra", {})
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    return model.eval(), ckpt


__all__ = [
    "ENCODERS",
    "build_encoder",
    "encoder_class",
    "encoder_kwargs",
    "save_encoder",
    "load_encoder",
    "EcapaTdnn",
    "XVectorTdnn",
    "ResNet34",
]
