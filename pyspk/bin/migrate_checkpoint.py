"""pyspk migrate-checkpoint --i-trust-this-file FILE... [--out F]

Rewrites checkpoints written before pyspk read them with weights_only=True (epoch_N.pt
with numpy RNG states, or any .pt holding numpy values) as tensors and plain values, in
place or to --out. The old file is read weights-only with numpy arrays, scalars and dtypes
allowed and nothing else, so a file holding code is refused here too; the command still
asks for --i-trust-this-file, since the migrated file is trusted as data from then on. The
result is read back with weights_only=True before it replaces anything.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk migrate-checkpoint", description=__doc__.split("\n\n")[1])
    ap.add_argument("files", nargs="+", metavar="FILE", help="checkpoint(s) to rewrite")
    ap.add_argument(
        "--i-trust-this-file",
        "--trust",
        dest="trust",
        action="store_true",
        help="you made these files or trust their source (migrated files are then loaded as trusted data)",
    )
    ap.add_argument("--out", default=None, help="write here instead of in place (one FILE only)")
    args = ap.parse_args(argv)
    if not args.trust:
        print(
            f"pyspk migrate-checkpoint: refusing to migrate {' '.join(args.files)} "
            f"without --i-trust-this-file (pass it if you made the file or trust its source)",
            file=sys.stderr,
        )
        return 2
    if args.out is not None and len(args.files) != 1:
        print("pyspk migrate-checkpoint: --out takes one FILE", file=sys.stderr)
        return 2
    from pyspk.train.checkpoint import migrate_checkpoint

    for f in args.files:
        try:
            out = migrate_checkpoint(f, args.out, i_trust_this_file=args.trust)
        except Exception as e:  # an untrusted-format file can fail in any way while unpickling
            print(f"pyspk migrate-checkpoint: error: {f}: {e}", file=sys.stderr)
            return 1
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
