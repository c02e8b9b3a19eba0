"""pyspk verify --model M.pt a.wav b.wav [--backend-dir B] [--scores-dir S] [--backend cosine|plda|...] [--threshold T]

Embeds both files, scores the pair and prints ``score``, ``threshold`` and the decision
(same / different: same when score >= threshold).  The threshold is --threshold, else
the EER threshold of the back-end stored by `pyspk score` in S/thresholds.json (S
defaults to B/../scores).  Without any threshold only the score is printed.
Exit status 0 whatever the decision; 1 on errors.

It refuses to judge what it cannot: a file with less than --min-speech seconds of speech
after VAD (default 1 s) is an error, or with --allow-short a warning; it warns when the
two sides' sample rates differ or when audio is resampled up from below the model's
rate. --enroll FILE (repeatable) adds enrolment files: the enrolment side is the mean
of the embeddings of wav_a and every --enroll file (as the recipe's speaker x-vectors).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from pyspk.bin._args import finite_float, nonnegative_float


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk verify", description=__doc__.split("\n\n")[1])
    ap.add_argument("--model", required=True, help="encoder checkpoint (final.pt)")
    ap.add_argument("--backend-dir", default=None, help="pyspk backend output (training mean, PLDA)")
    ap.add_argument("--scores-dir", default=None, help="pyspk score output holding thresholds.json")
    ap.add_argument(
        "--backend",
        default="cosine",
        help="cosine, plda, or another back-end of --backend-dir that scores single pairs",
    )
    ap.add_argument(
        "--threshold", type=finite_float, default=None, help="decision threshold (overrides thresholds.json)"
    )
    ap.add_argument("--fbank-config", default=None, help="conf/fbank.yaml used for training (default: built-in)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true", help="print one json object")
    ap.add_argument(
        "--enroll",
        action="append",
        default=[],
        metavar="FILE",
        help="a further enrolment file of the same speaker as wav_a (repeatable)",
    )
    ap.add_argument(
        "--min-speech",
        type=nonnegative_float,
        default=None,
        metavar="SECONDS",
        help="least speech after VAD in each file (default 1 s)",
    )
    ap.add_argument("--allow-short", action="store_true", help="warn instead of refusing below --min-speech")
    ap.add_argument("wav_a")
    ap.add_argument("wav_b")
    args = ap.parse_args(argv)
    from pyspk.backend.base import BACKENDS

    if args.backend not in BACKENDS:
        ap.error(f"argument --backend: {BACKENDS.unknown(args.backend)}")
    if BACKENDS.get(args.backend).obj.single_pair_refusal:
        ap.error(f"argument --backend: {BACKENDS.get(args.backend).obj.single_pair_refusal}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pyspk.embed.extractor import Embedder
    from pyspk.embed.single import MIN_SPEECH_S, embed_file, file_rate, load_threshold, pair_score
    from pyspk.features.audio import AudioError
    from pyspk.features.fbank import load_config

    try:
        embedder = Embedder.from_checkpoint(args.model, device=args.device)
        cfg = load_config(args.fbank_config)
        min_s = MIN_SPEECH_S if args.min_speech is None else args.min_speech
        warnings: list = []
        enroll = [args.wav_a, *args.enroll]
        emb = [embed_file(embedder, f, cfg, min_s, args.allow_short, warnings) for f in enroll]
        a = np.mean(emb, axis=0)
        b = embed_file(embedder, args.wav_b, cfg, min_s, args.allow_short, warnings)
        rates = {f: file_rate(f) for f in enroll + [args.wav_b]}
        if len({r for r in rates.values() if r is not None}) > 1:
            warnings.append(
                "the inputs have different sample rates ("
                + ", ".join(f"{f}: {r} Hz" for f, r in rates.items() if r is not None)
                + "); channel mismatch lowers same-speaker scores"
            )
        for w in warnings:
            print(f"pyspk verify: warning: {w}", file=sys.stderr)
        score = pair_score(a, b, args.backend_dir, args.backend, n_enroll=len(enroll))
        thr = args.threshold
        scores_dir = args.scores_dir or (Path(args.backend_dir).parent / "scores" if args.backend_dir else None)
        if thr is None and scores_dir is not None:
            thr = load_threshold(scores_dir, args.backend)
            if thr is not None and not math.isfinite(thr):  # NaN would answer "different" to every pair
                raise ValueError(
                    f"{scores_dir}: the stored {args.backend} threshold is {thr}, not a number to "
                    f"decide with; rerun pyspk score or pass --threshold"
                )
    except (AudioError, ValueError, KeyError, OSError) as e:
        print(f"pyspk verify: error: {e}", file=sys.stderr)
        return 1
    decision = None if thr is None else ("same" if score >= thr else "different")
    if args.json:
        print(
            json.dumps(
                {
                    "score": score,
                    "threshold": thr,
                    "decision": decision,
                    "backend": args.backend,
                    "enroll": enroll,
                    "warnings": warnings,
                }
            )
        )
    else:
        print(f"score {score:.6f} ({args.backend})")
        print(f"threshold {thr:.6f}" if thr is not None else "threshold none (pass --threshold or --scores-dir)")
        print(f"decision {decision or 'undecided'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
