"""Shared pieces of the corpus preparation scripts in local/.

- :class:`CorpusError`: a corpus root lacks something; the message names what is
  missing and every place it was looked for.
- :func:`resolve_audio`: a listed audio path, accepting the other usual extension
  (official lists name ``.wav`` where a release ships ``.flac``, speechocean762 ``.WAV``).
- :func:`make_trials`: seeded trial generation (all target pairs, a seeded uniform
  sample of distinct non-target pairs).
- :func:`convert_trials`: official trial lines -> Kaldi trials, with every line that
  references absent audio reported in one list (or dropped with ``skip_missing``).
- :func:`write_data_dir`: a validated Kaldi data dir, replaced as a whole (built in a
  temporary sibling, validated with ``pyspk.data.kaldi_dir.validate_data_dir``, then
  renamed), keeping an existing ``trials`` file when asked ("written once and kept").
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pyspk.data.kaldi_dir import DataDirError, utt2spk_to_spk2utt, validate_data_dir, write_table, write_trials

log = logging.getLogger("local.corpus")

AUDIO_EXTS = (".flac", ".wav", ".WAV", ".FLAC")
Trial = Tuple[str, str, bool]


class CorpusError(RuntimeError):
    """A corpus root or list is missing something; the message names what and where."""


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def run_main(main_fn: Callable[[], int]) -> int:
    """Run a script's main, turning corpus/data-dir errors into one clear line and exit 1."""
    setup_logging()
    try:
        return main_fn()
    except (CorpusError, DataDirError) as e:
        log.error("%s", e)
        return 1


def bkey(s: str) -> bytes:
    """C-locale sort key (Kaldi order)."""
    return s.encode()


def require_file(candidates: Sequence[Path], what: str) -> Path:
    """The first existing path of ``candidates``; CorpusError naming all of them otherwise."""
    for c in candidates:
        if Path(c).is_file():
            return Path(c)
    looked = "\n  ".join(str(c) for c in candidates)
    raise CorpusError(f"{what} not found; looked for:\n  {looked}")


def resolve_audio(path: Path) -> Optional[Path]:
    """``path`` if it exists, else the same stem with another audio extension, else None."""
    path = Path(path)
    if path.is_file():
        return path
    if path.suffix in AUDIO_EXTS:
        for ext in AUDIO_EXTS:
            alt = path.with_suffix(ext)
            if alt.is_file():
                return alt
    return None


def read_list(path: Path, min_fields: int = 1) -> List[Tuple[int, List[str]]]:
    """Non-empty lines of a list file split on whitespace, as (line number, fields)."""
    path = Path(path)
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < min_fields:
                raise CorpusError(f"{path}:{lineno}: expected at least {min_fields} fields, got {line.strip()!r}")
            out.append((lineno, fields))
    return out


