"""pyspk show-config [--files] FILE

Prints the training config FILE resolves to, as the trainer records it in EXP/config.yaml:
its ``base:`` chain merged, an old layout read in the new one, every default filled in, checked.
With --files, prints instead the files it is made of, one per line (FILE, its base, that one's
base, ...): run.sh stamps stage 3 with them, so that an edit of a shared base.yaml retrains
the systems built on it.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk show-config", description=__doc__.split("\n\n")[1])
    ap.add_argument("config", metavar="FILE", help="a training config yaml")
    ap.add_argument("--files", action="store_true", help="print the files FILE is made of instead")
    args = ap.parse_args(argv)
    from pyspk.train.config import ConfigError, config_files, dump_config, load_config

    try:
        if args.files:
            print("\n".join(str(p) for p in config_files(args.config)))
        else:
            print(dump_config(load_config(args.config)), end="")
    except ConfigError as e:
        print(f"pyspk show-config: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
