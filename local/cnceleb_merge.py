"""Merging of short CN-Celeb segments (used by prepare_cnceleb.py --min-duration).

Many CN-Celeb segments last 1-2 s, shorter than a 2-3 s training crop. Consecutive
segments (in utterance-id order, i.e. by session and number) of one speaker and one
genre are joined until the group lasts at least ``min_duration`` seconds; a tail group
shorter than that joins the previous group of the same speaker and genre. A segment
already long enough stays as it is. A group of one segment keeps its id; a merged group
becomes ``<spk>-<genre>-merged<k>`` (k counts per speaker and genre, 4 digits).

Audio of a merged group: a ``sox A B ... -t wav - |`` pipe when sox is installed (no
disk), else one FLAC written by Python (soundfile) into ``audio_dir/<spk>/`` atomically,
named ``<utt>.<hash of its member paths>.flac``: a rerun reuses files of unchanged groups
instead of rewriting the corpus, and never a file made for another grouping.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import shutil
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import numpy as np
import soundfile as sf
from corpus_common import CorpusError, bkey

from pyspk.io import atomic_path

log = logging.getLogger("local.cnceleb")


def group_segments(utts: List[str], durations: Mapping[str, float], min_duration: float) -> List[List[str]]:
    """Greedy grouping of ordered segments into runs of at least ``min_duration`` seconds."""
    groups: List[List[str]] = []
    acc: List[str] = []
    total = 0.0
    for u in utts:
        acc.append(u)
        total += durations[u]
        if total >= min_duration:
            groups.append(acc)
            acc, total = [], 0.0
    if acc:
        if groups:
            groups[-1].extend(acc)
        else:
            groups.append(acc)
    return groups


def concat_to_flac(paths: List[str], out: Path) -> None:
    if out.is_file():
        return
    waves, rate = [], None
    for p in paths:
        x, sr = sf.read(p, dtype="int16", always_2d=True)
        if rate is not None and sr != rate:
            raise CorpusError(f"cannot merge {paths[0]} ({rate} Hz) with {p} ({sr} Hz)")
        rate = sr
        waves.append(x[:, 0])
    with atomic_path(out) as tmp:
        sf.write(str(tmp), np.concatenate(waves), rate, format="FLAC", subtype="PCM_16")


def merge_short_segments(
    wav_scp: Mapping[str, str],
    utt2spk: Mapping[str, str],
    utt2genre: Mapping[str, str],
    min_duration: float,
    audio_dir: Path,
) -> Tuple[Dict[str, str], Dict[str, str], Dict[str, str]]:
    """New (wav_scp, utt2spk, utt2genre) with short segments merged (see module doc)."""
    sox = shutil.which("sox")
    durations = {u: sf.info(p).duration for u, p in wav_scp.items()}
    by_key: Dict[Tuple[str, str], List[str]] = {}
    for u in sorted(wav_scp, key=bkey):
        by_key.setdefault((utt2spk[u], utt2genre[u]), []).append(u)
    new_wav, new_spk, new_genre = {}, {}, {}
    n_merged = 0
    for (spk, genre), utts in sorted(by_key.items()):
        for k, group in enumerate(group_segments(utts, durations, min_duration)):
            if len(group) == 1:
                u, src = group[0], wav_scp[group[0]]
            else:
                u = f"{spk}-{genre}-merged{k:04d}"
                paths = [wav_scp[g] for g in group]
                if sox:
                    src = " ".join([shlex.quote(sox)] + [shlex.quote(p) for p in paths] + ["-t", "wav", "-", "|"])
                else:
                    # the name carries a hash of the members, so a file made for another grouping is never reused
                    tag = hashlib.sha1("\n".join(paths).encode()).hexdigest()[:10]
                    out = (audio_dir / spk / f"{u}.{tag}.flac").resolve()
                    concat_to_flac(paths, out)
                    src = str(out)
                n_merged += 1
            new_wav[u], new_spk[u], new_genre[u] = src, spk, genre
    log.info(
        "merged short segments to >= %.1f s: %d -> %d utterances (%d merged groups, %s)",
        min_duration,
        len(wav_scp),
        len(new_wav),
        n_merged,
        "sox pipes" if sox else f"FLAC files in {audio_dir}",
    )
    return new_wav, new_spk, new_genre
