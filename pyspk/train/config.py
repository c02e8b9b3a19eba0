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

Sections: ``encoder``, ``features`` (+ ``spec_augment``), the objective's blocks ``head``,
``pair_loss``, ``pair_weights`` and ``balance``, ``sampler``, ``optim``, ``train``. Each
objective block names a registered component (``name: aam``; :mod:`pyspk.losses`,
:mod:`pyspk.balance`) and holds that component's settings, checked against its own settings
dataclass: an unknown name names the nearest registered one, a misspelled key the nearest
key of that component. A block left out (or ``null``) is no such component.

A config may build on another: ``base: FILE`` (a path relative to the config) is read
first and the config's keys are merged over it (:func:`merge_overrides`); bases may chain.
Configs of the layout before the objective's blocks (a ``loss:`` block, ``balance.kind``)
are read as the same settings in the new layout, with a warning (:mod:`pyspk.train.migrate`;
``pyspk migrate-config FILE`` rewrites them).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from pyspk.online.config import OnlineConfig
from pyspk.yamlio import DuplicateKeyError, safe_load

log = logging.getLogger("pyspk.config")


class ConfigError(ValueError):
    """A config is malformed; the message names the file and the key."""


def _choice(*values, default):
    return field(default=default, metadata={"choices": values})


@dataclass
class EncoderConfig:
    name: str = "ecapa_tdnn"  # a name of pyspk.models.ENCODERS: ecapa_tdnn | tdnn | resnet34
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SpecAugmentConfig:
    """SpecAugment (Park et al. 2019) on each crop: zeroed time and frequency bands."""

    enabled: bool = True
    time_masks: int = 1
    time_width: int = 20  # each mask covers 0..time_width frames
    freq_masks: int = 1
    freq_width: int = 8  # each mask covers 0..freq_width bins


@dataclass
class FeaturesConfig:
    cmn: bool = True  # mean normalisation at read time (pyspk.features.reader)
    cmn_window: Optional[int] = None  # None: whole utterance; N: sliding window of N frames
    vad: bool = True  # keep only voiced frames when vad.scp exists
    crop_frames: int = 200  # random crop length (2 s at 10 ms)
    short_utts: str = _choice("error", "pad", default="error")  # shorter than the crop: error or repeat
    in_memory: str = _choice("auto", "always", "never", default="auto")
    memory_limit_mb: int = 4096  # "auto" loads all features into RAM below this size
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)


@dataclass
class SamplerConfig:
    kind: str = _choice("pk", "shuffle", default="pk")
    speakers_per_batch: int = 32  # P
    utts_per_speaker: int = 2  # K (original utterances per speaker)
    views: int = 1  # copies of each original drawn via utt2orig (1 or 2)
    batch_size: Optional[int] = None  # shuffle only; None: P * K originals


@dataclass
class OptimConfig:
    name: str = _choice("sgd", "adam", default="adam")
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-5
    warmup_steps: int = 0  # linear ramp from 0 to lr
    decay: str = _choice("none", "epoch", "step", default="epoch")  # exponential decay granularity
    final_lr: float = 1e-5  # lr reached at the end of training
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
    amp: bool = True  # CUDA only (float16 autocast + grad scaling); ignored on CPU
    # CUDA autocast's type: float16 (with gradient scaling) or bfloat16 (same range as float32,
    # no scaling needed; GPUs from Ampere on)
    amp_dtype: str = _choice("float16", "bfloat16", default="float16")
    # CPU: bfloat16 autocast of the encoder's forward and backward (the head, the losses, the
    # optimiser and its state stay float32). A precision change, not a layout one: on a CPU with
    # bf16 GEMMs in hardware (avx512_bf16, AMX) it makes the step faster; without them
    # bfloat16 is emulated and much *slower* than float32 (docs/speed.md). ``auto``: bfloat16
    # where the CPU has those instructions, float32 elsewhere (the trainer logs which, and
    # final.pt records it); ``true`` forces bfloat16 (with a warning where it is emulated).
    # Its EER effect: docs/results/loss-study.md.
    cpu_amp: bool = field(default=False, metadata={"or": ("auto",)})
    log_interval: int = 20
    average_last: int = 1  # final.pt = mean of the last N epoch checkpoints
    seed: int = 777  # --seed on the command line overrides it
    device: str = _choice("auto", "cpu", "cuda", default="auto")
    init_from: Optional[str] = None  # fine-tune from a checkpoint or final.pt
    threads: Optional[int] = None  # torch.set_num_threads per process; None: torch default
    compile: bool = False  # torch.compile the encoder (inductor): same maths, fused passes
    # Which library runs the frames-as-rows encoders' (ECAPA-TDNN, TDNN) float32 GEMMs in
    # training: mkl (F.linear) or onednn (the rows read as a channels-last image times a 1x1
    # kernel; its input gradient the same way, the weight gradient in MKL). On AMD EPYC oneDNN's
    # float32 GEMM is the faster of the two (docs/speed.md); auto: onednn on AMD CPUs, mkl
    # elsewhere. The same sums, rounded differently; final.pt records the choice.
    gemm: str = _choice("auto", "mkl", "onednn", default="auto")


