#!/usr/bin/env python3
"""speechocean762 (OpenSLR 101) -> Kaldi data dirs for speaker verification.

Official layout (ROOT = the unpacked ``speechocean762`` folder)::

    WAVE/SPEAKERnnnn/<utt>.WAV      (.flac accepted: a listed path whose file is missing
                                     is tried with the other audio extension)
    train/{wav.scp,utt2spk,spk2gender,...}   wav.scp paths relative to ROOT
    test/{wav.scp,utt2spk,spk2gender,...}    125 other speakers

Output: TRAIN_DIR from the train speakers, TEST_DIR from the test speakers with
``spk2gender`` and trials made from its utterances (every target pair, a seeded
sample of ``--nontarget-ratio`` x as many non-target pairs; see
``corpus_common.make_trials``) in ``trials``, plus the same-gender subsets
``trials_female`` / ``trials_male`` for per-gender results. The ``trials`` file is
written once and kept: when TEST_DIR/trials exists it is reused as it is.

Development mode ``--split-train-speakers N``: only the train half is used; N of its
speakers (seeded, drawn alternately from each gender) become the evaluation speakers.
Utterance and speaker ids are the corpus's own (``000010011``, ``0001``), which sort
consistently (an utterance id starts with its speaker's number).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, Tuple

from corpus_common import (
    CorpusError,
    count_labels,
    make_trials,
    read_list,
    report_missing,
    require_file,
    resolve_audio,
    run_main,
    split_speakers,
    subset_trials,
    write_data_dir,
)

from pyspk.data.kaldi_dir import read_trials

log = logging.getLogger("local.speechocean762")
GENDER_NAMES = {"f": "female", "m": "male"}


def read_half(root: Path, half: str, skip_missing: bool) -> Tuple[Dict[str, str], Dict[str, str], Dict[str, str]]:
    """(wav_scp with absolute paths, utt2spk, spk2gender) of ``root/half``."""
    d = root / half
    wav_list = require_file([d / "wav.scp"], f"speechocean762 {half} list wav.scp")
    spk_list = require_file([d / "utt2spk"], f"speechocean762 {half} list utt2spk")
    utt2spk = {f[0]: f[1] for _, f in read_list(spk_list, 2)}
    wav_scp: Dict[str, str] = {}
    missing: Dict[str, Tuple[str, int, int]] = {}
    for lineno, (utt, rel, *_) in read_list(wav_list, 2):
        if utt not in utt2spk:
            raise CorpusError(f"{wav_list}:{lineno}: utterance '{utt}' is not in {spk_list}")
        path = resolve_audio(root / rel)
        if path is None:
            missing[utt] = (str(root / rel), lineno, 1)
            continue
        wav_scp[utt] = str(path.resolve())
    report_missing(missing, str(wav_list), skip_missing, len(utt2spk), len(missing))
    absent = sorted(set(utt2spk) - set(wav_scp) - set(missing))
    if absent:
        raise CorpusError(f"{wav_list}: no entry for {len(absent)} utterance(s) of {spk_list}, e.g. '{absent[0]}'")
    utt2spk = {u: s for u, s in utt2spk.items() if u in wav_scp}
    gender_file = d / "spk2gender"
    spk2gender: Dict[str, str] = {}
    if gender_file.is_file():
        spk2gender = {f[0]: f[1].lower() for _, f in read_list(gender_file, 2)}
    else:
        log.warning("%s not found: no per-gender trials", gender_file)
    no_gender = sorted(set(utt2spk.values()) - set(spk2gender))
    if spk2gender and no_gender:
        raise CorpusError(f"{gender_file}: no gender for speaker(s) {no_gender[:5]}")
    return wav_scp, utt2spk, spk2gender


def gender_trials(trials, utt2spk, spk2gender):
    """Same-gender subsets of ``trials``: {'trials_female': [...], 'trials_male': [...]}."""
    out = {}
    for g in sorted(set(spk2gender.values())):
        name = f"trials_{GENDER_NAMES.get(g, g)}"
        keep = subset_trials(trials, lambda e, t: spk2gender[utt2spk[e]] == g and spk2gender[utt2spk[t]] == g)
        if keep:
            out[name] = keep
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path, help="the speechocean762 folder")
    p.add_argument("--train-dir", required=True, type=Path)
    p.add_argument("--test-dir", required=True, type=Path)
    p.add_argument(
        "--split-train-speakers",
        type=int,
        default=0,
        metavar="N_EVAL",
        help="hold out N_EVAL train speakers for evaluation (no test/ half needed); 0 = official test/",
    )
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--nontarget-ratio", type=float, default=1.0, help="non-target trials per target trial")
    p.add_argument("--skip-missing", action="store_true", help="drop listed utterances whose audio is absent")
    a = p.parse_args(argv)
    root = a.root
    if not root.is_dir():
        raise CorpusError(f"speechocean762 root {root} is not a directory")
    if a.split_train_speakers:
        wav, utt2spk, spk2gender = read_half(root, "train", a.skip_missing)
        train_spk, test_spk = split_speakers(set(utt2spk.values()), a.split_train_speakers, a.seed, spk2gender)
        log.info(
            "development split of %s/train (seed %d): %d training, %d evaluation speakers",
            root,
            a.seed,
            len(train_spk),
            len(test_spk),
        )
        test_set = set(test_spk)
        train = (
            {u: w for u, w in wav.items() if utt2spk[u] not in test_set},
            {u: s for u, s in utt2spk.items() if s not in test_set},
            spk2gender,
        )
        test = (
            {u: w for u, w in wav.items() if utt2spk[u] in test_set},
            {u: s for u, s in utt2spk.items() if s in test_set},
            spk2gender,
        )
    else:
        if not (root / "test").is_dir():
            raise CorpusError(
                f"{root / 'test'} not found (the official test half); "
                f"use --split-train-speakers N to evaluate on held-out train speakers"
            )
        train = read_half(root, "train", a.skip_missing)
        test = read_half(root, "test", a.skip_missing)
        overlap = set(train[1].values()) & set(test[1].values())
        if overlap:
            raise CorpusError(f"speakers in both train/ and test/ of {root}: {sorted(overlap)[:5]}")
    for out_dir, (wav_scp, u2s, s2g), is_test in ((a.train_dir, train, False), (a.test_dir, test, True)):
        spks = set(u2s.values())
        tables = {"spk2gender": {s: g for s, g in s2g.items() if s in spks}} if s2g else {}
        trials = {}
        if is_test:
            kept = out_dir / "trials"
            if kept.is_file():
                base = [(t.enroll, t.test, t.target) for t in read_trials(kept)]
                unknown = [x for e, t, _ in base for x in (e, t) if x not in u2s]
                if unknown:
                    raise CorpusError(
                        f"{kept} (kept from an earlier run) names utterance(s) not in this test "
                        f"set, e.g. '{unknown[0]}'; delete it to make new trials"
                    )
            else:
                base = make_trials(u2s, a.seed, a.nontarget_ratio)
            n_t, n_n = count_labels(base)
            log.info("%s: %d target + %d non-target trials", out_dir / "trials", n_t, n_n)
            trials = {"trials": base}
            if s2g:
                trials.update(gender_trials(base, u2s, s2g))
        write_data_dir(out_dir, wav_scp, u2s, tables, trials, keep_trials=("trials",))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
