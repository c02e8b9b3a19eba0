"""The training config: one yaml, typed dataclasses, validated before training starts.

Every key of the yaml must be a field below. A misspelled key anywhere is a
:class:`ConfigError` that names the key's full path, the file, and the nearest
valid key (difflib); a value of the wrong type or outside its choices is an
error naming the key and what was expected, and so is NaN or infinity in any number
(yaml's ``.nan``/``.inf``: PyTorch would fail on it later without naming the key). A
key written twice in the yaml is refused naming both lines (:mod:`pyspk.yamlio`), and
``encoder.kwargs`` is checked against the encoder's options and this machine's memory
before anything is built (:mod:`pyspk.models.size`). Keys left out take the defaults
written here, and :func:`config_to_dict` gives the resolved config that the
trainer saves to ``EXP/config.yaml`` and into ``final.pt``.

Sections: ``encoder``, ``features`` (+ ``spec_augment``), ``loss`` (+
``margin_schedule``), ``balance``, ``sampler``, ``optim``, ``train``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from pyspk.yamlio import DuplicateKeyError, safe_load

KNOWN_ENCODERS = ("ecapa_tdnn", "tdnn", "resnet34")


class ConfigError(ValueError):
    """A config is malformed; the message names the file and the key."""


def _choice(*values, default):
    return field(default=default, metadata={"choices": values})


@dataclass
class EncoderConfig:
    name: str = "ecapa_tdnn"           # ecapa_tdnn | tdnn | resnet34 (pyspk.models.build_encoder)
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SpecAugmentConfig:
    """SpecAugment (Park et al. 2019) on each crop: zeroed time and frequency bands."""
    enabled: bool = True
    time_masks: int = 1
    time_width: int = 20               # each mask covers 0..time_width frames
    freq_masks: int = 1
    freq_width: int = 8                # each mask covers 0..freq_width bins


@dataclass
class FeaturesConfig:
    cmn: bool = True                   # mean normalisation at read time (pyspk.features.reader)
    cmn_window: Optional[int] = None   # None: whole utterance; N: sliding window of N frames
    vad: bool = True                   # keep only voiced frames when vad.scp exists
    crop_frames: int = 200             # random crop length (2 s at 10 ms)
    short_utts: str = _choice("error", "pad", default="error")  # shorter than the crop: error or repeat
    in_memory: str = _choice("auto", "always", "never", default="auto")
    memory_limit_mb: int = 4096        # "auto" loads all features into RAM below this size
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)


@dataclass
class MarginScheduleConfig:
    """Classifier margin ramp: linear from ``start`` to ``loss.margin`` over ``warmup_epochs``."""
    start: float = 0.0
    warmup_epochs: float = 0.0         # 0: the full margin from the first step


@dataclass
class LossConfig:
    cls: str = _choice("none", "softmax", "am", "aam", default="aam")
    margin: float = 0.2
    scale: float = 30.0
    easy_margin: bool = False
    margin_schedule: MarginScheduleConfig = field(default_factory=MarginScheduleConfig)
    con: str = _choice("none", "supcon", "am_supcon", default="none")
    con_margin: float = 0.2            # margin on positive pairs (am_supcon only)
    # form of the margin (pyspk/losses/supcon.py): angular cos(θ+m) (the paper), additive
    # cos θ − m (the authors' later code), threshold (angular past con_margin_threshold rad,
    # additive below it). Default additive: docs/method.md, 'What the recipes ship, and why'
    con_margin_type: str = _choice("angular", "additive", "threshold", default="additive")
    # own: the margined positive only in its own numerator and denominator term (the paper's
    # formula as written; docs/method.md, 'The formulas');
    # positives: every positive entry of the logit matrix margined (the authors' code)
    con_margin_on: str = _choice("own", "positives", default="positives")
    con_margin_threshold: float = 0.7854   # radians (pi/4), threshold form only
    # ramp of con_margin as for the classifier margin; from a near-collapsed random encoder
    # the full margin pulls every positive pair together faster than negatives push apart
    con_margin_schedule: MarginScheduleConfig = field(default_factory=MarginScheduleConfig)
    temperature: float = 0.07
    caa: bool = False                  # class-aware attention weights on negative pairs
    caa_scale: float = 30.0            # s inside the class posterior of CAA
    caa_floor: float = 0.0             # lower bound of the CAA weights
    caa_normalize: bool = True         # scale each anchor's negative weights to mean 1 (raw ones collapse)
    caa_mode: str = _choice("exp", "logit", default="exp")  # ω on the exp terms, or inside the logits
    caa_start_epoch: float = 0.0       # CAA off (ω = 1) before this epoch: prototypes trained first
    caa_positives: bool = True         # also weight positive pairs by min(a_i, a_p) (OSM-CAA; losses/caa.py)
    prototypes: str = _choice("auto", "head", "ema", default="auto")  # auto: head if cls != none
    ema_momentum: float = 0.9


@dataclass
class BalanceConfig:
    kind: str = _choice("none", "fixed", "mgda", default="none")
    lambda_: float = field(default=1.0, metadata={"key": "lambda"})  # fixed: L_cls + lambda * L_con
    # mgda: "full" trains the head's own weights with the whole dL_cls/dW (Sener & Koltun 2018,
    # Alg. 2: task-specific parameters follow their own loss); "alpha": with alpha * dL_cls/dW
    head_grad: str = _choice("full", "alpha", default="full")
    # mgda: gradient normalisation before the min-norm solve (Sener & Koltun's code): none,
    # l2 (g_t / ||g_t||), loss (g_t / L_t); how the losses are then combined: combine
    # authors: Li et al.'s MTL.py, alpha divided by ||g1 - g2|| instead of its square (balance/mgda.py)
    normalize: str = _choice("none", "l2", "loss", "authors", default="l2")
    # mgda: the losses combined as they are (raw: docs/method.md, 'The formulas', Sener &
    # Koltun's code; with l2 that is (L_cls + L_con) / 2 at every step) or with the
    # normalisation's scales (scaled)
    combine: str = _choice("raw", "scaled", default="raw")


@dataclass
class SamplerConfig:
    kind: str = _choice("pk", "shuffle", default="pk")
    speakers_per_batch: int = 32       # P
    utts_per_speaker: int = 2          # K (original utterances per speaker)
    views: int = 1                     # copies of each original drawn via utt2orig (1 or 2)
    batch_size: Optional[int] = None   # shuffle only; None: P * K originals


@dataclass
class OptimConfig:
    name: str = _choice("sgd", "adam", default="adam")
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-5
    warmup_steps: int = 0              # linear ramp from 0 to lr
    decay: str = _choice("none", "epoch", "step", default="epoch")  # exponential decay granularity
    final_lr: float = 1e-5             # lr reached at the end of training
    grad_clip: Optional[float] = None  # max global grad norm; None: off
    # the update's kernel, same maths: fused (one kernel over every tensor, PyTorch's fused
    # Adam/SGD; faster than loop on CPU: one pass instead of one per tensor, docs/speed.md),
    # foreach (PyTorch's multi-tensor path) or loop (one tensor at a time, PyTorch's CPU default
    # and what earlier systems trained with; it reproduces those bit for bit).
    # The three differ in the last bits of float rounding only.
    impl: str = _choice("fused", "foreach", "loop", default="fused")


@dataclass
class TrainConfig:
    epochs: int = 10
    steps_per_epoch: Optional[int] = None  # None: one pass over the original utterances
    num_workers: int = 0
    amp: bool = True                   # CUDA only (float16 autocast + grad scaling); ignored on CPU
    # CPU: bfloat16 autocast of the encoder's forward and backward (the head, the losses, the
    # optimiser and its state stay float32). A precision change, not a layout one: on a CPU with
    # bf16 GEMMs in hardware (avx512_bf16, AMX) it makes the step faster; without them
    # bfloat16 is emulated and much *slower* than float32 (docs/speed.md). ``auto``: bfloat16
    # where the CPU has those instructions, float32 elsewhere (the trainer logs which, and
    # final.pt records it); ``true`` forces bfloat16 (with a warning where it is emulated).
    # Its EER effect: docs/results/loss-study.md.
    cpu_amp: bool = field(default=False, metadata={"or": ("auto",)})
    log_interval: int = 20
    average_last: int = 1              # final.pt = mean of the last N epoch checkpoints
    seed: int = 777                    # --seed on the command line overrides it
    device: str = _choice("auto", "cpu", "cuda", default="auto")
    init_from: Optional[str] = None    # fine-tune from a checkpoint or final.pt
    threads: Optional[int] = None      # torch.set_num_threads per process; None: torch default
    compile: bool = False              # torch.compile the encoder (inductor): same maths, fused passes
    # Which library runs the frames-as-rows encoders' (ECAPA-TDNN, TDNN) float32 GEMMs in
    # training: mkl (F.linear) or onednn (the rows read as a channels-last image times a 1x1
    # kernel; its input gradient the same way, the weight gradient in MKL). On AMD EPYC oneDNN's
    # float32 GEMM is the faster of the two (docs/speed.md); auto: onednn on AMD CPUs, mkl
    # elsewhere. The same sums, rounded differently; final.pt records the choice.
    gemm: str = _choice("auto", "mkl", "onednn", default="auto")


# keys that change how fast a run goes or what it logs, never what it computes (beyond float
# rounding: thread counts and optimiser kernels sum in other orders)
SPEED_KEYS = frozenset({"train.num_workers", "train.threads", "train.compile", "train.log_interval",
                        "train.gemm", "optim.impl"})
# train.* keys that may change between a run and its resumption (those, more epochs, devices)
RESUMABLE = SPEED_KEYS | {"train.epochs", "train.amp", "train.cpu_amp", "train.average_last", "train.device",
                          "train.init_from"}


@dataclass
class Config:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- parsing
def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value, tp, where: str):
    """Check ``value`` against the annotation ``tp``; return it (ints widened to float)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where)
    if origin in (dict, Dict) or tp is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):    # yaml reads .nan and .inf as floats; no setting takes them
            raise ConfigError(f"{where}: expected a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls, data: dict, prefix: str, source: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix or '<top>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {_key(f): f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            full = f"{prefix}{k}"
            valid = [f"{prefix}{v}" for v in fields]
            near = difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.5)
            hint = f"did you mean '{prefix}{near[0]}'?" if near else f"valid keys: {', '.join(valid)}"
            raise ConfigError(f"{source}: unknown key '{full}' ({hint})")
    kwargs = {}
    for k, f in fields.items():
        if k not in data:
            continue
        tp, where = hints[f.name], f"{source}: key '{prefix}{k}'"
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data[k], f"{prefix}{k}.", source)
            continue
        if data[k] in f.metadata.get("or", ()) and isinstance(data[k], str):
            kwargs[f.name] = data[k]          # a bool key that also takes a word (cpu_amp: auto)
            continue
        try:
            value = _convert(data[k], tp, where)
        except ConfigError as e:
            if f.metadata.get("or"):
                raise ConfigError(f"{e} or {' or '.join(f.metadata['or'])}") from None
            raise
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise ConfigError(f"{where}: '{value}' is not one of {', '.join(map(str, choices))}{hint}")
        kwargs[f.name] = value
    return cls(**kwargs)


