#!/usr/bin/env python3
"""A folder of audio per speaker -> Kaldi data dirs TRAIN_DIR and TEST_DIR with trials.

Layout: ``ROOT/<speaker>/**/*.{wav,flac}`` (any depth below the speaker folder; other
files are ignored). Speaker id = the folder name; utterance id = ``<speaker>-<path below
it without extension, '/' -> '-'>``; whitespace in names becomes '_' (two names that
collide after that are an error naming both files).

Speakers are split, seeded, into training and test speakers (``--num-test-speakers N`` or
``--test-fraction F``, default 0.2), or all go to the test set (``--all-test``, for a
pretrained model; no TRAIN_DIR is written). Trials come from the test speakers: every
target pair, and ``--nontarget-ratio`` x as many non-target pairs sampled with the seed
(``--max-target`` caps the target pairs, sampled too). ``TEST_DIR/trials`` is written
once and kept.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from corpus_common import CorpusError, count_labels, make_trials, run_main, split_speakers, write_data_dir

from pyspk.data.kaldi_dir import read_trials

log = logging.getLogger("local.folder")
EXTS = (".wav", ".flac")


def safe(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip())


def scan_folder(root: Path):
    """(wav_scp, utt2spk) of every audio file under ``root/<speaker>/``."""
    wav_scp, utt2spk, origin = {}, {}, {}
    speakers = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not speakers:
        raise CorpusError(f"{root}: no speaker folder (expected {root}/<speaker>/**/*.wav|flac)")
    seen = {}
    for d in speakers:
        spk = safe(d.name)
        if spk in seen:
            raise CorpusError(f"speaker folders {seen[spk]} and {d} both become speaker id '{spk}'; rename one")
        seen[spk] = d
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in EXTS and p.is_file())
        if not files:
            log.warning("%s: no .wav/.flac file; speaker skipped", d)
        for f in files:
            u = safe(f"{spk}-" + str(f.relative_to(d).with_suffix("")).replace("/", "-"))
            if u in origin:
                raise CorpusError(f"utterance id '{u}' names two files: {origin[u]} and {f}; rename one")
            origin[u] = f
            wav_scp[u], utt2spk[u] = str(f.resolve()), spk
    if not utt2spk:
        raise CorpusError(f"{root}: no .wav or .flac file under any speaker folder")
    return wav_scp, utt2spk


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--train-dir", type=Path)
    p.add_argument("--test-dir", required=True, type=Path)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--num-test-speakers", type=int)
    g.add_argument("--test-fraction", type=float, default=0.2)
    g.add_argument("--all-test", action="store_true", help="every speaker goes to the test set")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--nontarget-ratio", type=float, default=1.0)
    p.add_argument("--max-target", type=int, help="cap on target trials (seeded sample)")
    a = p.parse_args(argv)
    if not a.root.is_dir():
        raise CorpusError(f"folder root {a.root} is not a directory")
    wav_scp, utt2spk = scan_folder(a.root)
    speakers = sorted(set(utt2spk.values()))
    if a.all_test:
        test_spk = set(speakers)
    else:
        if a.train_dir is None:
            raise CorpusError("--train-dir is required unless --all-test")
        n = a.num_test_speakers if a.num_test_speakers is not None else max(2, round(a.test_fraction * len(speakers)))
        train_spk, test = split_speakers(speakers, n, a.seed)
        test_spk = set(test)
        log.info(
            "%s: %d speakers -> %d training, %d test (seed %d)",
            a.root,
            len(speakers),
            len(train_spk),
            len(test_spk),
            a.seed,
        )
        write_data_dir(
            a.train_dir,
            {u: w for u, w in wav_scp.items() if utt2spk[u] not in test_spk},
            {u: s for u, s in utt2spk.items() if s not in test_spk},
        )
    t_wav = {u: w for u, w in wav_scp.items() if utt2spk[u] in test_spk}
    t_u2s = {u: s for u, s in utt2spk.items() if s in test_spk}
    kept = a.test_dir / "trials"
    if kept.is_file():
        trials = [(t.enroll, t.test, t.target) for t in read_trials(kept)]
    else:
        trials = make_trials(t_u2s, a.seed, a.nontarget_ratio, a.max_target)
    n_t, n_n = count_labels(trials)
    if n_t == 0:
        raise CorpusError(f"no target trial: every test speaker under {a.root} has a single file")
    log.info("%s: %d target + %d non-target trials", kept, n_t, n_n)
    write_data_dir(a.test_dir, t_wav, t_u2s, trials={"trials": trials}, keep_trials=("trials",))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