# keys that change how fast a run goes or what it logs, never what it computes (beyond float
# rounding: thread counts and optimiser kernels sum in other orders)
SPEED_KEYS = frozenset(
    {"train.num_workers", "train.threads", "train.compile", "train.log_interval", "train.gemm", "optim.impl"}
)
# train.* keys that may change between a run and its resumption (those, more epochs, devices)
RESUMABLE = SPEED_KEYS | {
    "train.epochs",
    "train.amp",
    "train.amp_dtype",
    "train.cpu_amp",
    "train.average_last",
    "train.device",
    "train.init_from",
}


def _component(registry: str):
    """A config block naming a component of ``registry`` ("module:NAME"); None: no component."""
    return field(default=None, metadata={"registry": registry})


@dataclass
class Config:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    # the objective (pyspk/train/objective.py): the settings dataclass of the named component
    head: Optional[Any] = _component("pyspk.losses:HEADS")  # softmax | am | aam
    pair_loss: Optional[Any] = _component("pyspk.losses:PAIR_LOSSES")  # supcon | am_supcon
    pair_weights: Optional[Any] = _component("pyspk.losses:PAIR_WEIGHTS")  # caa
    balance: Optional[Any] = _component("pyspk.balance:BALANCERS")  # fixed | mgda | nash_mtl
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # where training reads from: precomputed features (the default) or audio augmented and
    # featurised on the fly (pyspk/online)
    data: OnlineConfig = field(default_factory=OnlineConfig)


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
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] in (int, float, bool, str):  # typed values: each one checked
            return {
                k: _convert(v, args[1], f"{where[:-1]}.{k}'" if where.endswith("'") else f"{where}.{k}")
                for k, v in value.items()
            }
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
        if not math.isfinite(value):  # yaml reads .nan and .inf as floats; no setting takes them
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
        if "registry" in f.metadata:
            kwargs[f.name] = _build_component(f.metadata["registry"], data[k], f"{prefix}{k}.", source)
            continue
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data[k], f"{prefix}{k}.", source)
            continue
        if data[k] in f.metadata.get("or", ()) and isinstance(data[k], str):
            kwargs[f.name] = data[k]  # a bool key that also takes a word (cpu_amp: auto)
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


@dataclass
class NoSettings:
    """The block of a component registered without settings: its name alone."""

    name: str = ""


def registry(spec: str):
    """The registry named by ``"module:NAME"`` (imported on first use: the components import torch)."""
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _build_component(spec: str, data, prefix: str, source: str):
    """The settings of the component a block names (``name:``), checked against its dataclass."""
    if data is None:
        return None
    reg = registry(spec)
    block = prefix[:-1]
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: '{block}' must be a mapping with a name (one of {', '.join(reg.names())}) or null, got {data!r}"
        )
    if "name" not in data:
        raise ConfigError(
            f"{source}: key '{prefix}name' is missing: which {reg.kind}? "
            f"({', '.join(reg.names())}; leave '{block}' out for none)"
        )
    name = data["name"]
    if not isinstance(name, str):
        raise ConfigError(f"{source}: key '{prefix}name': expected a string, got {name!r}")
    from pyspk.registry import RegistryError

    try:
        entry = reg.get(name)
    except RegistryError as e:
        raise ConfigError(f"{source}: key '{prefix}name': {e}") from None
    settings = entry.settings or NoSettings
    if not dataclasses.is_dataclass(settings) or "name" not in {f.name for f in dataclasses.fields(settings)}:
        raise ConfigError(
            f"{source}: key '{prefix}name': the settings of {reg.kind} '{name}' "
            f"({settings!r}) must be a dataclass with a 'name' field"
        )
    return _build(settings, data, prefix, source)


def config_from_dict(data: dict, source: str = "<config>", warn: bool = True) -> Config:
    """Build and type-check a :class:`Config` (semantic checks: :func:`validate_config`).

    ``data`` of the layout before the objective's blocks is read as the same settings in the
    new one (:func:`pyspk.train.migrate.migrate_data`), with a warning unless ``warn`` is false."""
    from pyspk.train.migrate import is_old_layout, migrate_data

    if isinstance(data, dict) and is_old_layout(data):
        data = migrate_data(data, source)
        if warn:
            how = f"pyspk migrate-config {source}" if Path(source).is_file() else "pyspk migrate-config FILE"
            log.warning(
                "%s: old config layout (a 'loss:' block, 'balance.kind'), read as the same settings in "
                "the new one (head, pair_loss, pair_weights, balance: docs/method.md); "
                "update it with: %s",
                source,
                how,
            )
    return _build(Config, data, "", source)