def config_from_dict(data: dict, source: str = "<config>") -> Config:
    """Build and type-check a :class:`Config` (semantic checks: :func:`validate_config`)."""
    return _build(Config, data, "", source)


def load_config(path, overrides: Optional[dict] = None) -> Config:
    """Read a yaml config; ``overrides`` (same nesting) win over the file. Validates."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = safe_load(path.read_text())
    except DuplicateKeyError as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid yaml: {e}") from None
    # An empty file would silently train the built-in defaults: a config says what it trains.
    if data is None:
        raise ConfigError(f"{path}: the config is empty (expected a mapping of sections: encoder, loss, ...)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    if overrides:
        data = merge_overrides(data, overrides)
    cfg = config_from_dict(data, str(path))
    validate_config(cfg, str(path))
    return cfg


def merge_overrides(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in (nested mappings merged key by key; ``over`` wins)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_overrides(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def config_to_dict(cfg) -> dict:
    """The resolved config as plain yaml-able data (yaml keys, e.g. ``lambda``)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[_key(f)] = config_to_dict(v) if dataclasses.is_dataclass(v) else v
    return out


def dump_config(cfg) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


# --------------------------------------------------------------------------- semantics
def check_encoder(cfg: Config, source: str = "<config>", feat_dim: int = 80) -> None:
    """``encoder.kwargs`` checked without building the encoder (:mod:`pyspk.models.size`):
    options, their types, and whether training it fits in this machine's memory."""
    from pyspk.models import ENCODERS
    from pyspk.models.size import EncoderConfigError, check_encoder_config

    if cfg.encoder.name not in ENCODERS:
        return
    try:
        check_encoder_config(cfg.encoder.name, cfg.encoder.kwargs, feat_dim)
    except EncoderConfigError as e:
        raise ConfigError(f"{source}: key 'encoder.kwargs.{e.key}': {e}") from None


