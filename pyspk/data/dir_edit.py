"""Editing Kaldi data directories: subset, fix, combine and split (library of utils/).

Every output table is written atomically, sorted in C (byte) order, with spk2utt
regenerated from utt2spk. Nothing is written where it stays until the whole result has
been validated: the new tables are built in a temporary directory beside the output
(:func:`staged_dir`), validated there, and only then renamed over the originals, so an
edit that fails (a bad id, every utterance removed) leaves the directory, and its
backups, as they were. A repair in place never overwrites an earlier backup: the first
run keeps the originals in ``.backup/``, later ones write ``.backup.2/``, ``.backup.3/``...
Tables are those of :mod:`pyspk.data.kaldi_dir`: keyed by utterance (``UTT_TABLES``;
wav.scp is keyed by recording when a ``segments`` file exists), by speaker
(``SPK_TABLES``) or by recording (``RECO_TABLES``).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pyspk.data.kaldi_dir import (
    RECO_TABLES,
    SPK_TABLES,
    UTT_TABLES,
    DataDirError,
    _read_lines,
    _where,
    read_table,
    read_trials,
    utt2spk_to_spk2utt,
    validate_data_dir,
    write_table,
    write_trials,
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
    for lineno, line in _read_lines(Path(path), free_text=Path(path).name == "text"):
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


KNOWN_FILES = UTT_TABLES + SPK_TABLES + RECO_TABLES + ("spk2utt",)


@contextlib.contextmanager
def staged_dir(final, link_existing: bool):
    """Yield a temporary directory beside ``final`` to build a new version of it in.

    ``link_existing``: it starts with a symlink to each file of ``final`` (an edit in
    place: the untouched tables take part in the validation; writing a table through
    pyspk.io replaces the link, never its target). On an exception the temporary
    directory is removed and ``final`` is untouched; :func:`commit_staged` moves the
    result in."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        if link_existing and final.is_dir():
            for f in final.iterdir():
                if f.is_file() and not f.is_symlink():
                    os.symlink(f.resolve(), tmp / f.name)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def next_backup_dir(path) -> Path:
    """The first of ``path/.backup``, ``path/.backup.2``, ``path/.backup.3``... that does not
    exist: where a repair in place keeps the tables it replaces, never over an earlier backup."""
    path = Path(path)
    n = 1
    while True:
        cand = path / (".backup" if n == 1 else f".backup.{n}")
        if not os.path.lexists(cand):
            return cand
        n += 1


def commit_staged(tmp: Path, final: Path, drop_stale: bool = False, backup: Optional[Path] = None) -> None:
    """Rename every file written in ``tmp`` (not the links) over ``final``'s.

    ``drop_stale``: remove tables and trials of ``final`` that ``tmp`` does not have (a
    fresh output over an old one). ``backup``: first copy the originals about to be
    replaced into this new directory (built under a temporary name, then renamed, so it
    is complete or absent); an existing ``backup`` is never overwritten (DataDirError,
    before anything changes: see :func:`next_backup_dir`)."""
    final.mkdir(parents=True, exist_ok=True)
    new = [f for f in sorted(tmp.iterdir()) if f.is_file() and not f.is_symlink()]
    if backup is not None:
        if os.path.lexists(backup):
            raise DataDirError(f"{backup}: a backup is already there; not overwriting it, nothing was changed")
        bak = Path(tempfile.mkdtemp(prefix=".backup.", suffix=".tmp", dir=final))
        try:
            for f in new:
                if (final / f.name).is_file():
                    shutil.copy2(final / f.name, bak / f.name)
            os.rename(bak, backup)
        except BaseException:
            shutil.rmtree(bak, ignore_errors=True)
            raise
    if drop_stale:
        names = {f.name for f in new}
        for f in final.iterdir():
            if f.is_file() and f.name not in names and (f.name in KNOWN_FILES or f.name.startswith("trials")):
                f.unlink()
    for f in new:
        os.replace(f, final / f.name)


def subset_data_dir(src, out, utts: Sequence[str]) -> Dict[str, int]:
    """Copy the utterances ``utts`` of the (valid) data dir ``src`` into ``out``, with
    every table and the trials among them. Unknown utterances are an error; ``out`` is
    only written once the subset validates."""
    validate_data_dir(src, check_files=False, need_wav=False)
    tables, _ = load_tables(src)
    unknown = [u for u in utts if u not in tables["utt2spk"]]
    if unknown:
        raise DataDirError(f"{Path(src) / 'utt2spk'}: no utterance '{unknown[0]}' ({len(unknown)} unknown)")
    with staged_dir(out, link_existing=False) as tmp:
        counts = write_subset(tables, tmp, utts)
        kept = [u for u in tables["utt2spk"] if u in set(utts)]
        counts["trials"] = sum(subset_trials(src, tmp, kept, {tables["utt2spk"][u] for u in kept}).values())
        _validate_staged(tmp, out)
        commit_staged(tmp, Path(out), drop_stale=True)
    return counts