def resolve_dict(data: dict, source: str = "<config>") -> dict:
    """``data`` (either layout, keys left out) as the resolved config of the current layout, every
    default filled in: the form the trainer records in EXP/config.yaml and final.pt. For
    comparing configs recorded by older code; no warning, no semantic checks."""
    return config_to_dict(config_from_dict(data, source, warn=False))


def read_yaml(path) -> dict:
    """One config file as a mapping (errors name the file); no ``base:`` resolution."""
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
        raise ConfigError(f"{path}: the config is empty (expected a mapping of sections: encoder, head, ...)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def config_files(path) -> List[Path]:
    """The files a config is made of: ``path``, then its ``base:``, that one's base, ... A base is a
    path relative to the file naming it; a missing one, or a file that is its own base
    (directly or through a chain), is a :class:`ConfigError` naming the file."""
    chain = [Path(path)]
    while True:
        data = read_yaml(chain[-1])
        base = data.get("base")
        if base is None:
            return chain
        here = chain[-1]
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(
                f"{here}: key 'base': expected the path of a config file (relative to {here.parent}), got {base!r}"
            )
        nxt = Path(os.path.normpath(here.parent / base))
        if not nxt.is_file():
            raise ConfigError(f"{here}: key 'base': {nxt} not found (a path relative to the directory of {here.name})")
        seen = [p.resolve() for p in chain]
        if nxt.resolve() in seen:
            loop = chain[seen.index(nxt.resolve())]
            what = "itself" if loop == here else f"{loop}, which bases on it"
            raise ConfigError(f"{here}: key 'base': {base} is {what}: a config cannot be its own base")
        chain.append(nxt)


def read_config_data(path) -> dict:
    """A config file with its bases merged under it (:func:`config_files`), as one mapping."""
    data: dict = {}
    for f in reversed(config_files(path)):
        layer = dict(read_yaml(f))
        layer.pop("base", None)
        data = merge_overrides(data, layer)
    return data


def load_config(path, overrides: Optional[dict] = None) -> Config:
    """Read a yaml config and its bases; ``overrides`` (same nesting) win over the file. Validates."""
    data = read_config_data(path)
    if overrides:
        data = merge_overrides(data, overrides)
    cfg = config_from_dict(data, str(path))
    validate_config(cfg, str(path))
    return cfg


def merge_overrides(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in: nested mappings merged key by key, ``over`` wins. A
    mapping of ``over`` that names another component (``name:``) than the one it overrides
    replaces it: the settings of one component mean nothing to another."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict):
            old = out.get(k)
            same = isinstance(old, dict) and v.get("name", old.get("name")) == old.get("name")
            out[k] = merge_overrides(old if same else {}, v)
        else:
            out[k] = v
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
OBJECTIVE_BLOCKS = ("head", "pair_loss", "pair_weights", "balance")


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


def validate_config(cfg: Config, source: str = "<config>") -> None:
    """Checks that need no data: the encoder's name, options and size (:func:`check_encoder`),
    each objective block's own checks (its settings' ``errors(config)``), how the blocks fit
    together, sampler and optimiser consistency."""

    def fail(key, msg):
        raise ConfigError(f"{source}: key '{key}': {msg}")

    from pyspk.models import ENCODERS
    from pyspk.registry import RegistryError

    try:
        ENCODERS.get(cfg.encoder.name)
    except RegistryError as e:
        fail("encoder.name", str(e))
    check_encoder(cfg, source)
    head, pair, bal, smp = cfg.head, cfg.pair_loss, cfg.balance, cfg.sampler
    if head is None and pair is None:
        fail(
            "head",
            "no head and no pair_loss: nothing to train (add head: {name: aam} or "
            "pair_loss: {name: supcon}; configs of the old layout trained AAM when they named no loss)",
        )
    if bal is not None and (head is None or pair is None):
        fail(
            "balance.name",
            f"'{bal.name}' balances two losses; configure both a head and a pair_loss (or leave balance out)",
        )
    if bal is None and head is not None and pair is not None:
        fail(
            "balance",
            "two losses are configured (head and pair_loss); add balance: {name: fixed} or balance: {name: mgda}",
        )
    if cfg.pair_weights is not None and pair is None:
        fail("pair_weights", f"'{cfg.pair_weights.name}' weights the pairs of a pair loss; add a pair_loss")
    for block in OBJECTIVE_BLOCKS:
        errors = getattr(getattr(cfg, block), "errors", None)
        for key, msg in errors(cfg) if errors else ():
            fail(f"{block}.{key}", msg)
    if smp.speakers_per_batch < 1:
        fail("sampler.speakers_per_batch", "must be >= 1")
    if smp.utts_per_speaker < 1:
        fail("sampler.utts_per_speaker", "must be >= 1")
    if smp.views not in (1, 2):
        fail("sampler.views", "must be 1 or 2")
    if pair is not None:
        if smp.kind == "pk" and smp.utts_per_speaker * smp.views < 2:
            fail(
                "sampler.utts_per_speaker",
                "a contrastive loss needs K >= 2 utterances (or views: 2) "
                "per speaker so that every anchor has a positive",
            )
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