def validate_config(cfg: Config, source: str = "<config>",
                    known_encoders: Sequence[str] = KNOWN_ENCODERS) -> None:
    """Checks that need no data: the encoder's options and size (:func:`check_encoder`), losses,
    balance, sampler and optimiser consistency."""
    def fail(key, msg):
        raise ConfigError(f"{source}: key '{key}': {msg}")

    if cfg.encoder.name not in known_encoders:
        near = difflib.get_close_matches(cfg.encoder.name, list(known_encoders), n=1, cutoff=0.4)
        fail("encoder.name", f"unknown encoder '{cfg.encoder.name}'"
             + (f" (did you mean '{near[0]}'?)" if near else f" (known: {', '.join(known_encoders)})"))
    check_encoder(cfg, source)
    loss, bal, smp = cfg.loss, cfg.balance, cfg.sampler
    if loss.cls == "none" and loss.con == "none":
        fail("loss.cls", "loss.cls and loss.con are both 'none': nothing to train")
    both = loss.cls != "none" and loss.con != "none"
    if bal.kind != "none" and not both:
        fail("balance.kind", f"'{bal.kind}' balances two losses; set both loss.cls and loss.con")
    if bal.kind == "none" and both:
        fail("balance.kind", "two losses are configured; choose 'fixed' or 'mgda'")
    if loss.caa and loss.con == "none":
        fail("loss.caa", "class-aware attention weights the contrastive loss; set loss.con")
    if loss.prototypes == "head" and loss.cls == "none":
        fail("loss.prototypes", "'head' needs a classification head (loss.cls != none); use 'ema'")
    if loss.temperature <= 0:
        fail("loss.temperature", "must be > 0")
    if not 0.0 < loss.con_margin_threshold < 3.1416:
        fail("loss.con_margin_threshold", "must be in (0, pi) radians")
    if loss.caa_start_epoch < 0:
        fail("loss.caa_start_epoch", "must be >= 0")
    if not 0.0 <= loss.caa_floor <= 1.0:
        fail("loss.caa_floor", "must be in [0, 1]")
    if not 0.0 <= loss.ema_momentum < 1.0:
        fail("loss.ema_momentum", "must be in [0, 1)")
    if smp.speakers_per_batch < 1:
        fail("sampler.speakers_per_batch", "must be >= 1")
    if smp.utts_per_speaker < 1:
        fail("sampler.utts_per_speaker", "must be >= 1")
    if smp.views not in (1, 2):
        fail("sampler.views", "must be 1 or 2")
    if loss.con != "none":
        if smp.kind == "pk" and smp.utts_per_speaker * smp.views < 2:
            fail("sampler.utts_per_speaker", "a contrastive loss needs K >= 2 utterances (or views: 2) "
                 "per speaker so that every anchor has a positive")
        if smp.kind == "shuffle" and smp.views < 2:
            fail("sampler.views", "a contrastive loss with the shuffle sampler needs views: 2")
    if smp.batch_size is not None and smp.batch_size < 2:
        fail("sampler.batch_size", "must be >= 2")
    if cfg.features.crop_frames < 1:
        fail("features.crop_frames", "must be >= 1")
    if cfg.optim.lr <= 0 or cfg.optim.final_lr <= 0:
        fail("optim.lr", "lr and final_lr must be > 0")
    t = cfg.train
    if t.epochs < 1:
        fail("train.epochs", "must be >= 1")
    if t.steps_per_epoch is not None and t.steps_per_epoch < 1:
        fail("train.steps_per_epoch", "must be >= 1")
    if not 1 <= t.average_last <= t.epochs:
        fail("train.average_last", f"must be between 1 and train.epochs ({t.epochs})")
    if t.log_interval < 1:
        fail("train.log_interval", "must be >= 1")
    if t.num_workers < 0:
        fail("train.num_workers", "must be >= 0")
