"""Stable seeds: every random draw of the corpus comes from a generator keyed by
(corpus seed, purpose, id), so a speaker's voice or an utterance's channel does not
depend on generation order, worker count or Python's hash randomisation."""

from __future__ import annotations

import hashlib

import numpy as np


def stable_seed(seed: int, *keys: object) -> int:
    """A 63-bit integer from SHA-256 of ``seed`` and ``keys`` (stable across runs and machines)."""
    text = ":".join([str(int(seed))] + [str(k) for k in keys])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & (2**63 - 1)


def stable_rng(seed: int, *keys: object) -> np.random.Generator:
    """A numpy Generator (PCG64) seeded by :func:`stable_seed`."""
    return np.random.default_rng(stable_seed(seed, *keys))
