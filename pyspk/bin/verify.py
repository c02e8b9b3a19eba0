"""pyspk verify --model M.pt a.wav b.wav [--backend-dir B] [--scores-dir S] [--backend cosine|plda] [--threshold T]

Embeds both files, scores the pair and prints ``score``, ``threshold`` and the decision
(same / different: same when score >= threshold).  The threshold is --threshold, else
the EER threshold of the back-end stored by `pyspk score` in S/thresholds.json (S
defaults to B/../scores).  Without any threshold only the score is printed.
Exit status 0 whatever the decision; 1 on errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk verify", description=__doc__.split("\n\n")[1])
    ap.add_argument("--model", required=True, help="encoder checkpoint (final.pt)")
    ap.add_argument("--backend-dir", default=None, help="pyspk backend output (training mean, PLDA)")
    ap.add_argument("--scores-dir", default=None, help="pyspk score output holding thresholds.json")
    ap.add_argument("--backend", default="cosine", choices=("cosine", "plda"))
    ap.add_argument("--threshold", type=float, default=None, help="decision threshold (overrides thresholds.json)")
    ap.add_argument("--fbank-config", default=None, help="conf/fbank.yaml used for training (default: built-in)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true", help="print one json object")
    ap.add_argument("wav_a")
    ap.add_argument("wav_b")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pyspk.embed.extractor import Embedder
    from pyspk.embed.single import embed_file, load_threshold, pair_score
    from pyspk.features.audio import AudioError
    from pyspk.features.fbank import load_config

    try:
        embedder = Embedder.from_checkpoint(args.model, device=args.device)
        cfg = load_config(args.fbank_config)
        a, b = embed_file(embedder, args.wav_a, cfg), embed_file(embedder, args.wav_b, cfg)
        score = pair_score(a, b, args.backend_dir, args.backend)
        thr = args.threshold
        scores_dir = args.scores_dir or (Path(args.backend_dir).parent / "scores" if args.backend_dir else None)
        if thr is None and scores_dir is not None:
            thr = load_threshold(scores_dir, args.backend)
    except (AudioError, ValueError, KeyError, OSError) as e:
        print(f"pyspk verify: error: {e}", file=sys.stderr)
        return 1
    decision = None if thr is None else ("same" if score >= thr else "different")
    if args.json:
        print(json.dumps({"score": score, "threshold": thr, "decision": decision, "backend": args.backend}))
    else:
        print(f"score {score:.6f} ({args.backend})")
        print(f"threshold {thr:.6f}" if thr is not None else "threshold none (pass --threshold or --scores-dir)")
        print(f"decision {decision or 'undecided'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