def make_trials(
    utt2spk: Mapping[str, str], seed: int, nontarget_ratio: float = 1.0, max_target: Optional[int] = None
) -> List[Trial]:
    """Seeded verification trials from a set of labelled utterances.

    Targets: every unordered pair of two utterances of one speaker (a seeded sample
    of ``max_target`` of them when there are more). Non-targets: ``round(ratio *
    n_target)`` distinct unordered pairs of utterances of different speakers, drawn
    uniformly (rejection sampling; all of them when fewer exist). Each pair is written
    ``a b`` with ``a < b`` in byte order; the list is sorted. Same seed -> same list.
    """
    utts = sorted(utt2spk, key=bkey)
    index = {u: i for i, u in enumerate(utts)}
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    spk_id = {s: i for i, s in enumerate(spk2utt)}
    spk_idx = [spk_id[utt2spk[u]] for u in utts]
    rng = np.random.default_rng(seed)
    targets: List[Tuple[int, int]] = []
    for members in spk2utt.values():
        ids = [index[u] for u in members]
        targets.extend((a, b) for k, a in enumerate(ids) for b in ids[k + 1 :])
    n_same = len(targets)
    if max_target is not None and len(targets) > max_target:
        keep = np.sort(rng.choice(len(targets), size=max_target, replace=False))
        targets = [targets[i] for i in keep]
    n = len(utts)
    total_non = n * (n - 1) // 2 - n_same
    want = min(int(round(nontarget_ratio * len(targets))), total_non)
    nontargets: List[Tuple[int, int]]
    if want > total_non // 2:
        allpairs = [(a, b) for a in range(n) for b in range(a + 1, n) if spk_idx[a] != spk_idx[b]]
        pick = np.sort(rng.choice(len(allpairs), size=want, replace=False))
        nontargets = [allpairs[i] for i in pick]
    else:
        chosen: Dict[Tuple[int, int], None] = {}
        while len(chosen) < want:
            a = rng.integers(0, n, size=2 * (want - len(chosen)) + 16)
            b = rng.integers(0, n, size=a.shape[0])
            for x, y in zip(a.tolist(), b.tolist()):
                if spk_idx[x] != spk_idx[y]:
                    chosen.setdefault((min(x, y), max(x, y)))
                    if len(chosen) == want:
                        break
        nontargets = list(chosen)
    trials = [(utts[a], utts[b], True) for a, b in targets] + [(utts[a], utts[b], False) for a, b in nontargets]
    trials.sort(key=lambda t: (bkey(t[0]), bkey(t[1])))
    return trials


def subset_trials(trials: Iterable[Trial], keep: Callable[[str, str], bool]) -> List[Trial]:
    return [t for t in trials if keep(t[0], t[1])]


def report_missing(
    missing: Mapping[str, Tuple[str, int, int]], source: str, skip: bool, n_lines: int, n_dropped: int
) -> None:
    """One list of absent audio: key -> (looked-for path, first line, number of lines).

    Raises CorpusError unless ``skip``; with ``skip`` logs the count of dropped lines.
    """
    if not missing:
        return
    rows = [
        f"  {k} (looked for {p}; first on line {ln}, {cnt} line(s))"
        for k, (p, ln, cnt) in sorted(missing.items(), key=lambda kv: kv[1][1])
    ]
    shown = rows[:200] + ([f"  ... and {len(rows) - 200} more"] if len(rows) > 200 else [])
    head = f"{source}: {n_dropped} of {n_lines} line(s) reference {len(missing)} absent audio file(s):\n"
    if not skip:
        raise CorpusError(head + "\n".join(shown) + "\nrerun with --skip-missing to drop these lines")
    log.warning("%s%s\n--skip-missing: dropped %d of %d line(s)", head, "\n".join(shown), n_dropped, n_lines)


def convert_trials(
    lines: Sequence[Tuple[int, str, str, bool]],
    resolve: Callable[[str], Tuple[Optional[str], str]],
    source: str,
    skip_missing: bool,
) -> List[Trial]:
    """Map official trial lines (lineno, enroll key, test key, target) to utterance ids.

    ``resolve(key) -> (utt_id or None, looked-for path)``. Lines naming absent audio are
    listed together (CorpusError) or, with ``skip_missing``, dropped with a count.
    """
    out: List[Trial] = []
    missing: Dict[str, Tuple[str, int, int]] = {}
    seen: Dict[Tuple[str, str], int] = {}
    dropped = 0
    cache: Dict[str, Tuple[Optional[str], str]] = {}  # millions of lines name a few thousand files

    def lookup(key: str) -> Tuple[Optional[str], str]:
        if key not in cache:
            cache[key] = resolve(key)
        return cache[key]

    for lineno, e, t, target in lines:
        ue, pe = lookup(e)
        ut, pt = lookup(t)
        if ue is None or ut is None:
            dropped += 1
            for key, u, p in ((e, ue, pe), (t, ut, pt)):
                if u is None:
                    first = missing.get(key, (p, lineno, 0))
                    missing[key] = (p, first[1], first[2] + 1)
            continue
        if (ue, ut) in seen:
            raise CorpusError(f"{source}:{lineno}: duplicate trial '{e} {t}' (first on line {seen[(ue, ut)]})")
        seen[(ue, ut)] = lineno
        out.append((ue, ut, target))
    report_missing(missing, source, skip_missing, len(lines), dropped)
    if not out:
        raise CorpusError(f"{source}: no usable trial line")
    return out


