"""The ``data`` section of a training config: where training reads from, and the online settings.

    data:
      source: audio                  # features (ark/scp, today's path) | audio (wav.scp) | shards
      fbank_config: conf/fbank.yaml  # the offline features' settings (None: FbankConfig defaults)
      augment_config: conf/augment.yaml   # stage 2's settings (None: no augmentation)
      kind_weights: {clean: 1, reverb: 1}  # relative weight of each kind a view draws (unlisted: 1)
      scope: crop                    # crop: decode and augment the crop only; utterance: the whole
      vad_margin: 0.25               # crop scope with VAD: decode (1 + margin) x the crop
      streams: 4                     # shards: streams per rank (num_workers should divide it)
      shuffle_buffer: 500            # shards: utterances held per stream

Every field is a plain type with ``choices`` metadata, so the trainer's config parser
(:mod:`pyspk.train.config`) can nest :class:`OnlineConfig` as a section as it is; the checks
that need the augmentation config are :func:`check_online_config`'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from pyspk.keys import check_keys

SOURCES = ("features", "audio", "shards")
SCOPES = ("crop", "utterance")


@dataclass
class OnlineConfig:
    # features: precomputed ark/scp (pyspk.data.dataset); audio: a Kaldi data dir's wav.scp
    # (+ segments), decoded, augmented and featurised on the fly; shards: `pyspk shards` output
    source: str = field(default="features", metadata={"choices": SOURCES})
    fbank_config: Optional[str] = None
    augment_config: Optional[str] = None
    # relative weight of each kind a view draws: "clean" and the kinds augment_config enables
    # (reverb, noise, music, babble, and sp<f> when speed copies keep their speaker); a kind
    # left out weighs 1, so {} draws uniformly, as views: 1 does over the offline combined set
    kind_weights: Dict[str, float] = field(default_factory=dict)
    musan_root: Optional[str] = None  # MUSAN noise/music/speech (else synthesised / other speakers)
    rirs_root: Optional[str] = None  # RIRS_NOISES (else a pool simulated once, seeded)
    rir_dir: Optional[str] = None  # where the simulated pool is kept (None: the caller's work dir)
    # crop: decode, augment and featurise the crop only (VAD and CMN over the decoded window);
    # utterance: the whole utterance, exactly the offline path's VAD/CMN, then the crop
    scope: str = field(default="crop", metadata={"choices": SCOPES})
    vad_margin: float = 0.25
    streams: int = 4
    shuffle_buffer: int = 500

    @classmethod
    def from_dict(cls, d, source: str = "data config") -> "OnlineConfig":
        """Build from a mapping (the ``data:`` section); unknown keys and bad choices are errors."""
        check_keys(d, [f.name for f in dataclasses.fields(cls)], source, what="data option")
        cfg = cls(**dict(d))
        for f in dataclasses.fields(cls):
            choices = f.metadata.get("choices")
            if choices and getattr(cfg, f.name) not in choices:
                raise ValueError(
                    f"{source}: key 'data.{f.name}': '{getattr(cfg, f.name)}' is not one of {', '.join(choices)}"
                )
        return cfg


def view_kinds(aug) -> List[str]:
    """The kinds a view draws from: ``clean`` and every copy kind of ``aug`` (an AugmentConfig,
    or None: clean only). Speed factors are kinds only when speed copies keep their speaker;
    as new speakers (Kaldi's convention, the default) they are identities of the sampler."""
    if aug is None:
        return ["clean"]
    kinds = ["clean"] + [k for k in ("reverb", "noise", "music", "babble") if getattr(aug, k)]
    if aug.speed and not aug.speed_new_speakers:
        kinds += [f"sp{f:g}" for f in aug.speed_factors]
    return kinds


def check_online_config(cfg: OnlineConfig, aug, where: str = "data") -> List[float]:
    """Semantic checks; returns the draw probability of each of :func:`view_kinds` ``(aug)``."""

    def fail(key, msg):
        raise ValueError(f"{where}: key 'data.{key}': {msg}")

    kinds = view_kinds(aug)
    for k, w in cfg.kind_weights.items():
        if k not in kinds:
            from pyspk.keys import nearest_hint

            fail("kind_weights", f"'{k}' is not a kind this augmentation config makes{nearest_hint(k, kinds)}")
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not w >= 0:
            fail("kind_weights", f"weight of '{k}' must be a number >= 0, got {w!r}")
    weights = [float(cfg.kind_weights.get(k, 1.0)) for k in kinds]
    if sum(weights) <= 0:
        fail("kind_weights", "every kind weighs 0: nothing to draw")
    if not 0 <= cfg.vad_margin <= 10:
        fail("vad_margin", f"must be in [0, 10], got {cfg.vad_margin}")
    if cfg.streams < 1:
        fail("streams", f"must be >= 1, got {cfg.streams}")
    if cfg.shuffle_buffer < 1:
        fail("shuffle_buffer", f"must be >= 1, got {cfg.shuffle_buffer}")
    total = sum(weights)
    return [w / total for w in weights]
