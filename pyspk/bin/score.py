"""pyspk score --backend-dir B --xvector-dir X --data-dir D --out-dir S [--backends cosine,asnorm,plda]

Scores every D/trials* list with each back-end fitted in B (default; --backends: a subset,
in that order): S/<trials>.<backend> (enroll test
score), S/metrics.json (EER, minDCF per list and back-end), S/thresholds.json (EER
thresholds of the calibration list, used by `pyspk verify`), S/calibration.json.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pyspk.backend.base import BACKENDS
from pyspk.backend.model import Backend
from pyspk.backend.scoring import score_data_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk score", description=__doc__.split("\n\n")[1])
    ap.add_argument("--backend-dir", required=True)
    ap.add_argument("--xvector-dir", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--backends", default=None, help="comma-separated back-ends (default: every one fitted in B)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = None if args.backends is None else [b for b in args.backends.split(",") if b]
    bad = [b for b in names or () if b not in BACKENDS]
    if bad:
        print(f"pyspk score: {BACKENDS.unknown(bad[0])}", file=sys.stderr)
        return 2
    try:
        score_data_dir(Backend.load(args.backend_dir), args.xvector_dir, args.data_dir, args.out_dir, names)
    except (ValueError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"pyspk score: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
