"""pyspk backend [--config conf/backend.yaml] XVEC_TRAIN_DIR DATA_TRAIN_DIR BACKEND_DIR

Fits the training mean and every back-end the config lists (conf/backend.yaml: cosine,
AS-norm and its cohort of training speaker means, LDA + PLDA, or one a plugin registers)
on the training x-vectors; writes their files and backend.yaml to BACKEND_DIR.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pyspk.backend.config import load_config
from pyspk.backend.model import fit_backend_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk backend", description=__doc__.split("\n\n")[1])
    ap.add_argument("--config", default=None, help="back-end yaml (default: built-in defaults)")
    ap.add_argument("xvector_dir")
    ap.add_argument("data_dir")
    ap.add_argument("backend_dir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        fit_backend_dir(args.xvector_dir, args.data_dir, args.backend_dir, load_config(args.config))
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"pyspk backend: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
