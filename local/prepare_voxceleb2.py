#!/usr/bin/env python3
"""VoxCeleb2 dev -> a Kaldi training data dir (the Vox2-train -> Vox1-O/E/H setting).

VoxCeleb2 ships AAC audio (``vox2_dev_aac.zip`` unpacks to ``dev/aac/<id>/<video>/<n>.m4a``).
Two ways in, detected in this order:

1. a converted wav tree (``dev/wav``, ``wav`` or ``vox2_dev_wav/wav`` under ROOT, e.g. made with
   ``ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav``): wav.scp lists the files;
2. the m4a tree (``dev/aac``, ``aac``, ``vox2_dev_aac/dev/aac``) decoded on the fly: each
   wav.scp entry is the pipe ``ffmpeg -v 8 -i FILE -ac 1 -ar 16000 -f wav -acodec pcm_s16le - |``,
   which the audio reader runs (Kaldi's convention). This needs ffmpeg on PATH (or
   ``--ffmpeg PATH``); without it the script stops and says how to convert instead.

Utterance ids are ``spk-video-utt`` as for VoxCeleb1 (see prepare_voxceleb1.py). The test
side of this setting is VoxCeleb1's (``prepare_voxceleb1.py --test-only --trial-lists o,e,h``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
from pathlib import Path

from corpus_common import CorpusError, run_main, write_data_dir
from prepare_voxceleb1 import scan_tree, utt_id

log = logging.getLogger("local.voxceleb2")
WAV_SUBDIRS = ("dev/wav", "wav", "vox2_dev_wav/wav")
M4A_SUBDIRS = ("dev/aac", "aac", "vox2_dev_aac/dev/aac")


def ffmpeg_pipe(ffmpeg: str, path: Path) -> str:
    """A wav.scp pipe that decodes ``path`` to 16 kHz mono 16-bit wav on stdout."""
    return f"{shlex.quote(ffmpeg)} -v 8 -i {shlex.quote(str(path))} -ac 1 -ar 16000 -f wav -acodec pcm_s16le - |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path, help="the VoxCeleb2 folder")
    p.add_argument("--train-dir", required=True, type=Path)
    p.add_argument(
        "--audio",
        choices=("auto", "wav", "m4a"),
        default="auto",
        help="auto: a converted wav tree when there is one, else m4a through ffmpeg",
    )
    p.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg executable for m4a pipes")
    a = p.parse_args(argv)
    if not a.root.is_dir():
        raise CorpusError(f"VoxCeleb2 root {a.root} is not a directory")
    wav_roots = [a.root / s for s in WAV_SUBDIRS if (a.root / s).is_dir()]
    m4a_roots = [a.root / s for s in M4A_SUBDIRS if (a.root / s).is_dir()]
    index, pipe = {}, None
    if a.audio in ("auto", "wav") and wav_roots:
        index = scan_tree(wav_roots, ".wav")
    if not index and a.audio in ("auto", "m4a") and m4a_roots:
        index = scan_tree(m4a_roots, ".m4a")
        if index:
            pipe = shutil.which(a.ffmpeg)
            if pipe is None:
                raise CorpusError(
                    f"found {len(index)} m4a files under {[str(r) for r in m4a_roots]} but ffmpeg "
                    f"('{a.ffmpeg}') is not installed: install ffmpeg (e.g. apt-get install ffmpeg) or "
                    f"convert the tree to wav under {a.root / 'dev/wav'} "
                    f"(ffmpeg -i X.m4a -ac 1 -ar 16000 X.wav) and rerun"
                )
    if not index:
        looked = [
            str(a.root / s)
            for s in (
                WAV_SUBDIRS if a.audio == "wav" else M4A_SUBDIRS if a.audio == "m4a" else WAV_SUBDIRS + M4A_SUBDIRS
            )
        ]
        raise CorpusError(
            "no VoxCeleb2 audio (<id>/<video>/<n>.wav or .m4a) found; looked in:\n  " + "\n  ".join(looked)
        )
    wav_scp, utt2spk = {}, {}
    for key, path in index.items():
        u = utt_id(key)
        wav_scp[u] = ffmpeg_pipe(pipe, path) if pipe else str(path)
        utt2spk[u] = key.split("/")[0]
    log.info("VoxCeleb2 dev: %d utterances (%s)", len(wav_scp), "m4a via ffmpeg pipes" if pipe else "wav files")
    write_data_dir(a.train_dir, wav_scp, utt2spk)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
