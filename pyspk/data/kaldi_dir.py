"""Kaldi data directories and trials files: read, write, validate.

A data directory holds plain-text tables keyed by the first field of each line:

    wav.scp     utt  path | command |
    utt2spk     utt  spk
    spk2utt     spk  utt1 utt2 ...
    feats.scp   utt  ark:offset           (written by the fbank stage)
    utt2num_frames, vad.scp, utt2lang, utt2orig, utt2genre, spk2gender   (optional)

Every table is sorted by key in C-locale (byte) order with no duplicate key, as
Kaldi requires. A trials file has lines ``enroll test target|nontarget``.
``segments`` lines are ``utt recording start end`` (seconds; end -1 = to the end of
the recording), checked by :func:`parse_segment` and :func:`segment_end`.

Errors are :class:`DataDirError` and name the file, the line and the problem.
Writers are atomic (see :mod:`pyspk.io`).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pyspk.io import atomic_open

# Tables that map a key to a single value (the rest of the line).
SCALAR_TABLES = (
    "wav.scp",
    "utt2spk",
    "feats.scp",
    "utt2num_frames",
    "utt2dur",
    "vad.scp",
    "utt2lang",
    "utt2orig",
    "utt2genre",
    "utt2gender",
    "spk2gender",
    "segments",
    "reco2dur",
    "text",
)
TRIAL_LABELS = ("target", "nontarget")
# Tables keyed by utterance (wav.scp too, unless a segments file maps utterances to
# recordings), by speaker, and by recording.
UTT_TABLES = (
    "utt2spk",
    "wav.scp",
    "segments",
    "feats.scp",
    "utt2num_frames",
    "utt2dur",
    "vad.scp",
    "utt2lang",
    "utt2orig",
    "utt2genre",
    "utt2gender",
    "text",
)
SPK_TABLES = ("spk2gender",)
RECO_TABLES = ("reco2dur",)


class DataDirError(ValueError):
    """A data directory or trials file is malformed. The message names file and line."""


def _where(path: Path, lineno: int) -> str:
    return f"{path}:{lineno}"


# Kaldi splits lines on ASCII space and tab only; Python's str.split() also splits on
# these (and a zero-width space or BOM is invisible), so an id holding one would be read
# as two fields here and as one by Kaldi. They are errors, named by code point.
_ODD_SPACE = {c for c in map(chr, range(0x3000 + 1)) if c.isspace() and c not in " \t\r\n"} | {
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
}


def odd_space(text: str) -> Optional[Tuple[int, str]]:
    """(column, 'U+00A0 NO-BREAK SPACE') of the first odd whitespace character, or None."""
    for i, c in enumerate(text):
        if c in _ODD_SPACE:
            return i + 1, f"U+{ord(c):04X} {unicodedata.name(c, 'control character')}"
    return None


def _read_lines(path: Path, free_text: bool = False) -> List[Tuple[int, str]]:
    """Return (line number, line) for non-empty lines; reject non-UTF-8 bytes, and odd
    whitespace (:func:`odd_space`) anywhere, or with ``free_text`` (transcripts) in the
    first field only."""
    path = Path(path)
    if not path.exists() or path.is_dir():  # not is_file(): /dev/stdin (a pipe) is fine
        raise DataDirError(f"{path}: file not found")
    raw = path.read_bytes()
    out = []
    for lineno, bline in enumerate(raw.split(b"\n"), start=1):
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataDirError(
                f"{_where(path, lineno)}: non-UTF-8 byte {bline[e.start : e.start + 1]!r} at column {e.start + 1}"
            ) from None
        line = line.rstrip("\r")
        odd = odd_space(line.split(" ", 1)[0].split("\t", 1)[0] if free_text else line)
        if odd:
            raise DataDirError(
                f"{_where(path, lineno)}: odd whitespace {odd[1]} at column {odd[0]} "
                f"(ids and fields are separated by ASCII space or tab only): {line.strip()!r}"
            )
        if line.strip():
            out.append((lineno, line))
    return out


def _check_order(path: Path, keys: Sequence[Tuple[int, str]]) -> None:
    """Keys must be strictly increasing in byte order (sorted, no duplicates)."""
    seen: Dict[str, int] = {}
    prev: Optional[Tuple[int, str]] = None
    for lineno, key in keys:
        if key in seen:
            raise DataDirError(f"{_where(path, lineno)}: duplicate key '{key}' (first on line {seen[key]})")
        seen[key] = lineno
        if prev is not None and key.encode() < prev[1].encode():
            raise DataDirError(
                f"{_where(path, lineno)}: keys not sorted: '{key}' comes after '{prev[1]}' (line {prev[0]}); "
                f"sort with LC_ALL=C sort or run utils/fix_data_dir"
            )
        prev = (lineno, key)


def _read_keyed(
    path, check_sorted: bool = True, allow_empty: bool = False, free_text: bool = False
) -> List[Tuple[int, str, str]]:
    """(line number, key, rest of line) for each line of a ``key value...`` table."""
    path = Path(path)
    lines = _read_lines(path, free_text)
    if not lines and not allow_empty:
        raise DataDirError(f"{_where(path, 1)}: file is empty")
    rows = []
    first: Dict[str, int] = {}
    for lineno, line in lines:
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            raise DataDirError(f"{_where(path, lineno)}: expected 'key value', got {line.strip()!r}")
        if not check_sorted and parts[0] in first:
            raise DataDirError(f"{_where(path, lineno)}: duplicate key '{parts[0]}' (first on line {first[parts[0]]})")
        first.setdefault(parts[0], lineno)
        rows.append((lineno, parts[0], parts[1].strip()))
    if check_sorted:
        _check_order(path, [(n, k) for n, k, _ in rows])
    return rows


def read_table(path, check_sorted: bool = True, allow_empty: bool = False) -> "OrderedDict[str, str]":
    """Read a ``key value...`` table into an ordered dict of key -> rest of line.

    ``check_sorted``: keys must be in C-locale order (else only duplicates are errors).
    """
    free_text = Path(path).name == "text"  # transcripts may hold any space in their words
    return OrderedDict((k, v) for _, k, v in _read_keyed(path, check_sorted, allow_empty, free_text))


def read_spk2utt(path, check_sorted: bool = True) -> "OrderedDict[str, List[str]]":
    return OrderedDict((k, v.split()) for k, v in read_table(path, check_sorted).items())


def _has_space(text: str) -> bool:
    return any(c.isspace() or c in _ODD_SPACE for c in text)


def check_table_entries(where, keys: Iterable[str] = (), paths: Iterable[object] = ()) -> None:
    """Refuse keys and paths that a Kaldi table cannot hold, before anything is written.

    A table line is split at whitespace: a key holding a space is read back as a shorter
    key (and the rest of it as part of the value), and an ``ark:offset`` path holding
    one is cut the same way by Kaldi. Keys must be non-empty and hold no whitespace
    (odd whitespace such as U+00A0 included, which :func:`read_table` refuses); paths
    written into an scp must hold none either. ``where`` names the table (or the file
    that would be written) in the :class:`DataDirError`. Paths may not hold ',' either: an
    ark is written through an ``ark,scp:ARK,SCP`` specifier, which splits at commas.
    """
    for k in keys:
        if not k or _has_space(k):
            raise DataDirError(
                f"{where}: key {k!r} is empty or contains whitespace; a Kaldi table splits "
                f"lines at whitespace, so it would not be read back as written (nothing was written)"
            )
    for p in paths:
        if _has_space(str(p)):
            raise DataDirError(
                f"{where}: path {str(p)!r} contains whitespace; a Kaldi scp splits lines at "
                f"whitespace, so its entries would not be read back (nothing was written)"
            )
        if "," in str(p):
            raise DataDirError(
                f"{where}: path {str(p)!r} contains ','; a Kaldi 'ark,scp:' specifier splits "
                f"at commas, so it would be written elsewhere (nothing was written)"
            )


def write_table(path, table: Mapping[str, object], sort: bool = True) -> None:
    """Write ``key value`` lines atomically. Values that are lists are space-joined.
    Keys are checked by :func:`check_table_entries`; nothing is written on a bad one."""
    keys = sorted(table, key=lambda k: k.encode()) if sort else list(table)
    lines = []
    for k in keys:
        v = table[k]
        if isinstance(v, (list, tuple)):
            v = " ".join(str(x) for x in v)
        v = str(v)
        check_table_entries(path, [k])
        if not v.strip() or "\n" in v or "\r" in v:
            raise DataDirError(f"{path}: value of key '{k}' is empty or spans lines: {v!r}")
        lines.append(f"{k} {v}\n")
    with atomic_open(path) as f:
        f.writelines(lines)


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> "OrderedDict[str, List[str]]":
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk, key=lambda k: k.encode()):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return OrderedDict((s, spk2utt[s]) for s in sorted(spk2utt, key=lambda k: k.encode()))


def spk2utt_to_utt2spk(spk2utt: Mapping[str, Sequence[str]]) -> "OrderedDict[str, str]":
    utt2spk = {u: s for s, utts in spk2utt.items() for u in utts}
    return OrderedDict((u, utt2spk[u]) for u in sorted(utt2spk, key=lambda k: k.encode()))


def wav_scp_path(value: str) -> Optional[str]:
    """The file an entry of wav.scp points at, or None for a ``command |`` pipe."""
    value = value.strip()
    if value.endswith("|"):
        return None
    return value


def pipe_input_files(value: str) -> List[str]:
    """Files named as arguments of a ``command |`` wav.scp entry that look like audio paths."""
    try:
        toks = shlex.split(value.rstrip("|"))
    except ValueError:
        return []
    exts = (".wav", ".flac", ".sph", ".m4a", ".mp3", ".ogg", ".WAV", ".FLAC")
    return [t for t in toks if t.endswith(exts) and not t.startswith("-")]


# Kaldi's extract-segments clips an end up to this far past the recording (its
# --max-overshoot); further is an error.
MAX_SEGMENT_OVERSHOOT_S = 0.5


def parse_segment(value: str, where: str) -> Tuple[str, float, float]:
    """``(recording, start, end)`` of a segments line's value (``recording start end``).

    Errors (a :class:`DataDirError` starting with ``where``, e.g. ``file:line``): not
    three fields after the utterance id, a time that is not a finite number, a negative
    start, an end before or at the start. ``end = -1`` (any spelling of it) means the end
    of the recording; any other negative end is an error. Checks that need the
    recording's length are :func:`segment_end`'s.
    """
    fields = value.split()
    if len(fields) != 3:
        raise DataDirError(
            f"{where}: expected 'utterance recording start end' (4 fields), got "
            f"{len(fields) + 1}: {value!r} after the utterance id"
        )
    rec, times = fields[0], []
    for name, tok in (("start", fields[1]), ("end", fields[2])):
        try:
            t = float(tok)
        except ValueError:
            raise DataDirError(f"{where}: {name} time {tok!r} is not a number") from None
        if not math.isfinite(t):
            raise DataDirError(f"{where}: {name} time {tok!r} is not a finite number")
        times.append(t)
    start, end = times
    if start < 0:
        raise DataDirError(f"{where}: negative start time {fields[1]}")
    if end < 0 and end != -1:
        raise DataDirError(
            f"{where}: negative end time {fields[2]} (only -1, meaning the end of the recording, is allowed)"
        )
    if end != -1 and end <= start:
        raise DataDirError(f"{where}: end time {fields[2]} is not after start time {fields[1]}")
    return rec, start, end


def segment_end(start: float, end: float, duration: float) -> float:
    """The end (seconds) of segment [start, end) of a recording of ``duration`` seconds.

    ``end = -1``: the recording's end. An end past the recording by at most
    :data:`MAX_SEGMENT_OVERSHOOT_S` is clipped to it, as Kaldi's extract-segments does;
    further, or a start at or past the end of the recording, raises ValueError (the
    reason; the caller names file, line and recording).
    """
    if start >= duration:
        raise ValueError(f"start {start:g} s is at or past the end of the recording ({duration:g} s)")
    if end == -1:
        return duration
    if end > duration + MAX_SEGMENT_OVERSHOOT_S:
        raise ValueError(
            f"end {end:g} s is {end - duration:g} s past the end of the recording ({duration:g} s); "
            f"up to {MAX_SEGMENT_OVERSHOOT_S:g} s past is clipped, as Kaldi does"
        )
    return min(end, duration)


@dataclass
class Trial:
    enroll: str
    test: str
    target: bool


def read_trials(
    path, known_enroll: Optional[Iterable[str]] = None, known_test: Optional[Iterable[str]] = None
) -> List[Trial]:
    """Read ``enroll test target|nontarget`` lines.

    ``known_enroll``/``known_test``: when given, an id outside them is an error naming
    the line (e.g. utterances of the data dir, or speakers for multi-utterance enrolment).
    """
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        raise DataDirError(f"{_where(path, 1)}: trials file is empty")
    ke = set(known_enroll) if known_enroll is not None else None
    kt = set(known_test) if known_test is not None else None
    trials = []
    seen: Dict[Tuple[str, str], int] = {}
    for lineno, line in lines:
        parts = line.split()
        if len(parts) != 3 or parts[2] not in TRIAL_LABELS:
            raise DataDirError(f"{_where(path, lineno)}: expected 'enroll test target|nontarget', got {line.strip()!r}")
        e, t, lab = parts
        if ke is not None and e not in ke:
            raise DataDirError(f"{_where(path, lineno)}: unknown enrolment id '{e}'")
        if kt is not None and t not in kt:
            raise DataDirError(f"{_where(path, lineno)}: unknown test id '{t}'")
        if (e, t) in seen:
            raise DataDirError(f"{_where(path, lineno)}: duplicate trial '{e} {t}' (first on line {seen[(e, t)]})")
        seen[(e, t)] = lineno
        trials.append(Trial(e, t, lab == "target"))
    return trials


def write_trials(path, trials: Iterable[Tuple[str, str, bool]]) -> None:
    """Write ``enroll test target|nontarget`` lines atomically; an id that a table cannot
    hold (:func:`check_table_entries`) leaves ``path`` as it was."""
    with atomic_open(path) as f:
        for e, t, tgt in trials:
            check_table_entries(path, (e, t))
            f.write(f"{e} {t} {'target' if tgt else 'nontarget'}\n")


@dataclass
class DataDir:
    """An in-memory data directory. Tables are ordered dicts keyed by utterance/speaker."""

    path: Optional[Path] = None
    wav_scp: "OrderedDict[str, str]" = field(default_factory=OrderedDict)
    utt2spk: "OrderedDict[str, str]" = field(default_factory=OrderedDict)
    extra: Dict[str, "OrderedDict[str, str]"] = field(default_factory=dict)

    @property
    def spk2utt(self) -> "OrderedDict[str, List[str]]":
        return utt2spk_to_spk2utt(self.utt2spk)

    @property
    def utts(self) -> List[str]:
        return list(self.utt2spk)

    @property
    def speakers(self) -> List[str]:
        return list(self.spk2utt)

    @classmethod
    def load(cls, path, validate: bool = True, check_files: bool = True) -> "DataDir":
        path = Path(path)
        if validate:
            validate_data_dir(path, check_files=check_files)
        d = cls(path=path)
        if (path / "wav.scp").exists():
            d.wav_scp = read_table(path / "wav.scp", check_sorted=validate)
        d.utt2spk = read_table(path / "utt2spk", check_sorted=validate)
        for name in SCALAR_TABLES:
            if name not in ("wav.scp", "utt2spk") and (path / name).exists():
                d.extra[name] = read_table(path / name, check_sorted=validate)
        return d

    def save(self, path=None) -> Path:
        path = Path(path or self.path)
        path.mkdir(parents=True, exist_ok=True)
        if self.wav_scp:
            write_table(path / "wav.scp", self.wav_scp)
        write_table(path / "utt2spk", self.utt2spk)
        write_table(path / "spk2utt", self.spk2utt)
        for name, table in self.extra.items():
            write_table(path / name, table)
        self.path = path
        return path


def _local_file(path: Path, fn: str) -> str:
    """A relative path from the current directory, as Kaldi takes it, else from the data dir."""
    if not os.path.isabs(fn) and not os.path.exists(fn):
        return str(path / fn)
    return fn


def _check_wav_files(path: Path, rows: List[Tuple[int, str, str]]) -> None:
    """Every file a wav.scp entry names (directly, or as an audio argument of a pipe) exists.

    Relative paths are taken from the current directory, as Kaldi does, then from the
    data directory.
    """
    wav_scp = path / "wav.scp"
    for lineno, key, value in rows:
        f = wav_scp_path(value)
        for fn in [f] if f is not None else pipe_input_files(value):
            fn = _local_file(path, fn)
            if not os.path.exists(fn):
                raise DataDirError(f"{_where(wav_scp, lineno)}: '{key}': audio file '{fn}' does not exist")


def _recording_seconds(path: Path, value: str) -> Optional[Tuple[float, str]]:
    """(duration in seconds, file) of a wav.scp entry that is a file soundfile reads from
    its header; None for a pipe or a file it cannot open (the fbank stage reports those)."""
    fn = wav_scp_path(value)
    if fn is None:
        return None
    fn = _local_file(path, fn)
    try:
        import soundfile as sf

        info = sf.info(fn)
    except Exception:
        return None
    return (info.frames / info.samplerate, fn) if info.samplerate > 0 else None


def _check_segments(
    path: Path,
    parsed: List[Tuple[int, str, Tuple[str, float, float]]],
    wav: Optional[List[Tuple[int, str, str]]],
    check_files: bool,
) -> None:
    """Every (parsed) segments line names a recording of wav.scp (when there is one) and,
    with ``check_files``, lies within that recording as far as its file's header tells
    (:func:`segment_end`)."""
    if wav is None:
        return
    seg_path = path / "segments"
    wav_values = {k: v for _, k, v in wav}
    seconds: Dict[str, Optional[Tuple[float, str]]] = {}
    for lineno, utt, (rec, start, end) in parsed:
        where = _where(seg_path, lineno)
        if rec not in wav_values:
            raise DataDirError(f"{where}: segment '{utt}': recording '{rec}' is not in {path / 'wav.scp'}")
        if not check_files:
            continue
        if rec not in seconds:
            seconds[rec] = _recording_seconds(path, wav_values[rec])
        if seconds[rec] is not None:
            try:
                segment_end(start, end, seconds[rec][0])
            except ValueError as e:
                raise DataDirError(f"{where}: segment '{utt}' of recording '{rec}' ({seconds[rec][1]}): {e}") from None


# ``path:offset`` entries of feats.scp/vad.scp; anything else (a pipe, a ``[range]``
# slice, a whole-file entry) is not checked against its ark here.
_ARK_OFFSET = re.compile(r"^(.+):(\d+)$")


def _check_ark_entries(path: Path, name: str, rows: List[Tuple[int, str, str]]) -> Dict[str, int]:
    """Every ``ark:offset`` entry of table ``name`` points at a binary Kaldi matrix or
    vector lying wholly inside its ark: the object's header is read (a few bytes, no data)
    and offset + header + data must not pass the end of the file. Returns {key: rows}."""
    from pyspk.data.arkread import EXTENT_BYTES, object_extent

    scp = path / name
    rows_of: Dict[str, int] = {}
    files: Dict[str, Tuple[int, int]] = {}
    try:
        for lineno, key, value in rows:
            m = _ARK_OFFSET.match(value)
            if not m or value.endswith("|"):
                continue
            where = f"{_where(scp, lineno)}: '{key}'"
            ark, off = _local_file(path, m.group(1)), int(m.group(2))
            if ark not in files:
                if not os.path.isfile(ark):
                    raise DataDirError(f"{where}: ark '{ark}' does not exist")
                fd = os.open(ark, os.O_RDONLY)
                files[ark] = (fd, os.fstat(fd).st_size)
            fd, size = files[ark]
            if off >= size:
                raise DataDirError(f"{where}: offset {off} is at or past the end of {ark} ({size} bytes)")
            ext = object_extent(os.pread(fd, EXTENT_BYTES, off))
            if isinstance(ext, str):
                raise DataDirError(f"{where}: {ark} at byte {off}: {ext}")
            kind, shape, nbytes = ext
            if off + nbytes > size:
                raise DataDirError(
                    f"{where}: {ark} at byte {off}: the {kind.strip()} object "
                    f"({' x '.join(map(str, shape))}) ends at byte {off + nbytes}, past the end of "
                    f"the file ({size} bytes): the ark is truncated"
                )
            rows_of[key] = shape[0]
    finally:
        for fd, _ in files.values():
            os.close(fd)
    return rows_of


def _check_spk2utt(path: Path, utt2spk: Mapping[str, str]) -> "OrderedDict[str, List[str]]":
    """spk2utt must be exactly what utt2spk implies (same speakers, same sorted lists)."""
    spk2utt_path = path / "spk2utt"
    expected = utt2spk_to_spk2utt(utt2spk)
    spk2utt: "OrderedDict[str, List[str]]" = OrderedDict()
    for lineno, spk, value in _read_keyed(spk2utt_path):
        utts = value.split()
        want = expected.get(spk)
        if want is None:
            raise DataDirError(f"{_where(spk2utt_path, lineno)}: speaker '{spk}' has no utterance in utt2spk")
        if utts != want:
            missing = sorted(set(want) - set(utts))
            extra = sorted(set(utts) - set(want))
            raise DataDirError(
                f"{_where(spk2utt_path, lineno)}: speaker '{spk}' disagrees with utt2spk "
                f"(missing {missing[:3]}, extra {extra[:3]}, or order differs); run utils/fix_data_dir"
            )
        spk2utt[spk] = utts
    if len(spk2utt) != len(expected):
        missing = [s for s in expected if s not in spk2utt]
        u = expected[missing[0]][0]
        raise DataDirError(
            f"{spk2utt_path}: speaker '{missing[0]}' of utt2spk (utterance '{u}') is missing here "
            f"({len(missing)} speaker(s) in all); run utils/fix_data_dir"
        )
    return spk2utt


def validate_data_dir(
    path,
    check_files: bool = True,
    need_wav: bool = True,
    need_feats: bool = False,
    check_trials: bool = True,
    check_arks: Optional[bool] = None,
) -> Dict[str, int]:
    """Validate a data directory; raise DataDirError naming file and line on the first problem.

    Checks: every table exists where required, is UTF-8, non-empty, sorted with unique
    keys; utt2spk and spk2utt agree; wav.scp (or segments, when present)/feats.scp/
    optional per-utterance tables cover exactly the utterances of utt2spk; every
    segments line is well formed (:func:`parse_segment`) and names a recording of
    wav.scp; wav.scp paths exist and segments lie within their recordings as the audio
    file headers tell (``check_files``); every ``trials*`` file names only known
    utterances (or speakers, for speaker-level enrolment; ``check_trials``); every
    ``ark:offset`` entry of feats.scp and vad.scp points at a whole binary matrix or
    vector inside its ark, and vad.scp has as many frames as feats.scp
    (``check_arks``, default: ``check_files``; only headers are read).
    Returns counts {"utts": .., "speakers": .., "trials": ..}.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataDirError(f"{path}: not a directory")
    utt2spk: "OrderedDict[str, str]" = OrderedDict()
    for lineno, utt, spk in _read_keyed(path / "utt2spk"):
        if len(spk.split()) != 1:
            raise DataDirError(
                f"{_where(path / 'utt2spk', lineno)}: utterance '{utt}' has "
                f"{len(spk.split())} speaker fields, expected 1"
            )
        utt2spk[utt] = spk
    spk2utt = _check_spk2utt(path, utt2spk)

    def _cover(
        name: str, required: bool, keys: Mapping[str, object], complete: bool = True
    ) -> Optional[List[Tuple[int, str, str]]]:
        p = path / name
        if not p.exists():
            if required:
                raise DataDirError(f"{p}: file not found")
            return None
        rows = _read_keyed(p)
        for lineno, key, _ in rows:
            if key not in keys:
                raise DataDirError(
                    f"{_where(p, lineno)}: '{key}' is not in {'utt2spk' if keys is utt2spk else 'segments'}"
                )
        if complete and len(rows) != len(keys):
            present = {k for _, k, _ in rows}
            missing = [u for u in keys if u not in present]
            raise DataDirError(f"{p}: no entry for {len(missing)} key(s), e.g. '{missing[0]}'; run utils/fix_data_dir")
        return rows

    segments = _cover("segments", False, utt2spk)
    parsed = [
        (lineno, utt, parse_segment(value, f"{_where(path / 'segments', lineno)}: segment '{utt}'"))
        for lineno, utt, value in segments or ()
    ]
    recordings = OrderedDict((seg[0], True) for _, _, seg in parsed) if segments else utt2spk
    # with segments, a recording missing from wav.scp is named at its segments line below
    wav = _cover("wav.scp", need_wav, recordings, complete=not segments)
    if wav is not None and check_files:
        _check_wav_files(path, wav)
    if segments:
        _check_segments(path, parsed, wav, check_files)
    feats = _cover("feats.scp", need_feats, utt2spk)
    vad = _cover("vad.scp", False, utt2spk)
    for name in ("utt2num_frames", "utt2lang", "utt2orig", "utt2genre", "utt2dur"):
        _cover(name, False, utt2spk)
    if check_files if check_arks is None else check_arks:
        feat_rows = _check_ark_entries(path, "feats.scp", feats) if feats else {}
        if vad:
            vad_frames = _check_ark_entries(path, "vad.scp", vad)
            for lineno, utt, _ in vad:
                if utt in vad_frames and utt in feat_rows and vad_frames[utt] != feat_rows[utt]:
                    raise DataDirError(
                        f"{_where(path / 'vad.scp', lineno)}: '{utt}' has {vad_frames[utt]} VAD "
                        f"frames, feats.scp's matrix has {feat_rows[utt]} frames"
                    )
    if (path / "text").exists():  # transcripts: UTF-8, keys of utt2spk (odd spaces allowed in the words)
        for lineno, key, _ in _read_keyed(path / "text", free_text=True):
            if key not in utt2spk:
                raise DataDirError(f"{_where(path / 'text', lineno)}: '{key}' is not in utt2spk")
    n_trials = 0
    known = set(utt2spk)
    for tf in sorted(path.glob("trials*")) if check_trials else []:
        if tf.is_file():
            n_trials += len(read_trials(tf, known_enroll=known | set(spk2utt), known_test=known))
    return {"utts": len(utt2spk), "speakers": len(spk2utt), "trials": n_trials}