def _validate_staged(tmp: Path, final, **kw) -> Dict[str, int]:
    """Validate the staged directory, naming the final one in the message."""
    try:
        return validate_data_dir(tmp, check_files=False, need_wav=False, **kw)
    except DataDirError as e:
        raise DataDirError(
            f"{final}: the result would not be a valid data dir, nothing was changed: "
            + str(e).replace(str(tmp), str(final))
        ) from None


def fix_data_dir(path, backup: Optional[Path] = None) -> Tuple[Dict[str, int], List[str]]:
    """Kaldi's fix_data_dir: sort every table, drop repeated keys and lines without a
    value, keep only utterances present in every per-utterance table (and whose recording
    is in wav.scp when there are segments), regenerate spk2utt. The new tables are built
    and validated in a temporary directory first; only then are the tables about to be
    replaced copied to a new backup directory and replaced, so a run that fails changes
    nothing. The backup is ``backup`` or else :func:`next_backup_dir` (``.backup/`` on
    the first run, ``.backup.2/`` on the second...): a second run never overwrites the
    originals the first one kept. Returns counts and notes on what was dropped."""
    path = Path(path)
    tables, notes = load_tables(path, tolerant=True)
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
    with staged_dir(path, link_existing=True) as tmp:
        counts = write_subset(tables, tmp, utts)
        counts["removed"] = len(tables["utt2spk"]) - len(utts)
        _validate_staged(tmp, path, check_trials=False)
        try:
            validate_data_dir(tmp, check_files=False, need_wav=False)
        except DataDirError as e:
            notes.append(f"trials not changed, and no longer valid: {str(e).replace(str(tmp), str(path))}")
        backup = Path(backup) if backup is not None else next_backup_dir(path)
        commit_staged(tmp, path, backup=backup)
    return counts, notes


def combine_data(out, srcs: Sequence) -> Tuple[Dict[str, int], List[str]]:
    """Union of the data dirs ``srcs`` in ``out``. An utterance id in two of them is an
    error; speakers and recordings may be shared if their lines agree. A table missing
    from some source is left out (returned with the counts). Trials are not combined
    (they belong to one evaluation set). ``out`` is only written once the union validates."""
    srcs = [Path(s) for s in srcs]
    if not srcs:
        raise DataDirError("combine_data: no source directory given")
    for s in srcs:
        validate_data_dir(s, check_files=False, need_wav=False)
    present = [set(present_tables(s)) for s in srcs]
    if len({"segments" in p for p in present}) > 1:
        raise DataDirError(
            "combine_data: some sources have a segments file and some do not: "
            + ", ".join(f"{s} ({'segments' if 'segments' in p else 'none'})" for s, p in zip(srcs, present))
        )
    names = [n for n in present_tables(srcs[0]) if all(n in p for p in present)]
    merged: Tables = {n: OrderedDict() for n in names}
    origin: Dict[Tuple[str, str], Path] = {}
    for s in srcs:
        for n in names:
            shared_ok = n in SPK_TABLES or n in _reco_keyed(merged)
            for k, v in read_table(s / n).items():
                if k in merged[n] and not (shared_ok and merged[n][k] == v):
                    what = "key" if shared_ok else "utterance id"
                    raise DataDirError(
                        f"{s / n}: {what} '{k}' is also in {origin[(n, k)] / n}"
                        + (" with a different value" if shared_ok else "")
                    )
                merged[n][k] = v
                origin.setdefault((n, k), s)
    with staged_dir(out, link_existing=False) as tmp:
        counts = write_subset(merged, tmp, merged["utt2spk"])
        _validate_staged(tmp, out)
        commit_staged(tmp, Path(out), drop_stale=True)
    return counts, sorted(set().union(*present) - set(names))


def split_lines(
    lines: Sequence[str], n: int, utt2spk: Optional[Mapping[str, str]] = None, name: str = "input"
) -> List[List[str]]:
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
        lo, hi = start + 1, len(units) - (n - j - 1)  # leave a unit for every later part
        target = cum[-1] * (j + 1) / n
        end = min(max(bisect.bisect_left(cum, target), lo), hi)
        if end > lo and abs(cum[end - 1] - target) <= abs(cum[end] - target):
            end -= 1
        parts.append([ln for u in units[start:end] for ln in u])
        start = end
    return parts
