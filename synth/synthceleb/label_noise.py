"""Seeded label noise: a known fraction of training utterances assigned to a wrong speaker.

The paper's "hard negatives" are samples the model "struggles to accurately predict"; on a
clean corpus those are few, so class-aware attention has little to find. With label noise the
hard samples are known: ``label_noise`` (one line per flipped utterance,
``<utt> <true-speaker> <assigned-speaker>``) says which.

Flips are decided on *original* utterances: in a data dir with ``utt2orig`` (the augmented
copies of stage 2) every copy follows its original, so the clean and augmented copies of one
recording carry the same (wrong) label, as a mislabelled recording would. The draw depends
only on (seed, fraction, the sorted original ids and their speakers), so the clean dir and
its ``_combined`` dir get the same flips.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, Mapping

from pyspk.data.dir_edit import commit_staged, staged_dir
from pyspk.data.kaldi_dir import read_table, utt2spk_to_spk2utt, validate_data_dir, write_table
from pyspk.io import atomic_write_text

from .seeding import stable_rng

NOISE_FILE = "label_noise"


def choose_flips(utt2spk: Mapping[str, str], fraction: float, seed: int) -> Dict[str, str]:
    """{utt: wrong speaker} for round(fraction · N) utterances drawn without replacement.

    Each chosen utterance gets a speaker drawn uniformly from the other speakers.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"label noise fraction must be in [0, 1), got {fraction}")
    utts = sorted(utt2spk)
    speakers = sorted(set(utt2spk.values()))
    count = int(round(fraction * len(utts)))
    if count and len(speakers) < 2:
        raise ValueError("label noise needs at least 2 speakers")
    rng = stable_rng(seed, "label_noise", f"{fraction:.6f}")
    chosen = sorted(rng.choice(len(utts), size=count, replace=False).tolist()) if count else []
    flips = {}
    for k in chosen:
        utt = utts[k]
        others = [s for s in speakers if s != utt2spk[utt]]
        flips[utt] = others[int(rng.integers(len(others)))]
    return flips


def noisy_labels(utt2spk: Mapping[str, str], utt2orig: Mapping[str, str] | None, fraction: float, seed: int):
    """(new utt2spk, flips of the originals) for a dir's tables; see the module doc."""
    if utt2orig is None:
        orig_spk = dict(utt2spk)
    else:
        orig_spk = {}
        for utt, orig in utt2orig.items():
            spk = utt2spk[utt]
            if orig_spk.setdefault(orig, spk) != spk:
                raise ValueError(f"utt2orig: copies of {orig} have different speakers ({orig_spk[orig]}, {spk})")
    flips = choose_flips(orig_spk, fraction, seed)
    new = {}
    for utt, spk in utt2spk.items():
        orig = utt if utt2orig is None else utt2orig.get(utt, utt)
        new[utt] = flips.get(orig, spk)
    return new, {u: (orig_spk[u], s) for u, s in flips.items()}


def write_noisy_dir(src, dst, fraction: float, seed: int) -> int:
    """Copy data dir ``src`` to ``dst`` with noisy utt2spk/spk2utt and a ``label_noise`` file.

    Every other file (feats.scp, vad.scp, utt2orig, wav.scp, ...) is copied as it is, so the
    features are shared. Returns the number of flipped original utterances.
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"{dst}: the noisy copy must go to a new dir, not over its source")
    validate_data_dir(src, check_files=False, need_wav=False)
    utt2spk = read_table(src / "utt2spk")
    utt2orig = read_table(src / "utt2orig") if (src / "utt2orig").is_file() else None
    new, flips = noisy_labels(utt2spk, utt2orig, fraction, seed)
    with staged_dir(dst, link_existing=False) as tmp:
        for f in src.iterdir():
            if f.is_file() and f.name not in ("utt2spk", "spk2utt", NOISE_FILE) and not f.name.startswith(".done"):
                shutil.copy2(f, tmp / f.name)
        write_table(tmp / "utt2spk", new)
        write_table(tmp / "spk2utt", utt2spk_to_spk2utt(new))
        atomic_write_text(tmp / NOISE_FILE, "".join(f"{u} {t} {a}\n" for u, (t, a) in sorted(flips.items())))
        validate_data_dir(tmp, check_files=False, need_wav=False)
        commit_staged(tmp, dst, drop_stale=True)
    return len(flips)
