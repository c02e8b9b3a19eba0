"""Back-end configuration (conf/backend.yaml), validated: unknown keys name the nearest valid one.

Top-level keys are the settings of the scoring stage (which back-ends, calibration, minDCF
operating points); each back-end's own settings are a block under its registered name, checked
against its settings dataclass::

    backends: [cosine, asnorm, plda]
    asnorm: {top_n: 300}
    plda: {lda_dim: 150, length_norm: true, iters: 10, init: moments}

The flat keys of before the blocks (``lda_dim``, ``plda_iters``, ``asnorm_top_n``, ...: each
settings dataclass lists its own in ``flat_keys``) are still read, so back-end dirs fitted
earlier load as they were, and ``BackendConfig(lda_dim=4)`` still works.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from pyspk.backend.base import BACKENDS
from pyspk.keys import check_keys
from pyspk.yamlio import safe_load

DEFAULT_BACKENDS = ("cosine", "asnorm", "plda")
COMMON_KEYS = ("backends", "calibration", "calibration_trials", "p_targets")


@dataclass(init=False)
class BackendConfig:
    backends: Tuple[str, ...]  # fitted by pyspk backend, scored by pyspk score, in this order
    calibration: bool  # logistic-regression calibration + Cllr in metrics.json
    calibration_trials: Optional[str]  # trials list to fit it on (None = the first one)
    p_targets: Tuple[float, ...]
    settings: Dict[str, Any]  # back-end name -> its settings (a dataclass; None: it has none)

    def __init__(
        self,
        backends=DEFAULT_BACKENDS,
        calibration: bool = True,
        calibration_trials: Optional[str] = None,
        p_targets=(0.01, 0.001),
        settings: Optional[Dict[str, Any]] = None,
        **flat,
    ):
        if isinstance(backends, str) or not all(isinstance(b, str) for b in backends) or not backends:
            raise ValueError(f"backend config: backends must be a non-empty list of back-end names, got {backends!r}")
        if len(set(backends)) != len(backends):
            raise ValueError(f"backend config: backends lists a back-end twice: {list(backends)}")
        for name in (*backends, *(settings or {})):
            if name not in BACKENDS:
                raise ValueError(f"backend config: {BACKENDS.unknown(name)}")
        self.backends, self.calibration, self.calibration_trials = tuple(backends), calibration, calibration_trials
        self.p_targets = tuple(float(p) for p in p_targets)
        self.settings = dict(settings or {})
        by_flat = flat_keys()
        for key, value in flat.items():
            if key not in by_flat:
                raise TypeError(f"BackendConfig() got an unexpected keyword argument '{key}'")
            name, field = by_flat[key]
            self.settings[name] = dataclasses.replace(self.settings_of(name), **{field: value})

    def settings_of(self, name: str) -> Any:
        """The settings of back-end ``name``: its block, else its defaults."""
        if name not in self.settings:
            cls = BACKENDS.get(name).settings
            self.settings[name] = cls() if cls is not None else None
        return self.settings[name]


def flat_keys() -> Dict[str, Tuple[str, str]]:
    """Flat key of before the blocks -> (back-end, key of its block)."""
    out = {}
    for name in BACKENDS.names():
        cls = BACKENDS.get(name).settings
        for flat, key in getattr(cls, "flat_keys", {}).items():
            out[flat] = (name, key)
    return out


def from_dict(d: dict, where: str = "backend config") -> BackendConfig:
    names, flat = BACKENDS.names(), flat_keys()
    check_keys(d, [*COMMON_KEYS, *names, *flat], where)
    settings = {name: _block(name, d[name], where) for name in names if name in d}
    for key, (name, field) in flat.items():
        if key in d and field in (d.get(name) or {}):
            raise ValueError(f"{where}: '{key}' and '{name}: {field}' are the same setting; keep the '{name}' block")
    try:
        return BackendConfig(
            **{k: d[k] for k in COMMON_KEYS if k in d}, settings=settings, **{k: d[k] for k in flat if k in d}
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {str(e).removeprefix('backend config: ')}") from None


def _block(name: str, block, where: str):
    cls = BACKENDS.get(name).settings
    block = {} if block is None else block
    if not isinstance(block, dict):
        raise ValueError(f"{where}: {name}: expected a mapping of its settings, got {block!r}")
    check_keys(block, [f.name for f in dataclasses.fields(cls)] if cls is not None else [], f"{where}: {name}")
    if cls is None:
        return None
    try:
        return cls(**block)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {name}: {e}") from None


def load_config(path) -> BackendConfig:
    if path is None:
        return BackendConfig()
    data = safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of back-end options")
    return from_dict(data, where=str(path))


def to_dict(cfg: BackendConfig) -> dict:
    """The block form, with every listed back-end's settings written out."""
    d = {
        "backends": list(cfg.backends),
        "calibration": cfg.calibration,
        "calibration_trials": cfg.calibration_trials,
        "p_targets": list(cfg.p_targets),
    }
    for name in dict.fromkeys([*cfg.backends, *cfg.settings]):
        s = cfg.settings_of(name)
        if s is not None:
            d[name] = dataclasses.asdict(s)
    return d


__all__ = ["BackendConfig", "DEFAULT_BACKENDS", "from_dict", "load_config", "to_dict"]
