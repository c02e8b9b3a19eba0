"""Combine data directories (Kaldi ``utils/combine_data.sh``) with ``utt2orig``.

The combined directory holds the union of utt2spk, feats.scp, utt2num_frames,
utt2orig (clean utterances map to themselves), and vad.scp / utt2lang when every
part has them; wav.scp (a recording shared by several parts, with segments, once)
and segments, plus aug.scp (the copies' recipes, so that
``pyspk fbank`` on the combined directory reproduces its features); spk2utt is rebuilt. Duplicate utterance ids are an error.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, List

from pyspk.data.kaldi_dir import DataDirError, read_table, utt2spk_to_spk2utt, validate_data_dir, write_table

TABLES = ("utt2spk", "feats.scp", "utt2num_frames", "utt2orig", "vad.scp", "utt2lang", "wav.scp", "segments",
          "aug.scp")
REQUIRED = ("utt2spk", "feats.scp", "utt2num_frames")


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