def split_speakers(
    speakers: Iterable[str], n_test: int, seed: int, strata: Optional[Mapping[str, str]] = None
) -> Tuple[List[str], List[str]]:
    """Seeded split into (train, test) speakers; ``n_test`` drawn round-robin over strata
    (e.g. gender) so each stratum keeps its share. Both lists are sorted."""
    speakers = sorted(set(speakers), key=bkey)
    if not 0 < n_test < len(speakers):
        raise CorpusError(f"cannot hold out {n_test} of {len(speakers)} speakers (need 0 < n < {len(speakers)})")
    rng = np.random.default_rng(seed)
    groups: Dict[str, List[str]] = {}
    for s in speakers:
        groups.setdefault((strata or {}).get(s, ""), []).append(s)
    queues = [list(rng.permutation(groups[g])) for g in sorted(groups)]
    test: List[str] = []
    while len(test) < n_test:
        for q in queues:
            if q and len(test) < n_test:
                test.append(str(q.pop(0)))
    test_set = set(test)
    return [s for s in speakers if s not in test_set], sorted(test, key=bkey)


def write_data_dir(
    out_dir,
    wav_scp: Mapping[str, str],
    utt2spk: Mapping[str, str],
    tables: Optional[Mapping[str, Mapping[str, str]]] = None,
    trials: Optional[Mapping[str, Sequence[Trial]]] = None,
    keep_trials: Sequence[str] = (),
    check_files: bool = True,
) -> Dict[str, int]:
    """Write and validate a Kaldi data dir; replace ``out_dir`` only once it validates.

    ``tables``: extra tables by file name (utt2genre, spk2gender, ...). ``trials``: trial
    lists by file name (``trials``, ``trials_vox1_o``...). Names in ``keep_trials`` whose
    file already exists in ``out_dir`` are copied over unchanged instead of rewritten;
    a kept file that no longer matches the utterances is an error asking to delete it.
    Everything else previously in ``out_dir`` (features, stamps) goes: it described
    the old audio list.
    """
    out_dir = Path(out_dir)
    if not utt2spk:
        raise CorpusError(f"{out_dir}: no utterance to write")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_table(tmp / "wav.scp", wav_scp)
        write_table(tmp / "utt2spk", utt2spk)
        write_table(tmp / "spk2utt", utt2spk_to_spk2utt(utt2spk))
        for name, table in (tables or {}).items():
            write_table(tmp / name, table)
        kept = []
        for name, lines in (trials or {}).items():
            if name in keep_trials and (out_dir / name).is_file():
                shutil.copy2(out_dir / name, tmp / name)
                kept.append(name)
            else:
                write_trials(tmp / name, lines)
        try:
            counts = validate_data_dir(tmp, check_files=check_files)
        except DataDirError as e:
            if kept:
                raise CorpusError(
                    f"{e}\n(kept trials file(s) {[str(out_dir / k) for k in kept]} no longer match "
                    f"this data; delete them to make new ones)"
                ) from None
            raise
        for name in kept:
            log.info("%s exists: kept as written before (delete it to make a new one)", out_dir / name)
        old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: %d utterances, %d speakers, %d trials", out_dir, counts["utts"], counts["speakers"], counts["trials"])
    return counts


def count_labels(trials: Sequence[Trial]) -> Tuple[int, int]:
    n_t = sum(1 for t in trials if t[2])
    return n_t, len(trials) - n_t
