"""Checkpoints hold data, never code.

Unpickling can call any function a file names (``os.system`` included), and a
``torch.load`` that is not weights-only unpickles whatever a ``.pt`` file holds. So every
checkpoint pyspk writes holds only tensors and plain Python values (dict, list, tuple,
str, int, float, bool, None), checked on write by :func:`check_plain`, and every
checkpoint it reads goes through :func:`safe_load` (``weights_only=True``). A file the
safe loader refuses raises :class:`UnsafeCheckpoint` naming the file and the refused
global. Files written before this rule (numpy RNG states) are converted by
``pyspk migrate-checkpoint --i-trust-this-file FILE``, which also loads weights-only,
with numpy arrays, scalars and dtypes allowed besides (:func:`load_legacy`,
:func:`to_plain`); nothing in pyspk unpickles a file without restriction.
"""

from __future__ import annotations

import collections
import os
import pickle
import re
from typing import Any, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]

_SCALARS = (str, int, float, bool, type(None))
# what the weights-only unpickler rebuilds besides tensors (torch.Size is a tuple)
_CONTAINERS = (dict, collections.OrderedDict, list, tuple, torch.Size)
_TORCH_VALUES = (torch.dtype, torch.device)
_GLOBAL_RE = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


class UnsafeCheckpoint(ValueError):
    """A checkpoint holds a Python object that a weights-only load refuses to build."""


def check_plain(value: Any, where: str, who: str = "checkpoint") -> None:
    """TypeError unless ``torch.load(weights_only=True)`` can read ``value`` back.

    Types are matched exactly: numpy scalars (``np.float64`` is a float subclass),
    enums and namedtuples would be pickled under their own class and refused on load."""
    if type(value) in _SCALARS or isinstance(value, (torch.Tensor, *_TORCH_VALUES)):
        return
    if type(value) in (dict, collections.OrderedDict):
        for k, v in value.items():
            if type(k) not in _SCALARS:
                raise TypeError(f"{who}: key {k!r} in {where} is a {type(k).__name__}, not a plain value")
            check_plain(v, f"{where}[{k!r}]", who)
        return
    if type(value) in _CONTAINERS:
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]", who)
        return
    raise TypeError(
        f"{who}: {where} is a {type(value).__module__}.{type(value).__qualname__}; checkpoints hold only "
        f"tensors, dict, list, tuple, str, int, float, bool and None (convert paths to str, numpy values "
        f"with .item()/.tolist() or torch.from_numpy)"
    )


def refused_global(error: BaseException) -> str | None:
    """The global a weights-only load refused (``os.system``), from torch's error message."""
    m = _GLOBAL_RE.search(str(error))
    if m is None:
        return None
    return re.sub(r"^(posix|nt)\.", "os.", m.group(1))  # os.system pickles as posix.system


def safe_load(path: PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; :class:`UnsafeCheckpoint` naming the file and the
    refused type when it holds anything else, ValueError when it cannot be read at all."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        name = refused_global(e)
        if name is None:
            raise ValueError(f"cannot read checkpoint {path}: {e}") from e
        raise UnsafeCheckpoint(
            f"checkpoint {path} holds a Python object of type {name} that a safe load refuses; "
            f"if you trust this file, migrate it with: pyspk migrate-checkpoint --i-trust-this-file {path}"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:  # truncated, not a torch file
        raise ValueError(f"cannot read checkpoint {path}: {e}") from e


def _numpy_globals() -> list:
    """What a pickled numpy array or scalar names: its rebuild functions, ndarray, dtype and the
    dtype classes. Rebuilding them runs no code a file chooses (an object array's items are
    themselves rebuilt by the same restricted unpickler)."""
    from numpy._core import multiarray

    names = [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype]
    return names + [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]


def load_legacy(path: PathLike, i_trust_this_file: bool) -> Any:
    """Read a checkpoint of the format before :func:`check_plain` (numpy RNG state, numpy
    scalars) for ``pyspk migrate-checkpoint``: still a weights-only load, with numpy's arrays,
    scalars and dtypes allowed besides tensors and plain values, so a file holding anything
    else (``os.system``) is refused as :func:`safe_load` refuses it. The user's word
    (``i_trust_this_file``) is still asked for, since a migrated file is then trusted as data."""
    if not i_trust_this_file:
        raise UnsafeCheckpoint(f"checkpoint {path}: migrating needs --i-trust-this-file")
    with torch.serialization.safe_globals(_numpy_globals()):
        return safe_load(path)


def to_plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` with numpy arrays as tensors, numpy scalars as Python ones and paths as str;
    TypeError for anything else that :func:`check_plain` would refuse."""
    if type(value) in _SCALARS or isinstance(value, (torch.Tensor, *_TORCH_VALUES)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        out = collections.OrderedDict() if isinstance(value, collections.OrderedDict) else {}
        for k, v in value.items():
            out[to_plain(k, f"{where} key")] = to_plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, torch.Size):
        return value
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    for base in (bool, int, float, str):  # subclasses: IntEnum, str enums
        if isinstance(value, base):
            return base(value)
    raise TypeError(f"cannot convert {where}: a {type(value).__module__}.{type(value).__qualname__} has no plain form")
