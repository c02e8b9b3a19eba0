"""Configs of the layout before the objective's blocks, read as the same settings in the new one.

The old layout held the whole objective in one flat ``loss:`` block and a ``balance:`` block
chosen by ``kind``::

    loss: {cls: aam, margin: 0.2, con: am_supcon, con_margin: 0.1, caa: true, caa_scale: 30.0, ...}
    balance: {kind: mgda, normalize: l2}

The new one has a block per component, each naming it (docs/method.md)::

    head: {name: aam, margin: 0.2}
    pair_loss: {name: am_supcon, margin: 0.1}
    pair_weights: {name: caa, scale: 30.0}
    balance: {name: mgda, normalize: l2}

:func:`migrate_data` translates the old blocks key by key (:data:`RENAMES`) after checking them
against the old schema (:class:`LossConfig`, :class:`BalanceConfig`: a misspelled old key is still
an error naming the nearest old key). Every default of the old schema is the default of the new
setting it maps to, so a key left out stays left out and the resolved config, and the training,
are the same. Keys that could not act in the old layout (``margin`` of a softmax head, ``caa_*``
without ``caa``, ``lambda`` under MGDA) are dropped. One case changes name: SupCon with
``con_margin_on: own`` (the paper's placement of the positives, which only rounds differently
without a margin) becomes ``am_supcon`` with margin 0 and that placement.

:func:`migrate_text` rewrites a file's text (``pyspk migrate-config``): the old blocks are replaced
by the new ones in place, comments on the old keys move with them, everything else in the file
is kept as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import yaml

from pyspk.train.config import ConfigError, _build, _choice
from pyspk.yamlio import safe_load


@dataclass
class _Schedule:
    start: float = 0.0
    warmup_epochs: float = 0.0


@dataclass
class LossConfig:
    """The old ``loss:`` block (its keys, types, choices and defaults), for reading old configs."""

    cls: str = _choice("none", "softmax", "am", "aam", default="aam")
    margin: float = 0.2
    scale: float = 30.0
    easy_margin: bool = False
    margin_schedule: _Schedule = field(default_factory=_Schedule)
    con: str = _choice("none", "supcon", "am_supcon", default="none")
    con_margin: float = 0.2
    con_margin_type: str = _choice("angular", "additive", "threshold", default="additive")
    con_margin_on: str = _choice("own", "positives", default="positives")
    con_margin_threshold: float = 0.7854
    con_margin_schedule: _Schedule = field(default_factory=_Schedule)
    temperature: float = 0.07
    caa: bool = False
    caa_scale: float = 30.0
    caa_floor: float = 0.0
    caa_normalize: bool = True
    caa_mode: str = _choice("exp", "logit", default="exp")
    caa_start_epoch: float = 0.0
    caa_positives: bool = True
    prototypes: str = _choice("auto", "head", "ema", default="auto")
    ema_momentum: float = 0.9


@dataclass
class BalanceConfig:
    """The old ``balance:`` block."""

    kind: str = _choice("none", "fixed", "mgda", default="none")
    lambda_: float = field(default=1.0, metadata={"key": "lambda"})
    head_grad: str = _choice("full", "alpha", default="full")
    normalize: str = _choice("none", "l2", "loss", "authors", default="l2")
    combine: str = _choice("raw", "scaled", default="raw")


# old key -> (new block, new key); the block's component is named by cls, con, caa, kind
RENAMES: Dict[Tuple[str, str], Tuple[str, str]] = {
    ("loss", "cls"): ("head", "name"),
    ("loss", "margin"): ("head", "margin"),
    ("loss", "scale"): ("head", "scale"),
    ("loss", "easy_margin"): ("head", "easy_margin"),
    ("loss", "margin_schedule"): ("head", "margin_schedule"),
    ("loss", "con"): ("pair_loss", "name"),
    ("loss", "con_margin"): ("pair_loss", "margin"),
    ("loss", "con_margin_type"): ("pair_loss", "margin_type"),
    ("loss", "con_margin_on"): ("pair_loss", "margin_on"),
    ("loss", "con_margin_threshold"): ("pair_loss", "margin_threshold"),
    ("loss", "con_margin_schedule"): ("pair_loss", "margin_schedule"),
    ("loss", "temperature"): ("pair_loss", "temperature"),
    ("loss", "caa"): ("pair_weights", "name"),
    ("loss", "caa_scale"): ("pair_weights", "scale"),
    ("loss", "caa_floor"): ("pair_weights", "floor"),
    ("loss", "caa_normalize"): ("pair_weights", "normalize"),
    ("loss", "caa_mode"): ("pair_weights", "mode"),
    ("loss", "caa_start_epoch"): ("pair_weights", "start_epoch"),
    ("loss", "caa_positives"): ("pair_weights", "positives"),
    ("loss", "prototypes"): ("pair_weights", "prototypes"),
    ("loss", "ema_momentum"): ("pair_weights", "ema_momentum"),
    ("balance", "kind"): ("balance", "name"),
    ("balance", "lambda"): ("balance", "lambda"),
    ("balance", "head_grad"): ("balance", "head_grad"),
    ("balance", "normalize"): ("balance", "normalize"),
    ("balance", "combine"): ("balance", "combine"),
}
# the keys each component of the old layout used (the others could not act)
_ACTS = {
    "softmax": (),
    "am": ("margin", "scale", "margin_schedule"),
    "aam": ("margin", "scale", "easy_margin", "margin_schedule"),
    "supcon": ("temperature",),
    "am_supcon": ("margin", "margin_type", "margin_on", "margin_threshold", "margin_schedule", "temperature"),
    "caa": ("scale", "floor", "normalize", "mode", "start_epoch", "positives", "prototypes", "ema_momentum"),
    "fixed": ("lambda",),
    "mgda": ("head_grad", "normalize", "combine"),
}
NEW_BLOCKS = ("head", "pair_loss", "pair_weights", "balance")


def is_old_layout(data: dict) -> bool:
    """Whether ``data`` (a config mapping) has a ``loss:`` block or a ``balance.kind``."""
    bal = data.get("balance")
    return "loss" in data or (isinstance(bal, dict) and "kind" in bal)


def migrate_data(data: dict, source: str = "<config>") -> dict:
    """``data`` with its old ``loss:``/``balance:`` blocks replaced by the new blocks (see the
    module doc); the other sections as they are. ConfigError for a misspelled or mistyped old
    key, and for a config that mixes both layouts."""
    mixed = [b for b in ("head", "pair_loss", "pair_weights") if b in data]
    if isinstance(data.get("balance"), dict) and "name" in data["balance"]:
        mixed.append("balance.name")
    if mixed:
        raise ConfigError(
            f"{source}: mixes the old layout (a 'loss:' block, 'balance.kind') with the new one "
            f"({', '.join(mixed)}); write one of them (pyspk migrate-config rewrites the old one)"
        )
    raw = {"loss": data.get("loss") or {}, "balance": data.get("balance") or {}}
    typed = {
        "loss": _build(LossConfig, raw["loss"], "loss.", source),
        "balance": _build(BalanceConfig, raw["balance"], "balance.", source),
    }
    loss, bal = typed["loss"], typed["balance"]
    names = {
        "head": None if loss.cls == "none" else loss.cls,
        "pair_loss": None if loss.con == "none" else loss.con,
        "pair_weights": "caa" if loss.caa else None,
        "balance": None if bal.kind == "none" else bal.kind,
    }
    blocks: Dict[str, Optional[dict]] = {b: ({"name": n} if n else None) for b, n in names.items()}
    for (sec, old), (block, new) in RENAMES.items():
        if new == "name" or old not in raw[sec] or blocks[block] is None or new not in _ACTS[names[block]]:
            continue
        value = getattr(typed[sec], "lambda_" if old == "lambda" else old)
        if hasattr(value, "__dataclass_fields__"):  # a schedule: the keys given, typed
            value = {k: getattr(value, k) for k in (raw[sec][old] or {})}
        blocks[block][new] = value
    if names["pair_loss"] == "supcon" and loss.con_margin_on == "own":
        # SupCon is AM-SupCon with m = 0; only AM-SupCon has the placement
        blocks["pair_loss"] = {
            "name": "am_supcon",
            "margin": 0.0,
            "margin_on": "own",
            **({"temperature": loss.temperature} if "temperature" in raw["loss"] else {}),
        }
    out = {}
    for k, v in data.items():  # the new blocks where the old ones were, the rest in order
        if k in ("loss", "balance"):
            out.update({b: blocks[b] for b in NEW_BLOCKS if blocks[b] is not None and b not in out})
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- rewriting a file
_TOP_KEY = re.compile(r"^([A-Za-z_]\w*)\s*:")
_KEY_LINE = re.compile(r"^(\s+)([A-Za-z_]\w*)\s*:(.*)$")


def _flow(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text[:-3].strip() if text.endswith("\n...") else text


def _spans(lines: List[str]) -> List[Tuple[int, int]]:
    """(first, end) line ranges of the top-level ``loss:`` and ``balance:`` blocks."""
    out = []
    for i, line in enumerate(lines):
        m = _TOP_KEY.match(line)
        if not m or m.group(1) not in ("loss", "balance"):
            continue
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j][0] in " \t#"):
            j += 1
        while j > i + 1 and (not lines[j - 1].strip() or lines[j - 1].startswith("#")):
            j -= 1  # blank and column-0 comment lines belong to what follows
        out.append((i, j))
    return out


def _key_comments(lines: List[str], spans, section_of) -> Dict[Tuple[str, str], str]:
    """The comment at the end of each old key's line: {(section, key): comment}."""
    out = {}
    for i, j in spans:
        sec = section_of[i]
        indent = None
        for line in lines[i + 1 : j]:
            m = _KEY_LINE.match(line.rstrip("\n"))
            if not m or m.group(2).startswith("#"):
                continue
            indent = m.group(1) if indent is None else indent
            if m.group(1) != indent:
                continue  # a key of a nested mapping
            c = re.search(r"\s#\s?(.*)$", m.group(3))
            if c:
                out[(sec, m.group(2))] = c.group(1).strip()
    return out


