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

from pyspk.data.arkread import ArkError, ArkReader
from pyspk.data.kaldi_dir import _read_keyed, _where, check_table_entries
from pyspk.io import atomic_open, atomic_path


def write_vectors(ark_path, scp_path, vectors: Mapping[str, np.ndarray]) -> None:
    """Write sorted ``vectors`` to ark + scp atomically (ark renamed first, then scp).
    A key or an ark path with whitespace is refused (DataDirError) before anything is written."""
    ark_path, scp_path = Path(ark_path), Path(scp_path)
    check_table_entries(scp_path, vectors, [ark_path])
    buf = io.StringIO()
    items = OrderedDict((k, np.asarray(vectors[k], dtype=np.float32)) for k in sorted(vectors))
    with atomic_path(ark_path) as tmp:
        kaldiio.save_ark(str(tmp), items, scp=buf)
        tmp_name = str(tmp)
    lines = buf.getvalue().replace(tmp_name, str(ark_path))
    with atomic_open(scp_path) as f:
        f.write(lines)


def read_vectors(scp_path) -> "OrderedDict[str, np.ndarray]":
    """Read an scp of vectors into an ordered dict (file order).

    Errors name the scp line: a repeated key (DataDirError), an entry that cannot be read
    (ArkError: also the ark, the key and the byte offset), NaN or inf values."""
    scp_path = Path(scp_path)
    if not scp_path.is_file():
        raise FileNotFoundError(f"{scp_path} not found")
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    reader = ArkReader()
    try:
        for lineno, key, spec in _read_keyed(scp_path, check_sorted=False, allow_empty=True):
            try:
                vec = reader(spec, key)
            except ArkError as e:
                raise ArkError(f"{_where(scp_path, lineno)}: {e}") from None
            v = np.asarray(vec, dtype=np.float32).reshape(-1)
            if not np.isfinite(v).all():
                raise ValueError(f"{_where(scp_path, lineno)}: embedding of '{key}' contains NaN or inf")
            out[key] = v
    finally:
        reader.close()
    return out


def stack(table: Mapping[str, np.ndarray]) -> Tuple[List[str], np.ndarray]:
    keys = list(table)
    if not keys:
        return keys, np.zeros((0, 0), dtype=np.float32)
    return keys, np.stack([table[k] for k in keys]).astype(np.float32)


def speaker_means(
    xvectors: Mapping[str, np.ndarray], spk2utt: Mapping[str, Sequence[str]], where: str = "spk2utt"
) -> Tuple[Dict[str, np.ndarray], Dict[str, int]]:
    """Per-speaker mean x-vector and utterance count; an utterance without x-vector is an error."""
    means, counts = {}, {}
    for spk, utts in spk2utt.items():
        missing = [u for u in utts if u not in xvectors]
        if missing:
            raise KeyError(
                f"{where}: speaker '{spk}': utterance '{missing[0]}' has no x-vector ({len(missing)} missing)"
            )
        means[spk] = np.mean([xvectors[u] for u in utts], axis=0).astype(np.float32)
        counts[spk] = len(utts)
    return means, counts


def write_num_utts(path, counts: Mapping[str, int]) -> None:
    check_table_entries(path, counts)
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
