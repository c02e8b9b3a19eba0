"""Encoder options checked before anything is built: their types, and the memory they need.

A config can ask for an encoder that cannot be built here: ``channels: 100000000``
makes PyTorch try to allocate the weights and fail deep in a traceback that names no
setting, and ``channels: 1e8`` is the *string* '1e8' to yaml. :func:`check_encoder_config`
refuses both with the option's name: every key must be an option of the encoder, an
option whose default is an integer (or true/false) takes one, and the parameters are
counted on the meta device (shapes only, no memory) and compared with this machine's
RAM.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Any, Optional

import torch

from pyspk.models import _nearest, build_encoder, encoder_class, encoder_kwargs

# float32 weight, its gradient and Adam's two moments: what training holds per parameter
TRAIN_BYTES_PER_PARAM = 16


class EncoderConfigError(ValueError):
    """An encoder option that cannot work; ``key`` names the option (a key of ``encoder.kwargs``)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def count_parameters(name: str, feat_dim: int = 80, **kwargs: Any) -> int:
    """Parameters of ``build_encoder(name, feat_dim, **kwargs)``, counted on the meta device:
    the layers get their shapes but no memory, so an encoder far too large to build is
    counted as quickly as a small one."""
    with torch.device("meta"):
        model = build_encoder(name, feat_dim=feat_dim, **kwargs)
    return sum(p.numel() for p in model.parameters())


def physical_memory() -> Optional[int]:
    """Bytes of RAM of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_gb(nbytes: float) -> str:
    gb = nbytes / 2**30
    return f"{gb:.1f} GB" if gb < 10 else f"{gb:,.0f} GB"


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _check_types(name: str, kwargs: dict) -> None:
    params = inspect.signature(encoder_class(name).__init__).parameters
    valid = encoder_kwargs(name)
    for key, value in kwargs.items():
        if key not in valid:
            raise EncoderConfigError(
                key,
                f"encoder {name!r} has no option {key!r}; did you mean "
                f"{_nearest(key, valid)!r}? (valid: {', '.join(valid)})",
            )
        default = params[key].default
        if isinstance(value, str) and _looks_numeric(value):
            raise EncoderConfigError(
                key,
                f"{value!r} is a string, not a number (yaml reads 1e8 and 1.0e8 as text); write the number in digits",
            )
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise EncoderConfigError(key, f"expected true or false, got {value!r}")
        elif isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int)):
            raise EncoderConfigError(key, f"expected an integer, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise EncoderConfigError(key, f"expected a finite number, got {value}")


def _largest_option(name: str, kwargs: dict, feat_dim: int, n: int) -> str:
    """The option whose value, put back to its default, shrinks the encoder most."""
    best, best_n = next(iter(kwargs), "name"), n
    for key in kwargs:
        try:
            m = count_parameters(name, feat_dim, **{k: v for k, v in kwargs.items() if k != key})
        except (ValueError, TypeError):
            continue
        if m < best_n:
            best, best_n = key, m
    return best


def check_encoder_config(name: str, kwargs: dict, feat_dim: int = 80, memory: Optional[int] = None) -> int:
    """Check ``encoder.kwargs`` of encoder ``name`` without building it; return its parameter count.

    Raises :class:`EncoderConfigError` (``key``: the option) for an unknown option, a value
    of the wrong type, options the encoder refuses, and an encoder whose training state
    (:data:`TRAIN_BYTES_PER_PARAM` bytes per parameter) exceeds ``memory`` (default: this
    machine's RAM, :func:`physical_memory`), naming the option that makes it that large.
    """
    _check_types(name, kwargs)
    try:
        n = count_parameters(name, feat_dim, **kwargs)
    except (ValueError, TypeError) as e:  # the encoder's own checks (ECAPA: channels divisible by scale)
        raise EncoderConfigError(next(iter(kwargs), "name"), str(e)) from None
    memory = physical_memory() if memory is None else memory
    need = n * TRAIN_BYTES_PER_PARAM
    if memory is not None and need > memory:
        key = _largest_option(name, kwargs, feat_dim, n)
        raise EncoderConfigError(
            key,
            f"{kwargs.get(key, '(default)')} makes an encoder of {n:.3g} parameters, "
            f"about {format_gb(need)} to train (weights, gradients, Adam state); "
            f"this machine has {format_gb(memory)} of memory",
        )
    return n
