#!/usr/bin/env python3
"""The loss study: every variant of margin, CAA and balancing, same budget, several seeds.

    studies/study_losses.py --corpus synth|speechocean762 [--groups rows,margin,...] [--variants a,b]
                          [--seeds 1,2,3] [--jobs 2] [--out exp_study] [--list] [--table-only]

For each (variant, seed) it trains one system (``pyspk train``), extracts x-vectors of the
training and test sets, fits the back-ends and scores every trials list with cosine, AS-norm and
PLDA, under ``OUT/<corpus>/<variant>/s<seed>/``. Each step writes a stamp holding the hash of what it
depends on (the resolved config, the seed, the data dirs' tables); a rerun skips the steps whose
stamp matches, so a killed study resumes where it stopped, and a changed variant is redone.
The table ``OUT/<corpus>/study.md`` has, per variant, the mean ± sd over seeds of EER and
minDCF(0.01) per trials list and back-end, the MGDA α statistics, and what the loss saw over
training (train.csv: cosines of positive/negative pairs, the loss's pull on positives and push
on negatives, the CAA weights' spread), first and last epoch.

Variants are ``conf/<corpus>/<base>.yaml`` plus overrides of its objective's blocks (``head``,
``pair_loss``, ``pair_weights``, ``balance``: docs/method.md); label-noise variants train on a copy
of the training dirs whose labels were flipped by ``synth/synthceleb/label_noise.py`` (features
shared); ``long4`` variants have 4x the steps per epoch (ramps keep their share of training).
The data (stages 0-2 of run.sh) must exist: ``studies/study_losses.sh`` makes it first.
The commands and tables of the study: docs/results/loss-study.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "synth"))
sys.path.insert(2, str(ROOT / "local"))  # corpus_common: trials

from pyspk.io import atomic_write_text  # noqa: E402
from pyspk.provenance import provenance  # noqa: E402
from pyspk.train.config import (  # noqa: E402
    SPEED_KEYS,
    config_from_dict,
    merge_overrides,
    read_config_data,
    resolve_dict,
    validate_config,
)
from pyspk.train.lmft import lmft_config, read_lmft  # noqa: E402
from pyspk.train.migrate import is_old_layout  # noqa: E402
from pyspk.yamlio import safe_load  # noqa: E402

CORPORA = {
    # data dir, clean training set, test set
    "synth": ("data", "synth_train", "synth_test"),
    "speechocean762": ("data_so762", "so762_train", "so762_test"),
}
FBANK_DIRS = {"data": "fbank", "data_so762": "fbank_so762"}  # as studies/study_losses.sh's run.sh calls
RECIPE_SEED = 777  # run.sh's --seed: the augmentation's draws
SCORE_BACKENDS = ("cosine", "asnorm", "plda")  # what run.sh stage 6 scores
SHORT = {"cosine": "cos", "asnorm": "AS-norm", "plda": "PLDA"}
ROWS = ("softmax", "aam", "supcon", "am_supcon", "am_supcon_caa", "aam_am_supcon_caa_fixed", "proposed")


@dataclass
class Variant:
    name: str
    base: str  # conf/<corpus>/<base>.yaml
    group: str
    what: str
    overrides: dict = field(default_factory=dict)
    noise: float = 0.0  # label-noise fraction of the training data
    budget: int = 1  # steps per epoch multiplier
    train_set: str = "recipe"  # recipe (run.sh's DATA/<train>_combined) or one of TRAIN_SETS
    backend_set: str = "clean"  # what the back-end is fitted on: the clean training speakers
    # (run.sh stage 5, Kaldi's convention) or "training", the set the
    # encoder trained on (speed copies as new speakers, noisy copies)
    trained_by: str = ""  # a variant whose trained model this one reuses (back-end variants)
    # "dev": trained without the development speakers and scored on them (dev_dirs), for tuning;
    # "test": the recipe's training set and test set
    split: str = "test"
    tuned: bool = False  # balance.lambda picked on the development speakers (pick_lambda)
    lmft_of: str = ""  # large-margin fine-tuning of this variant's model (conf/<corpus>/lmft.yaml)


def _pair(**kw) -> dict:
    return {"pair_loss": kw}


def _caa(**kw) -> dict:
    return {"pair_weights": kw}


def variants() -> List[Variant]:
    v = [Variant(r, r, "rows", "ablation row as shipped") for r in ROWS]
    for form in ("angular", "additive", "threshold"):
        for place in ("own", "positives"):
            if form == "threshold" and place == "positives":
                continue
            v.append(
                Variant(
                    f"am_supcon.{form}.{place}",
                    "am_supcon",
                    "margin",
                    f"AM-SupCon, {form} margin on {place}",
                    _pair(margin_type=form, margin_on=place),
                )
            )
    v.append(
        Variant(
            "proposed.angular",
            "proposed",
            "margin",
            "proposed with the paper's angular margin (on its own positive, CAA scale 30, raw MGDA)",
            {
                "pair_loss": {"margin_type": "angular", "margin_on": "own"},
                "pair_weights": {"scale": 30.0, "mode": "exp", "positives": False},
                "balance": {"normalize": "none"},
            },
        )
    )
    # label noise: 10 % for every row, 5 % (the low end of the 5-10 % range studied) for the CAA row only
    noisy_rows = {
        0.05: ("am_supcon", "am_supcon_caa"),
        0.1: ("aam", "supcon", "am_supcon", "am_supcon_caa", "proposed"),
    }
    for frac, rows in noisy_rows.items():
        for r in rows:
            v.append(
                Variant(
                    f"noise{int(round(frac * 100))}.{r}",
                    r,
                    "noise",
                    f"{r} as shipped, {frac:.0%} label noise",
                    noise=frac,
                )
            )
    for frac in (0.1,):  # the CAA exploration, at 10 % only
        tag = f"noise{int(round(frac * 100))}"
        caa = {
            "s5": ("scale 5", _caa(scale=5.0)),
            "s30": ("scale 30", _caa(scale=30.0)),
            "raw": ("no per-anchor normalisation", _caa(normalize=False)),
            "logit": ("weights inside the logits", _caa(mode="logit")),
            "late": ("CAA from epoch 2 (prototypes first)", _caa(start_epoch=2.0)),
            "floor": ("floor 0.5", _caa(floor=0.5)),
            "pos": ("positive pairs weighted too (OSM-CAA)", _caa(positives=True)),
            "s5pos": ("scale 5, positive pairs weighted too", _caa(scale=5.0, positives=True)),
            "logitpos": ("inside the logits, positive pairs weighted too", _caa(mode="logit", positives=True)),
        }
        for key, (what, ov) in caa.items():
            # the exploration ran before pair_loss.margin_on: positives and pair_weights.positives were picked
            ov = merge_overrides({**_pair(margin_on="own"), **_caa(positives=False)}, ov)
            v.append(
                Variant(
                    f"{tag}.am_supcon_caa.{key}",
                    "am_supcon_caa",
                    "caa",
                    f"AM-SupCon + CAA (EMA prototypes), {what}, {frac:.0%} label noise",
                    ov,
                    noise=frac,
                )
            )
        v.append(
            Variant(
                f"{tag}.proposed.nocaa",
                "proposed",
                "caa",
                f"proposed without CAA, {frac:.0%} label noise",
                {"pair_weights": None},
                noise=frac,
            )
        )
    for norm in ("none", "l2", "loss", "authors"):
        v.append(
            Variant(
                f"proposed.mgda_{norm}",
                "proposed",
                "mgda",
                f"proposed, MGDA normalisation '{norm}' "
                "(margin on its own positive, CAA scale 30: the settings before the study picked)",
                {
                    "balance": {"normalize": norm, "combine": "scaled"},
                    "pair_loss": {"margin_on": "own"},
                    "pair_weights": {"scale": 30.0, "mode": "exp", "positives": False},
                },
            )
        )
    # picking the proposed system's settings on clean data
    v.append(
        Variant(
            "proposed.nocaapos",
            "proposed",
            "pick",
            "proposed, CAA on negatives only "
            "(pair_weights.positives false: weighting positives was picked at 10 % label noise), "
            "MGDA l2 with the losses scaled",
            {"pair_weights": {"positives": False}, "balance": {"normalize": "l2", "combine": "scaled"}},
        )
    )
    v.append(
        Variant(
            "proposed.scaled_l2",
            "proposed",
            "pick",
            "proposed, MGDA l2 with the losses scaled "
            "by 1/||g_t|| (the encoder follows the mean of the unit gradients; shipped before)",
            {"balance": {"normalize": "l2", "combine": "scaled"}},
        )
    )
    v.append(
        Variant(
            "proposed.tau02",
            "proposed",
            "pick",
            "proposed with the contrastive temperature 0.2 "
            "(0.07 elsewhere): a softer loss over more of the batch's negatives",
            _pair(temperature=0.2),
        )
    )
    for norm in ("l2", "loss"):
        v.append(
            Variant(
                f"proposed.raw_{norm}",
                "proposed",
                "pick",
                f"proposed, MGDA on '{norm}'-normalised "
                "gradients, raw losses combined (Sener & Koltun's code; l2: alpha = 0.5 always)",
                {"balance": {"normalize": norm, "combine": "raw"}},
            )
        )
    # speechocean762 only: conf/speechocean762/ecapa_*.yaml. ecapa.* and ecapa.long2.* keep the
    # budget they were measured at (12 epochs, float32); ecapa.shipped.* is the config as shipped
    # (bfloat16, sized for 30 minutes with its large-margin fine-tuning, lmft.ecapa.shipped.*)
    ecapa_then = {"train": {"epochs": 12, "cpu_amp": False}}
    for r in ("aam", "proposed"):
        v.append(
            Variant(
                f"ecapa.{r}",
                f"ecapa_{r}",
                "ecapa",
                f"{r} with ECAPA-TDNN C = 512, 480 steps in float32 (run with --jobs 1 --threads 2)",
                ecapa_then,
            )
        )
        v.append(
            Variant(
                f"ecapa.shipped.{r}",
                f"ecapa_{r}",
                "ecapa",
                f"{r} with ECAPA-TDNN C = 512 as shipped (1320 steps, bfloat16 where the CPU has it; "
                "run with --jobs 1 --threads 2)",
            )
        )
        v.append(
            Variant(
                f"lmft.ecapa.shipped.{r}",
                f"ecapa_{r}",
                "ecapa",
                f"ecapa.shipped.{r}, then large-margin fine-tuning",
                lmft_of=f"ecapa.shipped.{r}",
            )
        )
    for r in ("aam", "supcon", "am_supcon", "proposed"):
        v.append(Variant(f"long4.{r}", r, "long", f"{r} as shipped, 4x the steps", budget=4))
    for r in ("aam", "proposed"):  # twice the steps of conf/speechocean762/ecapa_*.yaml (2 threads, compiled)
        v.append(
            Variant(
                f"ecapa.long2.{r}",
                f"ecapa_{r}",
                "ecapa",
                f"{r} with ECAPA-TDNN C = 512, 2x the steps "
                "(960 steps of 64 x 200 frames in float32; run with --jobs 1 --threads 2)",
                ecapa_then,
                budget=2,
            )
        )
    for r in ("aam", "proposed"):  # the same question for the recipe's TDNN
        v.append(
            Variant(
                f"{r}.bk_training",
                r,
                "backend",
                f"{r}'s model, back-end fitted on its training set "
                "(speechocean762: clean + speed copies as new speakers; SynthCeleb: clean + Kaldi's "
                "copies, the same speakers) instead of the clean speakers",
                backend_set="training",
                trained_by=r,
            )
        )
    for r in ("aam", "proposed"):  # the back-end fitted on the 255 training speakers, not the 85 clean ones
        v.append(
            Variant(
                f"ecapa.long2.{r}.bk_training",
                f"ecapa_{r}",
                "ecapa",
                f"ecapa.long2.{r}'s model, back-end (mean, LDA, PLDA, AS-norm cohort) fitted on its "
                "training set (clean + speed copies as new speakers) instead of the clean speakers",
                ecapa_then,
                budget=2,
                backend_set="training",
                trained_by=f"ecapa.long2.{r}",
            )
        )
    # what to train on (speechocean762): the recipe's set is conf/speechocean762/augment.yaml's
    # (clean + speed copies); the others, as picked against: clean only, Kaldi's four copies
    # (what every row trained on before), and the four copies plus the speed ones
    sets = {
        "clean": "the clean utterances only",
        "full": "clean + Kaldi's reverb, noise, music and babble copies (conf/augment.yaml)",
        "full_sp": "clean + Kaldi's four copies + speed copies (0.9, 1.1) as new speakers",
    }
    for ts, what in sets.items():
        for r in ROWS + ("proposed.tau02",):
            base, ov = (r, {}) if r in ROWS else ("proposed", _pair(temperature=0.2))
            v.append(Variant(f"{ts}.{r}", base, "aug", f"{r} trained on {what}", ov, train_set=ts))
        for r in ("aam", "proposed"):
            v.append(
                Variant(
                    f"{ts}.ecapa.{r}",
                    f"ecapa_{r}",
                    "aug",
                    f"{r} with ECAPA-TDNN C = 512, 480 steps in float32, trained on {what}",
                    ecapa_then,
                    train_set=ts,
                )
            )
            v.append(
                Variant(
                    f"{ts}.long4.{r}",
                    r,
                    "aug",
                    f"{r} as shipped, 4x the steps, trained on {what}",
                    budget=4,
                    train_set=ts,
                )
            )
    # the fixed sum's lambda tuned on development speakers (never the test speakers), the
    # baseline the balancers whose weights move must beat
    for lam in LAMBDAS:
        v.append(
            Variant(
                f"dev.fixed.l{lam:g}",
                "aam_am_supcon_caa_fixed",
                "lambda",
                f"AAM + AM-SupCon + CAA, L_cls + {lam:g} L_con, trained without the development "
                "speakers and scored on them",
                {"balance": {"name": "fixed", "lambda": lam}},
                split="dev",
            )
        )
    v.append(
        Variant(
            "fixed.tuned",
            "aam_am_supcon_caa_fixed",
            "balance",
            "AAM + AM-SupCon + CAA, L_cls + lambda L_con with the lambda of the lowest mean "
            "development EER (cosine and PLDA, over the seeds; group lambda)",
            tuned=True,
        )
    )
    balancers = {
        "mgda_ub": (
            "MGDA-UB on unit gradients of the embeddings (alpha = 0.5: the plain sum; "
            "speechocean762's proposed before it shipped MGDA on the parameters)",
            {"level": "embeddings", "normalize": "l2"},
        ),
        "mgda_params": (
            "MGDA on the encoder's parameters (raw gradients)",
            {"level": "parameters", "normalize": "none"},
        ),
        "mgda_params_loss": (
            "MGDA on the encoder's parameters, loss-normalised gradients",
            {"level": "parameters", "normalize": "loss"},
        ),
        "nash_mtl": ("Nash-MTL on the encoder's parameters", {"name": "nash_mtl"}),
        "nash_mtl_unit": (
            "Nash-MTL's weights divided by their sum (IMTL-G), encoder's parameters",
            {"name": "nash_mtl", "scale": "unit_sum"},
        ),
        "nash_mtl_emb": ("Nash-MTL on the gradients of the embeddings", {"name": "nash_mtl", "level": "embeddings"}),
    }
    for key, (what, bal) in balancers.items():
        bal = {"name": "mgda", "combine": "raw", **bal}
        if bal["name"] != "mgda":
            bal.pop("combine")
        v.append(Variant(f"proposed.{key}", "proposed", "balance", f"proposed, {what}", {"balance": bal}))
    for r in ROWS:
        v.append(Variant(f"lmft.{r}", r, "lmft", f"{r} as shipped, then large-margin fine-tuning", lmft_of=r))
    for key in ("mgda_params", "nash_mtl"):
        v.append(
            Variant(
                f"lmft.proposed.{key}",
                "proposed",
                "lmft",
                f"proposed.{key}, then large-margin fine-tuning",
                lmft_of=f"proposed.{key}",
            )
        )
    return v


# a doubling grid from a classifier-heavy sum to one that reaches the weights the moving balancers
# settle at (MGDA on the parameters: alpha ~ 0.05, i.e. lambda = (1 - alpha) / alpha ~ 19)
LAMBDAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
# development speakers held out of training for tuning (dev_dirs); the rest train
DEV_SPEAKERS = {"synth": 40, "speechocean762": 20}


# --------------------------------------------------------------------------- helpers
def resolved_config(corpus: str, var: Variant, threads: Optional[int], out: Optional[Path] = None) -> dict:
    """The variant's training config (plain yaml data). A ``tuned`` variant needs the study's
    ``out`` (its lambda is read from pick_lambda's record there); an ``lmft_of`` variant's is its
    parent's with conf/<corpus>/lmft.yaml's changes (train.init_from: the parent's exp dir)."""
    path = ROOT / "conf" / corpus / f"{var.base}.yaml"
    overrides = var.overrides
    if var.tuned:
        overrides = merge_overrides(overrides, {"balance": {"name": "fixed", "lambda": tuned_lambda(out, corpus)}})
    data = merge_overrides(read_config_data(path), overrides)  # its base: merged in
    if var.budget != 1:
        t = data.setdefault("train", {})
        if not t.get("steps_per_epoch"):
            raise ValueError(f"{path}: a budget multiplier needs train.steps_per_epoch")
        t["steps_per_epoch"] = int(t["steps_per_epoch"]) * var.budget
    if threads:
        data.setdefault("train", {})["threads"] = threads
    if var.lmft_of:
        data = lmft_config(resolve_dict(data), read_lmft(lmft_file(corpus)), "<the parent's exp dir>")
    cfg = config_from_dict(data, f"{path} + variant {var.name}")
    validate_config(cfg, f"{path} + variant {var.name}")
    return data


def lmft_file(corpus: str) -> Path:
    f = ROOT / "conf" / corpus / "lmft.yaml"
    return f if f.is_file() else ROOT / "conf" / "lmft.yaml"


def tuned_lambda(out: Optional[Path], corpus: str) -> float:
    record = None if out is None else out / corpus / "tuned_lambda.json"
    if record is None or not record.is_file():
        raise ValueError(
            f"variant fixed.tuned: no tuned lambda yet ({record}); run the group 'lambda' first "
            "(studies/study_losses.sh --groups lambda,balance does both, in order)"
        )
    return float(json.loads(record.read_text())["lambda"])


def _tuned_text(out: Path, corpus: str) -> str:
    try:
        return f"{tuned_lambda(out, corpus):g} (picked on the development speakers: tuned_lambda.json)"
    except ValueError:
        return "not picked yet"


def pick_lambda(corpus: str, seeds: List[int], out: Path) -> Optional[float]:
    """The lambda of the dev.fixed.* variant with the lowest development EER, the mean over seeds
    of the cosine and PLDA EERs (every seed must have finished); written with every lambda's
    figure to OUT/<corpus>/tuned_lambda.json. None while a run is missing."""
    figures = {}
    for var in variants():
        if var.group != "lambda":
            continue
        eers = []
        for s in seeds:
            m = out / corpus / var.name / f"s{s}" / "scores" / "metrics.json"
            if not m.is_file():
                return None
            got = json.loads(m.read_text())["trials"]
            eers += [got["cosine"]["eer"], got["plda"]["eer"]]
        figures[var.overrides["balance"]["lambda"]] = statistics.fmean(eers)
    best = min(figures, key=lambda lam: (figures[lam], lam))
    record = {
        "lambda": best,
        "mean_dev_eer": {f"{k:g}": v for k, v in sorted(figures.items())},
        "seeds": seeds,
        "criterion": "mean over seeds of the cosine and PLDA EER on the development speakers' trials",
    }
    atomic_write_text(out / corpus / "tuned_lambda.json", json.dumps(record, indent=1) + "\n")
    return best


def _resolved(data: dict) -> dict:
    """The config with every default filled in, minus train.threads (a speed setting) and
    train.seed (the study's --seed wins)."""
    d = resolve_dict(data)
    d["train"].pop("threads", None)
    d["train"].pop("seed", None)
    return d


def trained_as(exp: Path) -> Optional[dict]:
    """The config the trainer itself recorded (EXP/config.yaml, every default resolved at
    training time), minus train.seed and train.threads; None if there is none. Comparing with
    this, not with the yaml the study wrote, keeps a run whose code defaults have changed since
    from passing for the current variant."""
    f = exp / "config.yaml"
    if not f.is_file():
        return None
    d = safe_load(f.read_text())
    d.get("train", {}).pop("seed", None)
    d.get("train", {}).pop("threads", None)
    return d


# keys added to the config (of the layout before the objective's blocks) after some study runs
# were trained: their value before they existed
_BEFORE_KEY = {("loss", "caa_positives"): False, ("balance", "combine"): "scaled"}


def semantic(d: Optional[dict]) -> Optional[dict]:
    """A resolved config as it trains: a config recorded in the layout before the objective's
    blocks read in the new one (keys it predates filled with their value before they existed;
    keys that could not act there, such as CAA keys without CAA, are not carried over), and the
    MGDA ``combine`` dropped where its scales are 1 (normalize none or authors: raw and scaled
    are one loss). Two systems that train alike compare equal even when a default they never
    used has changed since."""
    if d is None:
        return None
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    if is_old_layout(d):
        for (sec, key), val in _BEFORE_KEY.items():
            d.setdefault(sec, {}).setdefault(key, val)
        try:
            d = resolve_dict(d)
        except ValueError:  # keys of no version of the schema: it trained something else
            return d
        d.get("train", {}).pop("seed", None)
        d.get("train", {}).pop("threads", None)
    bal = d.get("balance")
    if isinstance(bal, dict) and bal.get("name") == "mgda" and bal.get("normalize") in ("none", "authors"):
        bal = d["balance"] = dict(bal)
        bal.pop("combine", None)  # scales c_t = 1: raw and scaled are one loss
    d.get("train", {}).pop("init_from", None)  # where a fine-tuning started: the variant names it
    for key in SPEED_KEYS:  # threads, compile, ...: how fast, not what is trained
        sec, _, name = key.partition(".")
        d.get(sec, {}).pop(name, None)
    return d


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _tables_hash(d: Path) -> str:
    h = hashlib.sha256()
    for name in ("utt2spk", "feats.scp", "vad.scp", "utt2orig"):
        f = d / name
        if f.is_file():
            h.update(name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def _run(cmd: List[str], log: Path, env: dict) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"# {time.strftime('%F %T')} {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if rc != 0:
        raise RuntimeError(f"command failed ({rc}), see {log}: {' '.join(cmd)}")


def restart_args(started: Path, key: str) -> List[str]:
    """The trainer's extra arguments for the system whose training ``key`` is, recorded in
    ``started``: none when its checkpoints are this system's own (a killed or failed training
    resumes exactly, the trainer's guarantee), ``--restart`` when they may be anyone else's
    (another variant's, an older config's: retired to checkpoints.stale)."""
    resume = started.is_file() and started.read_text() == key
    atomic_write_text(started, key)
    return [] if resume else ["--restart"]


def _step(stamp: Path, key: str, fn) -> None:
    if stamp.is_file() and stamp.read_text() == key:
        return
    stamp.unlink(missing_ok=True)
    fn()
    atomic_write_text(stamp, key)


def noisy_dirs(data: Path, train: str, frac: float, seed: int = 0) -> tuple[Path, Path]:
    """(combined training dir, clean training dir) with ``frac`` label noise (made once)."""
    from synthceleb.label_noise import write_noisy_dir

    tag = f"noise{int(round(frac * 100))}"
    out = []
    for name in (f"{train}_combined", train):
        src, dst = data / name, data / f"{name}_{tag}"
        key = f"{_tables_hash(src)} {frac} {seed}"
        _step(data / f".study_{name}_{tag}", key, lambda s=src, d=dst: write_noisy_dir(s, d, frac, seed))
        out.append(dst)
    return out[0], out[1]


# training sets a variant can ask for instead of the recipe's: conf/augment.yaml with these
# overrides, made by ``pyspk augment`` into DATA/<train>_<name> (the copies it already made are reused)
TRAIN_SETS = {
    "full": {"speed": False},
    "full_sp": {"speed": True},
    "clean_sp": {"reverb": False, "noise": False, "music": False, "babble": False, "speed": True},
}


def training_dir(data: Path, train: str, train_set: str) -> Path:
    """The training dir of a variant: the recipe's ``<train>_combined`` (run.sh stage 2), the
    clean dir, or a TRAIN_SETS set, made here once (stamped, so a rerun reuses it)."""
    if train_set == "recipe":
        return data / f"{train}_combined"
    if train_set == "clean":
        return data / train
    if train_set not in TRAIN_SETS:
        raise ValueError(f"unknown training set '{train_set}' (recipe, clean, {', '.join(TRAIN_SETS)})")
    out = data / f"{train}_{train_set}"
    cfg = safe_load((ROOT / "conf" / "augment.yaml").read_text()) or {}
    cfg.update(TRAIN_SETS[train_set])
    cfg_path = data / f".study_augment_{train_set}.yaml"
    key = _hash(cfg, _tables_hash(data / train))

    def make() -> None:
        atomic_write_text(cfg_path, yaml.safe_dump(cfg, sort_keys=False))
        _run(
            [
                sys.executable,
                "-m",
                "pyspk.bin.main",
                "augment",
                "--config",
                str(cfg_path),
                "--fbank-config",
                str(ROOT / "conf" / "fbank.yaml"),
                "--nj",
                "2",
                "--seed",
                str(RECIPE_SEED),
                str(data / train),
                str(ROOT / FBANK_DIRS[data.name]),
                str(out),
            ],
            data / f".study_{train}_{train_set}.log",
            dict(os.environ),
        )

    _step(data / f".study_{train}_{train_set}", key, make)
    return out


def dev_dirs(data: Path, train: str, corpus: str, train_dir: Path) -> tuple[Path, Path, Path]:
    """(training dir, back-end dir, test dir) for tuning: DEV_SPEAKERS[corpus] of the clean
    training speakers (drawn with the recipe's seed) are held out of ``train_dir`` with every copy
    of their utterances (utt2orig: augmented and speed copies); their clean utterances are the
    test set, with seeded trials (every target pair, as many non-target pairs). Made once."""
    from corpus_common import make_trials

    from pyspk.data.dir_edit import subset_data_dir
    from pyspk.data.kaldi_dir import read_table, write_trials

    n = DEV_SPEAKERS[corpus]
    clean = data / train
    names = (f"{train_dir.name}_nodev", f"{train}_nodev", f"{train}_dev")
    outs = tuple(data / x for x in names)
    key = _hash(_tables_hash(clean), _tables_hash(train_dir), n, RECIPE_SEED)

    def make() -> None:
        utt2spk = read_table(clean / "utt2spk")
        speakers = sorted(set(utt2spk.values()))
        if n >= len(speakers):
            raise ValueError(f"{clean}: {len(speakers)} speakers, too few to hold out {n} for development")
        dev = set(np.random.default_rng(RECIPE_SEED).choice(speakers, size=n, replace=False).tolist())
        orig = read_table(train_dir / "utt2orig") if (train_dir / "utt2orig").is_file() else {}
        train_utts = read_table(train_dir / "utt2spk")
        keep = [u for u in train_utts if utt2spk.get(orig.get(u, u)) not in dev]
        subset_data_dir(train_dir, outs[0], keep)
        subset_data_dir(clean, outs[1], [u for u, spk in utt2spk.items() if spk not in dev])
        dev_utts = {u: spk for u, spk in utt2spk.items() if spk in dev}
        subset_data_dir(clean, outs[2], list(dev_utts))
        write_trials(outs[2] / "trials", make_trials(dev_utts, RECIPE_SEED))

    _step(data / f".study_dev_{train_dir.name}", key, make)
    return outs


# --------------------------------------------------------------------------- one system
_LOCKS: Dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def run_system(corpus: str, var: Variant, seed: int, out: Path, threads: Optional[int]) -> Path:
    """Train (or reuse), extract, fit the back-end and score one (variant, seed); one thread at a
    time per system, so a back-end variant and its parent in one --jobs 2 study train it once."""
    exp = out / corpus / var.name / f"s{seed}"
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(exp, threading.Lock())
    with lock:
        return _run_system(corpus, var, seed, out, threads)


def _run_system(corpus: str, var: Variant, seed: int, out: Path, threads: Optional[int]) -> Path:
    data_root, train, test = CORPORA[corpus]
    data = ROOT / data_root
    if var.noise:
        train_dir, backend_dir = noisy_dirs(data, train, var.noise)
    else:
        train_dir, backend_dir = training_dir(data, train, var.train_set), data / train
    if var.backend_set == "training":
        backend_dir = train_dir
    elif var.backend_set != "clean":
        raise ValueError(f"variant {var.name}: unknown backend_set '{var.backend_set}' (clean, training)")
    test_dir = data / test
    if var.split == "dev":
        train_dir, backend_dir, test_dir = dev_dirs(data, train, corpus, train_dir)
    elif var.split != "test":
        raise ValueError(f"variant {var.name}: unknown split '{var.split}' (test, dev)")
    exp = out / corpus / var.name / f"s{seed}"
    exp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if var.trained_by:
        # the parent's model (trained here first if need be) and its test x-vectors; only the
        # back-end's training set differs
        parent = next(v for v in variants() if v.name == var.trained_by)
        src = run_system(corpus, parent, seed, out, threads)
        for f in ("config.yaml", "train.csv", "study_config.yaml"):
            if (src / f).is_file():
                atomic_write_text(exp / f, (src / f).read_text())
        score_system(
            exp,
            (src / ".study.train").read_text(),
            src / "final.pt",
            backend_dir,
            test_dir,
            env,
            xv_test=src / "xvectors_test",
        )
        return note_provenance(exp, corpus, var, seed)
    if var.lmft_of:
        return _run_lmft(corpus, var, seed, out, threads, train_dir, backend_dir, test_dir, exp, env)
    cfg = resolved_config(corpus, var, threads, out)
    cfg_path = exp / "study_config.yaml"
    text = yaml.safe_dump(cfg, sort_keys=False)
    # the identity of a system is its *resolved* config: a key written out with its default
    # value, or a yaml comment, does not make it a new system
    k_train = _hash(_resolved(cfg), seed, _tables_hash(train_dir))
    stamp = exp / ".study.train"
    if stamp.is_file() and stamp.read_text() != k_train and semantic(trained_as(exp)) == semantic(_resolved(cfg)):
        k_train = stamp.read_text()  # trained under an equivalent config (older key scheme)
    if not cfg_path.is_file() or cfg_path.read_text() != text:
        atomic_write_text(cfg_path, text)
    return train_and_score(exp, k_train, cfg_path, seed, train_dir, backend_dir, test_dir, env, corpus, var)


def train_and_score(exp, k_train, config, seed, train_dir, backend_dir, test_dir, env, corpus, var, extra=()) -> Path:
    """Train (stamped with ``k_train``; a killed training resumes from its own checkpoints),
    then extraction, back-end and scoring. ``extra``: more arguments of ``pyspk train``."""
    started = exp / ".study.train.started"
    _step(
        exp / ".study.train",
        k_train,
        lambda: _run(
            [
                sys.executable,
                "-m",
                "pyspk.bin.train",
                "--config",
                str(config),
                "--seed",
                str(seed),
                "--train-dir",
                str(train_dir),
                "--exp-dir",
                str(exp),
                *extra,
            ]
            + restart_args(started, k_train),
            exp / "log" / "train.log",
            env,
        ),
    )
    score_system(exp, k_train, exp / "final.pt", backend_dir, test_dir, env)
    return note_provenance(exp, corpus, var, seed)


def _run_lmft(corpus, var, seed, out, threads, train_dir, backend_dir, test_dir, exp, env) -> Path:
    """Large-margin fine-tuning of the parent variant's model (trained first if need be), then
    extraction, back-end and scoring, as for any system."""
    parent = next(v for v in variants() if v.name == var.lmft_of)
    src = run_system(corpus, parent, seed, out, threads)
    lmft = lmft_file(corpus)
    k_train = _hash((src / ".study.train").read_text(), lmft.read_text())
    extra = ("--lmft", str(lmft), "--lmft-from", str(src))
    config = src / "study_config.yaml"
    return train_and_score(exp, k_train, config, seed, train_dir, backend_dir, test_dir, env, corpus, var, extra)


def note_provenance(exp: Path, corpus: str, var: Variant, seed: int) -> Path:
    """Record, once, the commit, date and CPU of a finished run, for the summary's header."""
    record = exp / ".study.provenance"
    if not record.is_file():
        atomic_write_text(
            record,
            json.dumps(provenance(f"studies/study_losses.sh --corpus {corpus} --variants {var.name} --seeds {seed}"))
            + "\n",
        )
    return exp


def score_system(
    exp: Path, k_train: str, model: Path, backend_dir: Path, test_dir: Path, env: dict, xv_test: Optional[Path] = None
) -> Path:
    """Extraction, back-end and scoring of a trained model (``k_train``: its training stamp);
    ``xv_test``: test x-vectors already extracted with that model (else extracted here)."""
    py = sys.executable
    k_ext = _hash(k_train, _tables_hash(backend_dir), _tables_hash(test_dir))
    sets = [("train", backend_dir)] + ([] if xv_test else [("test", test_dir)])
    for name, d in sets:
        _step(
            exp / f".study.extract_{name}",
            _hash(k_ext, name),
            lambda d=d, name=name: _run(
                [
                    py,
                    "-m",
                    "pyspk.bin.main",
                    "extract",
                    "--nj",
                    "1",
                    "--force",
                    str(model),
                    str(d),
                    str(exp / f"xvectors_{name}"),
                ],
                exp / "log" / f"extract_{name}.log",
                env,
            ),
        )
    xv_test = xv_test or exp / "xvectors_test"
    backend_cfg = ROOT / "conf" / "backend.yaml"
    k_back = _hash(k_ext, backend_cfg.read_text())
    _step(
        exp / ".study.backend",
        k_back,
        lambda: _run(
            [
                py,
                "-m",
                "pyspk.bin.main",
                "backend",
                "--config",
                str(backend_cfg),
                str(exp / "xvectors_train"),
                str(backend_dir),
                str(exp / "backend"),
            ],
            exp / "log" / "backend.log",
            env,
        ),
    )
    trials = sorted(p.name for p in test_dir.glob("trials*"))
    k_score = _hash(
        k_back, [(t, hashlib.sha256((test_dir / t).read_bytes()).hexdigest()) for t in trials], SCORE_BACKENDS
    )
    _step(
        exp / ".study.score",
        k_score,
        lambda: _run(
            [
                py,
                "-m",
                "pyspk.bin.main",
                "score",
                "--backends",
                ",".join(SCORE_BACKENDS),
                "--backend-dir",
                str(exp / "backend"),
                "--xvector-dir",
                str(xv_test),
                "--data-dir",
                str(test_dir),
                "--out-dir",
                str(exp / "scores"),
            ],
            exp / "log" / "score.log",
            env,
        ),
    )
    return exp


# --------------------------------------------------------------------------- the table
def _col(rows: List[dict], key: str) -> List[float]:
    vals = []
    for r in rows:
        try:
            x = float(r.get(key, "nan"))
        except ValueError:
            continue
        if math.isfinite(x):
            vals.append(x)
    return vals


def train_summary(train_csv: Path) -> dict:
    """α median and 5-95 %, and per-pair statistics of the first and last epoch."""
    if not train_csv.is_file():
        return {}
    with open(train_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    alpha = sorted(_col(rows, "alpha"))
    if alpha:
        q = lambda p: alpha[min(len(alpha) - 1, int(round(p * (len(alpha) - 1))))]  # noqa: E731
        out["alpha"] = (statistics.median(alpha), q(0.05), q(0.95))
    epochs = sorted({int(r["epoch"]) for r in rows})
    for tag, ep in (("first", epochs[0]), ("last", epochs[-1])) if epochs else ():
        sel = [r for r in rows if int(r["epoch"]) == ep]
        for k in ("cos_pos", "cos_neg", "grad_pos", "grad_neg", "caa_w_std", "caa_w_lt_half"):
            vals = _col(sel, k)
            if vals:
                out[f"{k}_{tag}"] = statistics.fmean(vals)
    return out


def _ms(vals: List[float], scale: float = 1.0, fmt: str = ".2f") -> str:
    if not vals:
        return "–"
    m = statistics.fmean(vals) * scale
    if len(vals) == 1:
        return format(m, fmt)
    return f"{format(m, fmt)} ± {format(statistics.stdev(vals) * scale, fmt)}"


def collect(corpus: str, chosen: List[Variant], seeds: List[int], out: Path) -> dict:
    """Finished runs per variant; a run trained under another config than the variant's
    current one (a changed yaml or default) is left out as stale."""
    res = {}
    for var in chosen:
        if not (ROOT / "conf" / corpus / f"{var.base}.yaml").is_file():
            continue  # a variant of the other corpus only (ecapa.*)
        per_seed = []
        try:
            want = semantic(_resolved(resolved_config(corpus, var, None, out)))
        except ValueError:  # fixed.tuned before its lambda is picked
            continue
        for s in seeds:
            exp = out / corpus / var.name / f"s{s}"
            m = exp / "scores" / "metrics.json"
            if (exp / ".study.score").is_file() and m.is_file() and semantic(trained_as(exp)) == want:
                rec = exp / ".study.provenance"
                per_seed.append(
                    {
                        "seed": s,
                        "metrics": json.loads(m.read_text()),
                        "train": train_summary(exp / "train.csv"),
                        "provenance": json.loads(rec.read_text()) if rec.is_file() else {},
                    }
                )
        if per_seed:
            res[var.name] = per_seed
    return res


def write_table(corpus: str, chosen: List[Variant], seeds: List[int], out: Path, command: str) -> Path:
    res = collect(corpus, chosen, seeds, out)
    lines = [
        f"# Loss study on {corpus}",
        "",
        f"Command: `{command}`",
        "",
        "EER % and minDCF(0.01), mean ± sd over the seeds that finished (n); cosine, AS-norm "
        "(adaptive s-norm of the cosine scores, cohort: the training speakers' means) and PLDA "
        "back-ends, as run.sh stage 6 scores them.",
        "α: MGDA's classifier weight, median [5 %, 95 %] of the steps, pooled over seeds.",
        "",
    ]
    trials = sorted({t for runs in res.values() for r in runs for t in r["metrics"]})
    by_group: Dict[str, List[Variant]] = {}
    for var in chosen:
        by_group.setdefault(var.group, []).append(var)
    for group, vs in by_group.items():
        lines += [f"## {group}", ""]
        head = (
            "| variant | n |"
            + "".join(f" {t} {SHORT[b]} EER | {t} {SHORT[b]} DCF |" for t in trials for b in SCORE_BACKENDS)
            + " α |"
        )
        lines += [head, "|" + "---|" * (2 + 2 * len(SCORE_BACKENDS) * len(trials) + 1)]
        for var in vs:
            runs = res.get(var.name, [])
            cells = [var.name, str(len(runs))]
            for t in trials:
                for b in SCORE_BACKENDS:
                    ms = [r["metrics"].get(t, {}).get(b) for r in runs]
                    ms = [m for m in ms if m]
                    cells.append(_ms([m["eer"] for m in ms], 100.0))
                    cells.append(_ms([m.get("min_dcf_0.01", float("nan")) for m in ms], 1.0, ".3f"))
            alphas = [r["train"]["alpha"] for r in runs if "alpha" in r["train"]]
            cells.append(
                f"{statistics.median(a[0] for a in alphas):.3f} "
                f"[{min(a[1] for a in alphas):.3f}, {max(a[2] for a in alphas):.3f}]"
                if alphas
                else "–"
            )
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        stat_keys = ("cos_pos", "cos_neg", "grad_pos", "grad_neg", "caa_w_std", "caa_w_lt_half")
        have = [k for k in stat_keys if any(f"{k}_last" in r["train"] for var in vs for r in res.get(var.name, []))]
        if have:
            lines += [
                "What the loss saw (train.csv, mean over the first → last epoch, over seeds): "
                "cos_pos/cos_neg mean cosine of positive/negative pairs; grad_pos/grad_neg the "
                "contrastive loss's angular force on them per anchor; caa_w_std/caa_w_lt_half the "
                "spread of the CAA weights and the share of negatives below half their anchor's mean weight.",
                "",
                "| variant |" + "".join(f" {k} |" for k in have),
                "|---|" + "---|" * len(have),
            ]
            for var in vs:
                runs = res.get(var.name, [])
                cells = [var.name]
                for k in have:
                    a = [r["train"][f"{k}_first"] for r in runs if f"{k}_first" in r["train"]]
                    b = [r["train"][f"{k}_last"] for r in runs if f"{k}_last" in r["train"]]
                    cells.append(f"{statistics.fmean(a):.3f} → {statistics.fmean(b):.3f}" if a and b else "–")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Variants", ""] + [
        f"- `{v.name}` ({v.group}): {v.what}; base `conf/{corpus}/{v.base}.yaml`"
        + (f", overrides `{json.dumps(v.overrides)}`" if v.overrides else "")
        + (f", {v.noise:.0%} label noise" if v.noise else "")
        + (f", {v.budget}x steps" if v.budget != 1 else "")
        + (f", training set '{v.train_set}'" if v.train_set != "recipe" else "")
        + (f", back-end fitted on the '{v.backend_set}' set" if v.backend_set != "clean" else "")
        + (", trained without the development speakers, scored on them" if v.split == "dev" else "")
        + (f", lambda {_tuned_text(out, corpus)}" if v.tuned else "")
        + (f", then fine-tuned with `{lmft_file(corpus).relative_to(ROOT)}`" if v.lmft_of else "")
        for v in chosen
    ]
    path = out / corpus / "study.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    (out / corpus / "study.json").write_text(json.dumps(res, indent=1))
    return path


def write_summary(out: Path, groups: List[str], seeds: List[int]) -> Path:
    """One compact table over both corpora: EER % (mean ± sd) per variant, list and back-end.

    Written to OUT/summary.md from the finished systems of every corpus; the table of
    docs/results/loss-study.md ('The table') is this file.
    """
    allv = [v for v in variants() if v.group in groups]
    cols, lines = [], []
    res = {c: collect(c, allv, seeds, out) for c in CORPORA}
    for c, r in res.items():
        for t in sorted({t for runs in r.values() for x in runs for t in x["metrics"]}):
            for b in ("cosine", "plda"):
                cols.append((c, t, b))
    short = {"synth": "SC", "speechocean762": "so762"}
    lines.append(
        "| variant | n |"
        + "".join(
            f" {short[c]} {t.replace('trials_', '').replace('trials', 'all')} {'cos' if b == 'cosine' else 'PLDA'} |"
            for c, t, b in cols
        )
    )
    lines.append("|---|---|" + "---:|" * len(cols))
    for v in allv:
        n = {c: len(res[c].get(v.name, [])) for c in CORPORA}
        if not any(n.values()):
            continue
        cells = [f"`{v.name}`", "/".join(str(n[c]) for c in CORPORA)]
        for c, t, b in cols:
            ms = [x["metrics"].get(t, {}).get(b) for x in res[c].get(v.name, [])]
            cells.append(_ms([m["eer"] for m in ms if m], 100.0))
        lines.append("| " + " | ".join(cells) + " |")
    path = out / "summary.md"
    records = sorted(
        {
            (
                r["provenance"].get("commit", "unrecorded"),
                r["provenance"].get("date", "?"),
                r["provenance"].get("cpu", "?"),
            )
            for c in res.values()
            for runs in c.values()
            for r in runs
        }
    )
    head = [
        f"Written by `studies/study_losses.sh --summary --groups {','.join(groups)} --seeds "
        f"{','.join(map(str, seeds))}` from the finished runs under {out.name}/; the runs were trained at:",
        "",
    ]
    head += [f"- commit {c}, {d}, {cpu}" for c, d, cpu in records] + [""]
    atomic_write_text(
        path,
        "\n".join(head) + "\n" + "EER % (mean ± sd over seeds); n = seeds finished on SynthCeleb / speechocean762 "
        "(SC: SynthCeleb trials_en, trials_cmn, trials_cross; so762: held-out speakers, all "
        "trials and same-gender subsets).\n\n" + "\n".join(lines) + "\n",
    )
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="synth", choices=sorted(CORPORA))
    p.add_argument(
        "--groups",
        default="rows,margin,noise,caa,mgda,pick,long",
        help="comma-separated: rows, margin, noise, caa, mgda, pick, ecapa, long, aug, backend, lambda, balance, lmft",
    )
    p.add_argument("--variants", default="", help="comma-separated variant names (overrides --groups)")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--jobs", type=int, default=2, help="systems trained at once (each on --threads threads)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="exp_study")
    p.add_argument("--list", action="store_true", help="list the variants and exit")
    p.add_argument("--table-only", action="store_true", help="write the table from what has finished")
    p.add_argument(
        "--summary",
        action="store_true",
        help="write OUT/summary.md (both corpora, the chosen --groups) from what has finished",
    )
    args = p.parse_args(argv)
    allv = variants()
    if args.list:
        for v in allv:
            print(f"{v.group:7s} {v.name:34s} {v.what}")
        return 0
    names = [n for n in args.variants.split(",") if n]
    groups = [g for g in args.groups.split(",") if g]
    known = {v.name for v in allv}
    bad = [n for n in names if n not in known]
    if bad:
        p.error(f"unknown variant(s) {', '.join(bad)}; see --list")
    chosen = [v for v in allv if v.name in names] if names else [v for v in allv if v.group in groups]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out = (ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    if args.summary:
        print(f"study: summary in {write_summary(out, groups, seeds)}")
        return 0
    command = "studies/study_losses.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    for v in chosen:  # fail early on a bad variant, before hours of training
        if not v.tuned:  # its lambda comes from the development runs
            resolved_config(args.corpus, v, args.threads)
    failed = []
    if not args.table_only:
        # the development runs first: fixed.tuned trains with the lambda they pick
        dev = [v for v in chosen if v.split == "dev"]
        rest = [v for v in chosen if v.split != "dev"]

        def one(job):
            v, s = job
            t0 = time.time()
            try:
                run_system(args.corpus, v, s, out, args.threads)
                print(f"study: {args.corpus} {v.name} seed {s} done ({time.time() - t0:.0f} s)", flush=True)
            except Exception as e:  # noqa: BLE001 - reported, the others go on
                failed.append(f"{v.name} seed {s}: {e}")
                print(f"study: {args.corpus} {v.name} seed {s} FAILED: {e}", flush=True)
            write_table(args.corpus, chosen, seeds, out, command)

        for phase in (dev, rest):
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                list(pool.map(one, [(v, s) for s in seeds for v in phase]))
            lam = pick_lambda(args.corpus, seeds, out)
            if phase is dev and lam is not None:
                print(f"study: {args.corpus}: tuned lambda {lam:g} (OUT/{args.corpus}/tuned_lambda.json)", flush=True)
        if failed:
            print("study: failed:\n  " + "\n  ".join(failed), file=sys.stderr)
    path = write_table(args.corpus, chosen, seeds, out, command)
    print(f"study: table in {path}")
    return 1 if not args.table_only and failed else 0


if __name__ == "__main__":
    sys.exit(main())
