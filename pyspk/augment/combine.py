"""Combine data directories (Kaldi ``utils/combine_data.sh``) with ``utt2orig``.

The combined directory holds the union of utt2spk, feats.scp, utt2num_frames,
utt2orig (clean utterances map to themselves), and vad.scp / utt2lang when every
part has them; wav.scp (a recording shared by several parts, with segments, once)
and segments, plus aug.scp (the copies' recipes, so that
``pyspk fbank`` on the combined directory reproduces its features); spk2utt is rebuilt. Duplicate utterance ids are an error.

:func:`draw_subset` picks the augmented utterances that join the clean set when only N of them
are wanted (Kaldi's egs/voxceleb/v2: ``utils/subset_data_dir.sh data/train_aug 1000000``).
"""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Set

import numpy as np

from pyspk.data.kaldi_dir import DataDirError, read_table, utt2spk_to_spk2utt, validate_data_dir, write_table

TABLES = ("utt2spk", "feats.scp", "utt2num_frames", "utt2orig", "vad.scp", "utt2lang", "wav.scp", "segments", "aug.scp")
REQUIRED = ("utt2spk", "feats.scp", "utt2num_frames")


def draw_subset(copies: Mapping[str, Sequence[str]], n: int, seed: int) -> Dict[str, Set[str]]:
    """``n`` utterances drawn uniformly without replacement from all of ``copies`` (copy name ->
    its utterance ids) with ``numpy.random.default_rng([seed, crc32("subset")])``: copy name ->
    the ones drawn. The draw depends on the seed, the ids and their order only; ``n`` at least
    the number of utterances, or 0, draws them all."""
    pool = [(name, utt) for name, utts in copies.items() for utt in utts]
    if n <= 0 or n >= len(pool):
        return {name: set(utts) for name, utts in copies.items()}
    rng = np.random.default_rng([seed, zlib.crc32(b"subset")])
    drawn: Dict[str, Set[str]] = {name: set() for name in copies}
    for i in rng.choice(len(pool), size=n, replace=False):
        name, utt = pool[int(i)]
        drawn[name].add(utt)
    return drawn


def combine_dirs(parts: List[Path], out_dir: Path) -> Dict[str, int]:
    """Write ``out_dir`` = union of ``parts``; return validate_data_dir's counts."""
    merged: Dict[str, Dict[str, str]] = {}
    for name in TABLES:
        have = [(p / name).is_file() for p in parts]
        if name in ("utt2orig", "aug.scp"):
            pass  # utt2orig: identity for parts without one; aug.scp: recipes of the copies only
        elif name in REQUIRED and not all(have):
            missing = [str(p / name) for p, h in zip(parts, have) if not h]
            raise DataDirError(f"cannot combine: {missing[0]} not found")
        elif not all(have):
            continue
        table: Dict[str, str] = {}
        for p in parts:
            if (p / name).is_file():
                t = read_table(p / name)
            else:
                t = {u: u for u in read_table(p / "utt2spk")} if name == "utt2orig" else {}
            for k, v in t.items():
                if name == "wav.scp" and table.get(k) == v:
                    continue  # with segments, copies share the clean set's recordings
                if k in table:
                    raise DataDirError(f"cannot combine: utterance '{k}' appears twice (again in {p / name})")
                table[k] = v
        merged[name] = table
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        if name in merged:
            write_table(out_dir / name, merged[name])
        else:
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name).unlink()
    write_table(out_dir / "spk2utt", utt2spk_to_spk2utt(merged["utt2spk"]))
    return validate_data_dir(out_dir, check_files=False, need_wav=False, need_feats=True)
