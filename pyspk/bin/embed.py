"""pyspk embed --model M.pt [--fbank-config conf/fbank.yaml] [--out-ark A.ark] a.wav [b.wav ...]

Prints one Kaldi text vector per file (``path  [ v1 v2 ... ]``) to stdout, or writes
them to A.ark/A.scp (kaldiio) with --out-ark. The file paths are the table's keys: a path
holding whitespace (or an A.ark path holding it) is refused before anything is computed,
as a Kaldi table would cut the key at the space.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk embed", description=__doc__.split("\n\n")[1])
    ap.add_argument("--model", required=True, help="encoder checkpoint (final.pt)")
    ap.add_argument("--fbank-config", default=None, help="conf/fbank.yaml used for training (default: built-in)")
    ap.add_argument("--out-ark", default=None, help="write A.ark + A.scp instead of printing")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--min-speech",
        type=float,
        default=None,
        metavar="SECONDS",
        help="least speech after VAD in each file (default 1 s); less is an error",
    )
    ap.add_argument("--allow-short", action="store_true", help="warn instead of refusing below --min-speech")
    ap.add_argument("wavs", nargs="+")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pyspk.data.kaldi_dir import DataDirError, check_table_entries
    from pyspk.embed.extractor import Embedder
    from pyspk.embed.single import MIN_SPEECH_S, embed_file
    from pyspk.features.audio import AudioError
    from pyspk.features.fbank import load_config

    try:
        check_table_entries(args.out_ark or "stdout", args.wavs, [args.out_ark] if args.out_ark else [])
    except DataDirError as e:
        print(f"pyspk embed: error: {e} (rename the file or link it under a name without spaces)", file=sys.stderr)
        return 1
    try:
        embedder = Embedder.from_checkpoint(args.model, device=args.device)
        cfg = load_config(args.fbank_config)
        min_s = MIN_SPEECH_S if args.min_speech is None else args.min_speech
        warnings: list = []
        vecs = {w: embed_file(embedder, w, cfg, min_s, args.allow_short, warnings) for w in args.wavs}
        for w in warnings:
            print(f"pyspk embed: warning: {w}", file=sys.stderr)
    except (AudioError, ValueError, OSError) as e:
        print(f"pyspk embed: error: {e}", file=sys.stderr)
        return 1
    if args.out_ark:
        from pathlib import Path

        from pyspk.data.xvectors import write_vectors

        write_vectors(args.out_ark, Path(args.out_ark).with_suffix(".scp"), vecs)
    else:
        for w, v in vecs.items():
            print(f"{w}  [ " + " ".join(f"{x:.6g}" for x in v) + " ]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
