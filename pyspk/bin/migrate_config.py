"""pyspk migrate-config FILE...

Rewrites training configs of the layout before the objective's blocks (a ``loss:`` block,
``balance.kind``) in the new layout (``head``, ``pair_loss``, ``pair_weights``, ``balance``:
docs/method.md), in place and atomically: the same settings, the old blocks replaced where they
were, comments on the old keys moved to the new ones, the rest of the file untouched. A file
already in the new layout is left as it is. Training reads old configs as they are, with a
warning; this makes the warning go away.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk migrate-config", description=__doc__.split("\n\n")[1])
    ap.add_argument("files", nargs="+", metavar="FILE", help="training config yaml(s) to rewrite")
    args = ap.parse_args(argv)
    from pyspk.train.config import ConfigError
    from pyspk.train.migrate import migrate_file

    rc = 0
    for f in args.files:
        try:
            changed = migrate_file(f)
        except (ConfigError, OSError) as e:
            print(f"pyspk migrate-config: error: {e}", file=sys.stderr)
            rc = 1
            continue
        print(f"{f}: {'rewritten in the new layout' if changed else 'already in the new layout, unchanged'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
