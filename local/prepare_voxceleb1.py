#!/usr/bin/env python3
"""VoxCeleb1 -> Kaldi data dirs: DEV_DIR (training) and TEST_DIR (with the trial lists).

Layout (ROOT = where vox1_dev_wav.zip and vox1_test_wav.zip were unpacked)::

    wav/<id>/<video>/<nnnnn>.wav             (also vox1_dev_wav/wav, vox1_test_wav/wav, dev/wav, test/wav)
    veri_test2.txt                           Vox1-O cleaned, 37,611 lines
    list_test_all2.txt, list_test_hard2.txt  Vox1-E / Vox1-H cleaned (optional)

(trial lists are looked for in ROOT, ROOT/meta, ROOT/lists and ROOT/trials).
Trial lines are ``1 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav``
(label 1 = same speaker, 0 = different) and become Kaldi trials
``enroll test target|nontarget`` in TEST_DIR/trials_vox1_o, trials_vox1_e, trials_vox1_h.

Utterance ids are ``spk-video-utt`` (``id10270-x6uYqmx31kE-00001``): Kaldi-safe (no
slash), unique (the speaker part has a fixed length and the utterance part is the last
5 digits; a YouTube video id may itself contain '-'), and they sort by speaker first,
as Kaldi requires of utt2spk/spk2utt. Speaker ids are the VoxCeleb ``idNNNNN``.

DEV_DIR holds every speaker found on disk that does not appear in the Vox1-O list
(1,211 speakers for the full corpus). TEST_DIR holds every utterance that the chosen
lists reference. Vox1-E/H are made of VoxCeleb1 dev speakers too, so they are only
meaningful with a model trained on other data (VoxCeleb2): choose them with
``--trial-lists o,e,h`` (missing E/H files are then skipped with a note), and use
``--test-only`` to skip DEV_DIR.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from corpus_common import CorpusError, convert_trials, count_labels, read_list, require_file, run_main, write_data_dir

log = logging.getLogger("local.voxceleb1")
WAV_SUBDIRS = ("wav", "vox1_dev_wav/wav", "vox1_test_wav/wav", "dev/wav", "test/wav")
LIST_SUBDIRS = (".", "meta", "lists", "trials")
TRIAL_LISTS = {"o": "veri_test2.txt", "e": "list_test_all2.txt", "h": "list_test_hard2.txt"}


def utt_id(rel: str) -> str:
    """``id10270/x6uYqmx31kE/00001.wav`` -> ``id10270-x6uYqmx31kE-00001``."""
    parts = rel.split("/")
    if len(parts) != 3:
        raise ValueError(f"expected <id>/<video>/<nnnnn>.<ext>, got {rel!r}")
    return f"{parts[0]}-{parts[1]}-{os.path.splitext(parts[2])[0]}"


def scan_tree(roots: Sequence[Path], ext: str) -> Dict[str, Path]:
    """Index ``<root>/<id>/<video>/<n><ext>`` files: 'id/video/n.wav'-style key -> path.

    Keys always use the ``.wav`` name of the official lists, whatever ``ext`` is on disk.
    The first root wins when two hold the same file.
    """
    index: Dict[str, Path] = {}
    for root in roots:
        with os.scandir(root) as spks:
            for spk in sorted((e for e in spks if e.is_dir()), key=lambda e: e.name):
                with os.scandir(spk.path) as vids:
                    for vid in sorted((e for e in vids if e.is_dir()), key=lambda e: e.name):
                        with os.scandir(vid.path) as files:
                            for f in files:
                                if f.name.endswith(ext) and f.is_file():
                                    key = f"{spk.name}/{vid.name}/{f.name[: -len(ext)]}.wav"
                                    index.setdefault(key, Path(f.path).resolve())
    return index


def find_roots(root: Path, subdirs: Sequence[str], what: str) -> List[Path]:
    roots = [root / s for s in subdirs if (root / s).is_dir()]
    if not roots:
        looked = "\n  ".join(str(root / s) for s in subdirs)
        raise CorpusError(f"{what}: no audio folder found; looked for:\n  {looked}")
    return roots


def read_vox_trials(path: Path) -> List[Tuple[int, str, str, bool]]:
    """Lines ``label a.wav b.wav`` (label 1|0) of an official VoxCeleb list."""
    out = []
    for lineno, f in read_list(path):
        if len(f) != 3 or f[0] not in ("0", "1"):
            raise CorpusError(
                f"{path}:{lineno}: expected '1|0 <id>/<video>/<n>.wav <id>/<video>/<n>.wav', got {' '.join(f)!r}"
            )
        out.append((lineno, f[1], f[2], f[0] == "1"))
    return out


def prepare_test(
    root: Path, wav_roots: Sequence[Path], index: Dict[str, Path], lists: Sequence[str], skip_missing: bool
):
    """(wav_scp, utt2spk, {trials_vox1_x: trials}, Vox1-O speakers) of the chosen lists."""
    trials: Dict[str, list] = {}
    test_speakers: set = set()
    used: Dict[str, Path] = {}

    def resolve(key: str) -> Tuple[Optional[str], str]:
        path = index.get(key)
        if path is None:
            return None, " or ".join(str(r / key) for r in wav_roots)
        u = utt_id(key)
        used[u] = path
        return u, str(path)

    for name in lists:
        fname = TRIAL_LISTS[name]
        candidates = [root / d / fname for d in LIST_SUBDIRS]
        if name != "o" and not any(c.is_file() for c in candidates):
            log.info("Vox1-%s list %s not found under %s: skipped", name.upper(), fname, root)
            continue
        path = require_file(candidates, f"VoxCeleb1 trial list {fname} (Vox1-{name.upper()})")
        lines = read_vox_trials(path)
        if name == "o":
            test_speakers = {k.split("/")[0] for _, e, t, _ in lines for k in (e, t)}
        trials[f"trials_vox1_{name}"] = convert_trials(lines, resolve, str(path), skip_missing)
        log.info("%s: %d target + %d non-target trials", path.name, *count_labels(trials[f"trials_vox1_{name}"]))
    wav_scp = {u: str(p) for u, p in used.items()}
    utt2spk = {u: u.split("-", 1)[0] for u in used}
    return wav_scp, utt2spk, trials, test_speakers


def prepare_dev(index: Dict[str, Path], test_speakers: set):
    wav_scp, utt2spk = {}, {}
    for key, path in index.items():
        spk = key.split("/")[0]
        if spk not in test_speakers:
            u = utt_id(key)
            wav_scp[u], utt2spk[u] = str(path), spk
    return wav_scp, utt2spk


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path, help="the VoxCeleb1 folder")
    p.add_argument("--dev-dir", type=Path, help="training data dir (speakers not in Vox1-O)")
    p.add_argument("--test-dir", required=True, type=Path)
    p.add_argument("--trial-lists", default="o", help="comma-separated subset of o,e,h (default: o)")
    p.add_argument("--test-only", action="store_true", help="write TEST_DIR only (VoxCeleb2 training)")
    p.add_argument("--skip-missing", action="store_true", help="drop trial lines whose audio is absent")
    a = p.parse_args(argv)
    lists = [x.strip().lower() for x in a.trial_lists.split(",") if x.strip()]
    bad = [x for x in lists if x not in TRIAL_LISTS]
    if bad or "o" not in lists:
        raise CorpusError(f"--trial-lists {a.trial_lists!r}: choose from o,e,h (o is required)")
    if not a.root.is_dir():
        raise CorpusError(f"VoxCeleb1 root {a.root} is not a directory")
    if not a.test_only and a.dev_dir is None:
        raise CorpusError("--dev-dir is required unless --test-only")
    wav_roots = find_roots(a.root, WAV_SUBDIRS, f"VoxCeleb1 root {a.root}")
    index = scan_tree(wav_roots, ".wav")
    log.info("VoxCeleb1: %d wav files under %s", len(index), [str(r) for r in wav_roots])
    wav_scp, utt2spk, trials, test_speakers = prepare_test(a.root, wav_roots, index, lists, a.skip_missing)
    write_data_dir(a.test_dir, wav_scp, utt2spk, trials=trials)
    if not a.test_only:
        dev_wav, dev_u2s = prepare_dev(index, test_speakers)
        if not dev_u2s:
            raise CorpusError(
                f"no VoxCeleb1 dev audio (speakers outside Vox1-O) under "
                f"{[str(r) for r in wav_roots]}: unpack vox1_dev_wav.zip there"
            )
        write_data_dir(a.dev_dir, dev_wav, dev_u2s)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
