"""Back-end configuration (conf/backend.yaml), validated: unknown keys name the nearest valid one."""

from __future__ import annotations

import dataclasses
from pyspk.keys import check_keys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pyspk.yamlio import safe_load


@dataclass
class BackendConfig:
    lda_dim: int = 150              # 0 = no LDA; clipped to min(dim, speakers - 1)
    length_norm: bool = True        # length-normalise after LDA, before PLDA
    plda_iters: int = 10            # EM iterations (Kaldi's ivector-compute-plda default is 10)
    plda_init: str = "moments"      # moments | identity (Kaldi starts EM from identity matrices)
    asnorm_top_n: int = 300         # cohort scores kept per embedding (clipped to the cohort size)
    calibration: bool = True        # logistic-regression calibration + Cllr in metrics.json
    calibration_trials: Optional[str] = None  # trials list to fit it on (None = the first one)
    p_targets: tuple = (0.01, 0.001)

    def __post_init__(self):
        if self.lda_dim < 0 or self.plda_iters < 1 or self.asnorm_top_n < 1:
            raise ValueError(f"backend config: lda_dim >= 0, plda_iters >= 1 and asnorm_top_n >= 1 required ({self})")
        if self.plda_init not in ("moments", "identity"):
            raise ValueError(f"backend config: plda_init must be 'moments' or 'identity', got {self.plda_init!r}")
        self.p_targets = tuple(float(p) for p in self.p_targets)


def from_dict(d: dict, where: str = "backend config") -> BackendConfig:
    check_keys(d, [f.name for f in dataclasses.fields(BackendConfig)], where)
    return BackendConfig(**d)


def load_config(path) -> BackendConfig:
    if path is None:
        return BackendConfig()
    data = safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of back-end options")
    return from_dict(data, where=str(path))


def to_dict(cfg: BackendConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["p_targets"] = list(cfg.p_targets)
    return d
