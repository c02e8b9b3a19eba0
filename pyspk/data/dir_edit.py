"""Editing Kaldi data directories: subset, fix, combine and split (library of utils/).

Every output table is written atomically, sorted in C (byte) order, with spk2utt
regenerated from utt2spk; output directories are validated before returning.
Tables are those of :mod:`pyspk.data.kaldi_dir`: keyed by utterance (``UTT_TABLES``;
wav.scp is keyed by recording when a ``segments`` file exists), by speaker
(``SPK_TABLES``) or by recording (``RECO_TABLES``).
"""

from __future__ import annotations

import bisect
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pyspk.data.kaldi_dir import (
    RECO_TABLES, SPK_TABLES, UTT_TABLES, DataDirError, _read_lines, _where, read_table,
    read_trials, utt2spk_to_spk2utt, validate_data_dir, write_table, write_trials,
)

Tables = Dict[str, "OrderedDict[str, str]"]


def read_lines(path) -> List[Tuple[int, str]]:
    """(line number, line) for the non-blank lines of a UTF-8 text file (``-``: stdin)."""
    return _read_lines(Path("/dev/stdin" if str(path) == "-" else path))


def read_table_tolerant(path) -> Tuple["OrderedDict[str, str]", List[str]]:
    """Read a table in any order, keeping the first line of a repeated key and dropping
    lines without a value; returns the table and a note (``file:line: ...``) per dropped line."""
    table: "OrderedDict[str, str]" = OrderedDict()
    first: Dict[str, int] = {}
    notes = []
    for lineno, line in _read_lines(Path(path)):
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            notes.append(f"{_where(path, lineno)}: dropped line without a value: {line.strip()!r}")
        elif parts[0] in table:
            notes.append(f"{_where(path, lineno)}: dropped repeated key '{parts[0]}' (kept line {first[parts[0]]})")
        else:
            table[parts[0]] = parts[1].strip()
            first[parts[0]] = lineno
    return table, notes


def _reco_keyed(tables: Mapping[str, object]) -> Tuple[str, ...]:
    """Tables keyed by recording: wav.scp too when there is a segments file."""
    return RECO_TABLES + (("wav.scp",) if "segments" in tables else ())


def present_tables(src) -> List[str]:
    src = Path(src)
    return [n for n in UTT_TABLES + SPK_TABLES + RECO_TABLES if (src / n).is_file()]


def load_tables(src, tolerant: bool = False) -> Tuple[Tables, List[str]]:
    """Every known table of ``src``; strict reading unless ``tolerant`` (then with notes)."""
    tables: Tables = {}
    notes: List[str] = []
    for name in present_tables(src):
        if tolerant:
            tables[name], n = read_table_tolerant(Path(src) / name)
            notes += n
        else:
            tables[name] = read_table(Path(src) / name)
    if "utt2spk" not in tables:
        raise DataDirError(f"{Path(src) / 'utt2spk'}: file not found")
    return tables, notes


