"""conf/augment.yaml: which Kaldi v2-style copies to make and their settings.

Defaults follow egs/voxceleb/v2/run.sh: reverb with small/medium-room RIRs; noise
in the foreground, one noise after another with 1 s between them, each at its own
SNR of 0/5/10/15 dB (``--fg-interval 1 --fg-snrs 15:10:5:0``); one music in the
background at 5/8/10/15 dB; babble of 3-7 speakers in the background, each at its
own SNR of 13-20 dB (``--num-bg-noises 3:4:5:6:7 --bg-snrs 20:17:15:13``).
Speed perturbation (0.9/1.1) is off by default. Unknown keys are errors naming the
nearest valid key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Mapping

from pyspk.keys import check_keys


@dataclass
class AugmentConfig:
    reverb: bool = True
    noise: bool = True
    music: bool = True
    babble: bool = True
    speed: bool = False
    num_rooms: int = 50  # simulated RIR pool size (no --rirs-root)
    noise_snrs: List[float] = field(default_factory=lambda: [0.0, 5.0, 10.0, 15.0])
    noise_interval_s: float = 1.0  # gap between foreground noises (Kaldi --fg-interval)
    noise_event_s: List[float] = field(default_factory=lambda: [0.5, 4.0])  # synthesised noise length range
    noise_betas: List[float] = field(default_factory=lambda: [0.0, 1.0, 2.0])  # white, pink, brown
    music_snrs: List[float] = field(default_factory=lambda: [5.0, 8.0, 10.0, 15.0])
    babble_snrs: List[float] = field(default_factory=lambda: [13.0, 15.0, 17.0, 20.0])
    babble_min_speakers: int = 3
    babble_max_speakers: int = 7
    speed_factors: List[float] = field(default_factory=lambda: [0.9, 1.1])
    speed_new_speakers: bool = True  # Kaldi convention: sp0.9-<spk> is another speaker

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "augment config") -> "AugmentConfig":
        check_keys(d, [f.name for f in dataclasses.fields(cls)], source, what="augment option")
        cfg = cls(**dict(d))
        if not 1 <= cfg.babble_min_speakers <= cfg.babble_max_speakers:
            raise ValueError(f"{source}: need 1 <= babble_min_speakers <= babble_max_speakers")
        if (
            cfg.noise_interval_s < 0
            or len(cfg.noise_event_s) != 2
            or not 0 < cfg.noise_event_s[0] <= cfg.noise_event_s[1]
        ):
            raise ValueError(f"{source}: need noise_interval_s >= 0 and noise_event_s: [lo, hi] with 0 < lo <= hi")
        return cfg

    @classmethod
    def from_yaml(cls, path) -> "AugmentConfig":
        from pyspk.yamlio import safe_load

        with open(path, encoding="utf-8") as f:
            return cls.from_dict(safe_load(f) or {}, source=str(path))

    def kinds(self) -> List[str]:
        """Names of the enabled copies, in the order they are made."""
        out = [k for k in ("reverb", "noise", "music", "babble") if getattr(self, k)]
        if self.speed:
            out += [f"sp{f:g}" for f in self.speed_factors]
        return out