def migrate_text(text: str, source: str = "<config>") -> Optional[str]:
    """The text of an old-layout config rewritten in the new layout; None when it is not old.

    The new blocks take the place of the first old block; a comment at the end of an old key's
    line goes to the line of the key it becomes. The result is checked: read back, it must hold
    the new blocks and every other section unchanged; where the file's shape defeats the
    in-place rewrite (a flow-style top level), the whole config is written out again instead,
    without its comments."""
    data = safe_load(text)
    if not isinstance(data, dict) or not is_old_layout(data):
        return None
    new = migrate_data(data, source)
    lines = text.splitlines(keepends=True)
    spans = _spans(lines)
    section_of = {i: _TOP_KEY.match(lines[i]).group(1) for i, _ in spans}
    comments = _key_comments(lines, spans, section_of)
    inverse = {v: k for k, v in RENAMES.items()}
    out_lines = []
    for block in NEW_BLOCKS:
        if new.get(block) is None:
            continue
        out_lines.append(f"{block}:\n")
        for key, value in new[block].items():
            line = f"  {key}: {_flow(value)}"
            note = comments.get(inverse.get((block, key), ("", "")))
            out_lines.append(f"{line}{' ' * max(2, 28 - len(line))}# {note}\n" if note else f"{line}\n")
    result = None
    if spans:
        first, drop, parts = spans[0][0], {k for i, j in spans for k in range(i, j)}, []
        for k, line in enumerate(lines):
            if k == first:
                parts.extend(out_lines)
            elif k not in drop:
                parts.append(line)
        result = "".join(parts)
    try:
        ok = result is not None and safe_load(result) == new
    except yaml.YAMLError:
        ok = False
    if not ok:
        result = yaml.safe_dump(new, sort_keys=False)
    return result


def migrate_file(path) -> bool:
    """Rewrite the config file ``path`` in the new layout (atomically); False when it already is.
    Only the file itself is read: the blocks of its ``base:`` are that file's to migrate."""
    from pathlib import Path

    from pyspk.io import atomic_write_text
    from pyspk.train.config import read_yaml

    path = Path(path)
    read_yaml(path)  # a missing, empty or invalid file: the loader's errors
    new = migrate_text(path.read_text(), str(path))
    if new is None:
        return False
    atomic_write_text(path, new)
    return True