def write_subset(tables: Tables, out, utts: Iterable[str]) -> Dict[str, int]:
    """Write ``tables`` restricted to ``utts`` (and their speakers and recordings) to ``out``."""
    out = Path(out)
    keep = set(utts)
    utt2spk = OrderedDict((u, s) for u, s in tables["utt2spk"].items() if u in keep)
    if not utt2spk:
        raise DataDirError(f"{out}: no utterance left to write")
    speakers = set(utt2spk.values())
    recos = {tables["segments"][u].split()[0] for u in utt2spk} if "segments" in tables else set()
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        wanted = recos if name in _reco_keyed(tables) else speakers if name in SPK_TABLES else utt2spk
        write_table(out / name, OrderedDict((k, v) for k, v in table.items() if k in wanted))
    write_table(out / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    return {"utts": len(utt2spk), "speakers": len(speakers)}


def subset_trials(src, out, utts: Iterable[str], speakers: Iterable[str]) -> Dict[str, int]:
    """Copy each ``trials*`` file of ``src`` keeping trials whose ids are all kept."""
    known, enrol = set(utts), set(utts) | set(speakers)
    counts = {}
    for tf in sorted(Path(src).glob("trials*")):
        kept = [(t.enroll, t.test, t.target) for t in read_trials(tf) if t.enroll in enrol and t.test in known]
        if kept:
            write_trials(Path(out) / tf.name, kept)
        counts[tf.name] = len(kept)
    return counts


def subset_data_dir(src, out, utts: Sequence[str]) -> Dict[str, int]:
    """Copy the utterances ``utts`` of the (valid) data dir ``src`` into ``out``, with
    every table and the trials among them. Unknown utterances are an error."""
    validate_data_dir(src, check_files=False, need_wav=False)
    tables, _ = load_tables(src)
    unknown = [u for u in utts if u not in tables["utt2spk"]]
    if unknown:
        raise DataDirError(f"{Path(src) / 'utt2spk'}: no utterance '{unknown[0]}' ({len(unknown)} unknown)")
    counts = write_subset(tables, out, utts)
    kept = [u for u in tables["utt2spk"] if u in set(utts)]
    counts["trials"] = sum(subset_trials(src, out, kept, {tables["utt2spk"][u] for u in kept}).values())
    validate_data_dir(out, check_files=False, need_wav=False)
    return counts


def fix_data_dir(path) -> Tuple[Dict[str, int], List[str]]:
    """Kaldi's fix_data_dir: sort every table, drop repeated keys and lines without a
    value, keep only utterances present in every per-utterance table (and whose recording
    is in wav.scp when there are segments), regenerate spk2utt. The original tables are
    first copied to ``path/.backup/``. Returns counts and notes on what was dropped."""
    path = Path(path)
    tables, notes = load_tables(path, tolerant=True)
    backup = path / ".backup"
    backup.mkdir(exist_ok=True)
    for name in present_tables(path) + (["spk2utt"] if (path / "spk2utt").is_file() else []):
        shutil.copy2(path / name, backup / name)
    reco = _reco_keyed(tables)
    utt_tables = [n for n in tables if n not in reco and n not in SPK_TABLES]
    utts = []
    for u in tables["utt2spk"]:
        missing = [n for n in utt_tables if u not in tables[n]]
        if not missing and "segments" in tables and tables["segments"][u].split()[0] not in tables.get("wav.scp", {}):
            missing = ["wav.scp (its recording)"]
        if missing:
            notes.append(f"{path}: removed utterance '{u}': not in {', '.join(missing)}")
        else:
            utts.append(u)
    counts = write_subset(tables, path, utts)
    counts["removed"] = len(tables["utt2spk"]) - len(utts)
    validate_data_dir(path, check_files=False, need_wav=False, check_trials=False)
    try:
        validate_data_dir(path, check_files=False, need_wav=False)
    except DataDirError as e:
        notes.append(f"trials not changed, and no longer valid: {e}")
    return counts, notes


def combine_data(out, srcs: Sequence) -> Tuple[Dict[str, int], List[str]]:
    """Union of the data dirs ``srcs`` in ``out``. An utterance id in two of them is an
    error; speakers and recordings may be shared if their lines agree. A table missing
    from some source is left out (returned with the counts). Trials are not combined
    (they belong to one evaluation set)."""
    srcs = [Path(s) for s in srcs]
    if not srcs:
        raise DataDirError("combine_data: no source directory given")
    for s in srcs:
        validate_data_dir(s, check_files=False, need_wav=False)
    present = [set(present_tables(s)) for s in srcs]
    if len({"segments" in p for p in present}) > 1:
        raise DataDirError("combine_data: some sources have a segments file and some do not: "
                           + ", ".join(f"{s} ({'segments' if 'segments' in p else 'none'})" for s, p in zip(srcs, present)))
    names = [n for n in present_tables(srcs[0]) if all(n in p for p in present)]
    merged: Tables = {n: OrderedDict() for n in names}
    origin: Dict[Tuple[str, str], Path] = {}
    for s in srcs:
        for n in names:
            shared_ok = n in SPK_TABLES or n in _reco_keyed(merged)
            for k, v in read_table(s / n).items():
                if k in merged[n] and not (shared_ok and merged[n][k] == v):
                    what = "key" if shared_ok else "utterance id"
                    raise DataDirError(f"{s / n}: {what} '{k}' is also in {origin[(n, k)] / n}"
                                       + (f" with a different value" if shared_ok else ""))
                merged[n][k] = v
                origin.setdefault((n, k), s)
    counts = write_subset(merged, out, merged["utt2spk"])
    validate_data_dir(out, check_files=False, need_wav=False)
    return counts, sorted(set().union(*present) - set(names))


def split_lines(lines: Sequence[str], n: int, utt2spk: Optional[Mapping[str, str]] = None,
                name: str = "input") -> List[List[str]]:
    """Split scp lines into ``n`` contiguous parts of nearly equal size (order kept, so
    sorted input gives sorted parts). With ``utt2spk``, a speaker's utterances stay in
    one part (they must be consecutive in the input)."""
    units: List[List[str]] = []
    seen_spk: Dict[str, int] = {}
    for line in lines:
        if utt2spk is None:
            units.append([line])
            continue
        utt = line.split(None, 1)[0]
        if utt not in utt2spk:
            raise DataDirError(f"{name}: utterance '{utt}' is not in utt2spk")
        spk = utt2spk[utt]
        if spk in seen_spk and seen_spk[spk] != len(units) - 1:
            raise DataDirError(f"{name}: utterance '{utt}': utterances of speaker '{spk}' are not consecutive")
        if spk in seen_spk:
            units[-1].append(line)
        else:
            seen_spk[spk] = len(units)
            units.append([line])
    if not 1 <= n <= len(units):
        raise DataDirError(f"{name}: cannot split {len(units)} {'speakers' if utt2spk else 'lines'} into {n} parts")
    cum = [0]
    for u in units:
        cum.append(cum[-1] + len(u))
    parts, start = [], 0
    for j in range(n):
        lo, hi = start + 1, len(units) - (n - j - 1)   # leave a unit for every later part
        target = cum[-1] * (j + 1) / n
        end = min(max(bisect.bisect_left(cum, target), lo), hi)
        if end > lo and abs(cum[end - 1] - target) <= abs(cum[end] - target):
            end -= 1
        parts.append([ln for u in units[start:end] for ln in u])
        start = end
    return parts
