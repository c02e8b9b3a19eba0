#!/usr/bin/env python3
"""CN-Celeb1 (+ CN-Celeb2) -> Kaldi data dirs TRAIN_DIR and EVAL_DIR.

Layout (ROOT holds ``CN-Celeb_flac`` and optionally ``CN-Celeb2_flac``; ``_wav`` copies or
ROOT being CN-Celeb_flac itself also work)::

    CN-Celeb_flac/data/<spk>/<genre>-<session>-<n>.flac
    CN-Celeb_flac/dev/dev.lst                       the 800 training speakers
    CN-Celeb_flac/eval/enroll/<spk>-enroll.flac     one concatenated enrolment file per speaker
    CN-Celeb_flac/eval/test/<spk>-<genre>-<session>-<n>.flac
    CN-Celeb_flac/eval/lists/trials.lst   ``id00800-enroll test/id00800-singing-01-001.wav 1|0``
    CN-Celeb_flac/eval/lists/enroll.lst   ``id00800-enroll enroll/id00800-enroll.wav``
    CN-Celeb_flac/eval/lists/enroll.map   ``id00800-enroll id00800/singing-01-001.wav ...``
    CN-Celeb_flac/eval/lists/test.lst     ``test/id00800-singing-01-001.wav`` (optional)
    CN-Celeb2_flac/data/<spk>/...  +  CN-Celeb2_flac/spk.lst   extra training speakers

The lists name ``.wav`` files; the flac release is matched by stem.

TRAIN_DIR: CN-Celeb1 dev speakers, plus CN-Celeb2 when present; utterance ids
``<spk>-<genre>-<session>-<n>``; ``utt2genre``. ``--min-duration SEC`` merges consecutive
segments of one speaker and one genre until each merged utterance lasts at least SEC
(a short tail joins the previous group). A merged utterance ``<spk>-<genre>-merged<k>``
is a ``sox A B ... -t wav - |`` pipe when sox is installed, otherwise a FLAC file that
Python concatenates once under ``TRAIN_DIR.merged_audio/`` (kept across reruns).

EVAL_DIR, with ``utt2genre``, has two enrolment modes, both scored by stage 6:
- ``trials``: the official one; enrolment id ``id00800-enroll`` is the utterance of the
  concatenated file (speaker ``id00800``);
- ``trials_avg``: the same trials with enrolment id ``enroll-id00800``, a *speaker* whose
  utterances are the ``enroll.map`` segments (ids ``enroll-id00800-<genre>-<session>-<n>``),
  so the enrolment embedding is the average of their embeddings (spk_xvector).
Test utterance ids are the file stems ``id00800-singing-01-001``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from cnceleb_merge import merge_short_segments
from corpus_common import (
    CorpusError,
    convert_trials,
    count_labels,
    read_list,
    report_missing,
    require_file,
    resolve_audio,
    run_main,
    write_data_dir,
)

log = logging.getLogger("local.cnceleb")


def find_release(root: Path, names, marker: str) -> Optional[Path]:
    for cand in [root / n for n in names] + [root]:
        if (cand / marker).is_file():
            return cand
    return None


def speaker_files(data: Path, spk: str) -> List[Path]:
    d = data / spk
    if not d.is_dir():
        return []
    return sorted(p for p in d.rglob("*") if p.suffix.lower() in (".flac", ".wav") and p.is_file())


def prepare_train(releases, skip_missing: bool):
    """(wav_scp, utt2spk, utt2genre) of the training speakers of each (list, data dir) release."""
    wav_scp, utt2spk, utt2genre = {}, {}, {}
    for lst, data in releases:
        speakers = [f[0] for _, f in read_list(lst)]
        missing = {}
        for lineno, spk in enumerate(speakers, 1):
            files = speaker_files(data, spk)
            if not files:
                missing[spk] = (f"{data / spk}/*.flac", lineno, 1)
            for f in files:
                stem = str(f.relative_to(data / spk).with_suffix("")).replace("/", "-")
                u = f"{spk}-{stem}"
                if u in utt2spk:
                    raise CorpusError(f"utterance id '{u}' twice ({wav_scp[u]} and {f})")
                wav_scp[u], utt2spk[u], utt2genre[u] = str(f.resolve()), spk, stem.split("-")[0]
        report_missing(missing, f"{lst} (speakers with no audio)", skip_missing, len(speakers), len(missing))
        log.info("%s: %d speakers, %d utterances so far", lst, len(speakers) - len(missing), len(utt2spk))
    return wav_scp, utt2spk, utt2genre


def prepare_eval(cn1: Path, skip_missing: bool):
    """(wav_scp, utt2spk, utt2genre, {'trials': .., 'trials_avg': ..}) of CN-Celeb1 eval."""
    lists, ev = cn1 / "eval" / "lists", cn1 / "eval"
    trials_lst = require_file([lists / "trials.lst"], "CN-Celeb1 trial list")
    enroll_lst = require_file([lists / "enroll.lst"], "CN-Celeb1 enrolment list")
    enroll_files = {f[0]: f[1] for _, f in read_list(enroll_lst, 2)}
    wav_scp, utt2spk, utt2genre = {}, {}, {}

    def add_test(key: str) -> Tuple[Optional[str], str]:
        path = resolve_audio(ev / key)
        if path is None:
            return None, str(ev / key)
        u = Path(key).stem
        wav_scp[u], utt2spk[u] = str(path.resolve()), u.split("-")[0]
        utt2genre[u] = u.split("-")[1] if "-" in u else "unknown"
        return u, str(path)

    def add_enroll(eid: str) -> Tuple[Optional[str], str]:
        if eid in wav_scp:
            return eid, wav_scp[eid]
        if eid not in enroll_files:
            return None, f"an entry '{eid}' in {enroll_lst}"
        path = resolve_audio(ev / enroll_files[eid])
        if path is None:
            return None, str(ev / enroll_files[eid])
        wav_scp[eid], utt2spk[eid], utt2genre[eid] = str(path.resolve()), eid.replace("-enroll", ""), "unknown"
        return eid, str(path)

    lines = []  # streamed: the official list has 3.5 million lines
    with open(trials_lst, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            f = line.split()
            if not f:
                continue
            if len(f) != 3 or f[2] not in ("0", "1"):
                raise CorpusError(
                    f"{trials_lst}:{lineno}: expected '<spk>-enroll test/<file>.wav 1|0', got {line.strip()!r}"
                )
            lines.append((lineno, f[0], f[1], f[2] == "1"))
    # trials.lst: the enrolment column holds ids (id00800-enroll), the test column paths (test/...).
    trials = convert_trials(lines, lambda k: add_test(k) if "/" in k else add_enroll(k), str(trials_lst), skip_missing)
    test_lst = lists / "test.lst"
    if test_lst.is_file():
        tl = read_list(test_lst)
        miss = {f[0]: (str(ev / f[0]), n, 1) for n, f in tl if add_test(f[0])[0] is None}
        report_missing(miss, str(test_lst), skip_missing, len(tl), len(miss))
    out = {"trials": trials}
    avg = enroll_by_average(cn1, lists / "enroll.map", skip_missing, wav_scp, utt2spk, utt2genre)
    if avg:
        out["trials_avg"] = [(avg[e], t, lab) for e, t, lab in trials if e in avg]
        if len(out["trials_avg"]) < len(trials):
            log.warning(
                "trials_avg: %d trial(s) dropped (enrolment without enroll.map audio)",
                len(trials) - len(out["trials_avg"]),
            )
    for n, tr in out.items():
        log.info("%s: %d target + %d non-target trials", n, *count_labels(tr))
    return wav_scp, utt2spk, utt2genre, out


def enroll_by_average(cn1: Path, enroll_map: Path, skip_missing: bool, wav_scp, utt2spk, utt2genre) -> Dict[str, str]:
    """Add the enroll.map segments as speaker ``enroll-<spk>``; return enroll id -> that speaker.

    Also sets the genre of each concatenated enrolment utterance (one genre, or 'mixed').
    """
    if not enroll_map.is_file():
        log.warning("%s not found: no trials_avg (enrolment by averaging embeddings)", enroll_map)
        return {}
    data, mapping, missing = cn1 / "data", {}, {}
    rows = read_list(enroll_map, 2)
    for lineno, (eid, *segs) in rows:
        spk = "enroll-" + eid.replace("-enroll", "")
        genres = set()
        for seg in segs:
            path = resolve_audio(data / seg)
            if path is None:
                first = missing.get(seg, (str(data / seg), lineno, 0))
                missing[seg] = (first[0], first[1], first[2] + 1)
                continue
            stem = str(Path(seg).with_suffix("")).split("/", 1)[-1].replace("/", "-")
            u = f"{spk}-{stem}"
            wav_scp[u], utt2spk[u], utt2genre[u] = str(path.resolve()), spk, stem.split("-")[0]
            genres.add(stem.split("-")[0])
            mapping[eid] = spk
        if eid in utt2genre and genres:
            utt2genre[eid] = genres.pop() if len(genres) == 1 else "mixed"
    report_missing(missing, str(enroll_map), skip_missing, sum(len(s) for _, (_, *s) in rows), len(missing))
    return mapping


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path, help="folder holding CN-Celeb_flac (and CN-Celeb2_flac)")
    p.add_argument("--cnceleb2-root", type=Path, help="CN-Celeb2 folder when it is not under --root")
    p.add_argument("--train-dir", required=True, type=Path)
    p.add_argument("--eval-dir", required=True, type=Path)
    p.add_argument("--no-cnceleb2", action="store_true", help="train on CN-Celeb1 dev only")
    p.add_argument(
        "--min-duration",
        type=float,
        default=0.0,
        help="merge short same-speaker same-genre training segments to at least this many seconds",
    )
    p.add_argument("--skip-missing", action="store_true", help="drop trials/speakers whose audio is absent")
    a = p.parse_args(argv)
    cn1 = find_release(a.root, ("CN-Celeb_flac", "CN-Celeb_wav", "CN-Celeb"), "dev/dev.lst")
    if cn1 is None:
        raise CorpusError(
            f"CN-Celeb1 dev/dev.lst not found; looked for {a.root}/CN-Celeb_flac/dev/dev.lst, "
            f"{a.root}/CN-Celeb_wav/dev/dev.lst, {a.root}/CN-Celeb/dev/dev.lst and {a.root}/dev/dev.lst"
        )
    releases = [(cn1 / "dev" / "dev.lst", cn1 / "data")]
    cn2 = (
        None
        if a.no_cnceleb2
        else find_release(a.cnceleb2_root or a.root, ("CN-Celeb2_flac", "CN-Celeb2_wav", "CN-Celeb2"), "spk.lst")
    )
    if a.cnceleb2_root and cn2 is None and not a.no_cnceleb2:
        raise CorpusError(f"--cnceleb2-root {a.cnceleb2_root}: spk.lst not found there or in its CN-Celeb2_flac/")
    if cn2 is not None:
        releases.append((cn2 / "spk.lst", cn2 / "data"))
    log.info("training data: %s", ", ".join(str(r[0]) for r in releases))
    wav_scp, utt2spk, utt2genre = prepare_train(releases, a.skip_missing)
    if a.min_duration > 0:
        wav_scp, utt2spk, utt2genre = merge_short_segments(
            wav_scp, utt2spk, utt2genre, a.min_duration, a.train_dir.with_name(a.train_dir.name + ".merged_audio")
        )
    ev = prepare_eval(cn1, a.skip_missing)
    write_data_dir(a.train_dir, wav_scp, utt2spk, {"utt2genre": utt2genre})
    write_data_dir(a.eval_dir, ev[0], ev[1], {"utt2genre": ev[2]}, ev[3])
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
