"""SynthCeleb knobs: one validated dataclass, from conf/synth.yaml and command-line flags.

Precedence: dataclass defaults < top-level keys of the yaml < the yaml's ``sizes.<size>``
block < flags given on the command line. Every knob ``some_knob`` has the flag
``--some-knob``; a bad value raises :class:`SynthConfigError` naming that flag (and
the yaml key), before any audio is written. A misspelled yaml key is an error naming
the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from pyspk.keys import check_keys

KNOWN_LANGUAGES = ("en", "cmn")
NOISE_KINDS = ("white", "pink", "babble")
SIZES = ("tiny", "default")


class SynthConfigError(ValueError):
    """A bad knob value; the message names the flag."""


@dataclass
class SynthConfig:
    num_train_spk: int = 200
    num_test_spk: int = 40
    utts_per_lang: int = 20
    languages: List[str] = field(default_factory=lambda: list(KNOWN_LANGUAGES))
    min_dur: float = 2.0  # seconds, after silence trimming
    max_dur: float = 8.0
    trials_per_list: int = 8000  # half target, half non-target (fewer if targets run out)
    difficulty: float = 1.0  # scales every session-variability range below
    snr_db: List[float] = field(default_factory=lambda: [8.0, 30.0])
    noise_kinds: List[str] = field(default_factory=lambda: list(NOISE_KINDS))
    reverb_prob: float = 0.4  # x difficulty, capped at 1
    rt60: List[float] = field(default_factory=lambda: [0.15, 0.7])
    eq_tilt_db: float = 1.5  # std of the spectral tilt, dB/octave, x difficulty
    eq_peak_db: float = 3.5  # std of each of 3 peaking bands, dB, x difficulty
    level_dbfs: List[float] = field(default_factory=lambda: [-35.0, -15.0])
    babble_talkers: List[int] = field(default_factory=lambda: [3, 7])
    num_crowd: int = 16  # babble voices (not corpus speakers)
    # fraction of training utterances assigned to a wrong speaker (synth_train/label_noise lists
    # them); tables only, so the audio (and its digest) does not depend on it
    label_noise: float = 0.0

    def digest(self) -> str:
        """Hash of every knob (stamps compare it to decide what is up to date)."""
        knobs = dataclasses.asdict(self)
        knobs.pop("label_noise")  # labels only: the audio is the same
        return hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:16]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _fail(name: str, msg: str) -> None:
    raise SynthConfigError(f"{flag(name)} (config key '{name}'): {msg}")


def _range(cfg: SynthConfig, name: str, lo: Optional[float] = None, hi: Optional[float] = None) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        _fail(name, f"expected a range LO,HI, got {value!r}")
    a, b = value
    if a > b:
        _fail(name, f"range reversed: {a} > {b} (give LO,HI)")
    if lo is not None and a < lo:
        _fail(name, f"lower end {a} is below {lo}")
    if hi is not None and b > hi:
        _fail(name, f"upper end {b} is above {hi}")


def validate(cfg: SynthConfig) -> SynthConfig:
    """Check every knob; raise SynthConfigError naming the flag of the first bad one."""
    for name in ("num_train_spk", "num_test_spk", "utts_per_lang", "trials_per_list", "num_crowd"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            _fail(name, f"must be a positive integer, got {v!r}")
    if cfg.num_test_spk < 2:
        _fail("num_test_spk", f"needs at least 2 speakers for non-target trials, got {cfg.num_test_spk}")
    if not cfg.languages:
        _fail("languages", "no language given")
    for lang in cfg.languages:
        if lang not in KNOWN_LANGUAGES:
            near = difflib.get_close_matches(lang, KNOWN_LANGUAGES, n=1)
            _fail(
                "languages",
                f"unknown language '{lang}'"
                + (f" (did you mean '{near[0]}'?)" if near else "")
                + f"; known: {', '.join(KNOWN_LANGUAGES)}",
            )
    if len(set(cfg.languages)) != len(cfg.languages):
        _fail("languages", f"repeated language in {cfg.languages}")
    for kind in cfg.noise_kinds:
        if kind not in NOISE_KINDS:
            _fail("noise_kinds", f"unknown noise kind '{kind}'; known: {', '.join(NOISE_KINDS)}")
    if not (0.5 <= cfg.min_dur < cfg.max_dur <= 30.0):
        _fail(
            "min_dur" if cfg.min_dur < 0.5 else "max_dur",
            f"need 0.5 <= min_dur < max_dur <= 30 seconds, got {cfg.min_dur}, {cfg.max_dur}",
        )
    if not (0.0 <= cfg.difficulty <= 5.0):
        _fail("difficulty", f"must lie in [0, 5], got {cfg.difficulty}")
    if (
        isinstance(cfg.label_noise, bool)
        or not isinstance(cfg.label_noise, (int, float))
        or not 0.0 <= cfg.label_noise < 0.5
    ):
        _fail("label_noise", f"must be a fraction in [0, 0.5), got {cfg.label_noise!r}")
    if not (0.0 <= cfg.reverb_prob <= 1.0):
        _fail("reverb_prob", f"must lie in [0, 1], got {cfg.reverb_prob}")
    for name in ("eq_tilt_db", "eq_peak_db"):
        if getattr(cfg, name) < 0:
            _fail(name, f"must be >= 0, got {getattr(cfg, name)}")
    _range(cfg, "snr_db", -20.0, 100.0)
    _range(cfg, "rt60", 0.05, 3.0)
    _range(cfg, "level_dbfs", -60.0, -3.0)
    _range(cfg, "babble_talkers", 1, 20)
    return cfg


def load_config(path: Optional[Path], size: str, overrides: Mapping[str, Any]) -> SynthConfig:
    """Resolve the knobs for ``size`` from the yaml at ``path`` (optional) and ``overrides`` (flags)."""
    from pyspk.yamlio import safe_load

    if size not in SIZES:
        raise SynthConfigError(f"--size: unknown size '{size}' (tiny, default)")
    names = [f.name for f in dataclasses.fields(SynthConfig)]
    values: Dict[str, Any] = {}
    if path is not None:
        data = safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise SynthConfigError(f"{path}: expected a mapping of knobs")
        sizes = data.pop("sizes", {}) or {}
        check_keys(data, names + ["sizes"], str(path), error=SynthConfigError)
        check_keys(sizes, list(SIZES), f"{path}: sizes", error=SynthConfigError)
        values.update(data)
        block = sizes.get(size, {}) or {}
        check_keys(block, names, f"{path}: sizes.{size}", error=SynthConfigError)
        values.update(block)
    check_keys(overrides, names, "command line", error=SynthConfigError)
    values.update({k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items() if v is not None})
    try:
        cfg = SynthConfig(**values)
    except TypeError as e:  # pragma: no cover - keys are checked above
        raise SynthConfigError(str(e)) from None
    return validate(cfg)


def parse_range(text: str) -> Tuple[float, float]:
    """'LO,HI' -> (LO, HI) for range flags (order is checked by :func:`validate`)."""
    parts = [p for p in text.replace(":", ",").split(",") if p.strip()]
    if len(parts) != 2:
        raise ValueError(f"expected LO,HI, got '{text}'")
    return float(parts[0]), float(parts[1])
