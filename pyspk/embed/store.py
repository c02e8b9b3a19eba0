"""Embedding tables on disk (Kaldi ark/scp through kaldiio) and speaker means.

An x-vector directory (``pyspk extract`` output) holds

- ``xvector.{ark,scp}``      one float32 vector per utterance;
- ``spk_xvector.{ark,scp}``  per-speaker mean of its utterances' x-vectors
  (Kaldi's ``ivector-mean ark:spk2utt``);
- ``num_utts.ark``           text ``spk N`` lines, the number of utterances averaged
  per speaker, written as Kaldi does (``ark,t:num_utts.ark``: an int32 table in text
  form), used for multi-utterance PLDA enrolment.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import kaldiio
import numpy as np

from pyspk.io import atomic_open, atomic_path


def write_vectors(ark_path, scp_path, vectors: Mapping[str, np.ndarray]) -> None:
    """Write sorted ``vectors`` to ark + scp atomically (ark renamed first, then scp)."""
    ark_path, scp_path = Path(ark_path), Path(scp_path)
    buf = io.StringIO()
    items = OrderedDict((k, np.asarray(vectors[k], dtype=np.float32)) for k in sorted(vectors))
    with atomic_path(ark_path) as tmp:
        kaldiio.save_ark(str(tmp), items, scp=buf)
        tmp_name = str(tmp)
    lines = buf.getvalue().replace(tmp_name, str(ark_path))
    with atomic_open(scp_path) as f:
        f.write(lines)


def read_vectors(scp_path) -> "OrderedDict[str, np.ndarray]":
    """Read an scp of vectors into an ordered dict (file order)."""
    scp_path = Path(scp_path)
    if not scp_path.is_file():
        raise FileNotFoundError(f"{scp_path} not found")
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for key, vec in kaldiio.load_scp_sequential(str(scp_path)):
        v = np.asarray(vec, dtype=np.float32).reshape(-1)
        if not np.isfinite(v).all():
            raise ValueError(f"{scp_path}: embedding of '{key}' contains NaN or inf")
        out[key] = v
    return out


def stack(table: Mapping[str, np.ndarray]) -> Tuple[List[str], np.ndarray]:
    keys = list(table)
    if not keys:
        return keys, np.zeros((0, 0), dtype=np.float32)
    return keys, np.stack([table[k] for k in keys]).astype(np.float32)


def speaker_means(xvectors: Mapping[str, np.ndarray], spk2utt: Mapping[str, Sequence[str]],
                  where: str = "spk2utt") -> Tuple[Dict[str, np.ndarray], Dict[str, int]]:
    """Per-speaker mean x-vector and utterance count; an utterance without x-vector is an error."""
    means, counts = {}, {}
    for spk, utts in spk2utt.items():
        missing = [u for u in utts if u not in xvectors]
        if missing:
            raise KeyError(f"{where}: speaker '{spk}': utterance '{missing[0]}' has no x-vector "
                           f"({len(missing)} missing)")
        means[spk] = np.mean([xvectors[u] for u in utts], axis=0).astype(np.float32)
        counts[spk] = len(utts)
    return means, counts


def write_num_utts(path, counts: Mapping[str, int]) -> None:
    with atomic_open(path) as f:
        for spk in sorted(counts):
            f.write(f"{spk} {int(counts[spk])}\n")


def read_num_utts(path) -> Dict[str, int]:
    out = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{lineno}: expected 'spk count', got {line!r}")
        out[parts[0]] = int(parts[1])
    return out


def write_xvector_dir(out_dir, xvectors: Mapping[str, np.ndarray], spk2utt) -> None:
    """Merged utterance table + speaker means + num_utts (ark/scp via kaldiio)."""
    out = Path(out_dir)
    write_vectors(out / "xvector.ark", out / "xvector.scp", xvectors)
    means, counts = speaker_means(xvectors, spk2utt)
    write_vectors(out / "spk_xvector.ark", out / "spk_xvector.scp", means)
    write_num_utts(out / "num_utts.ark", counts)
