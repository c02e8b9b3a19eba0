"""pyspk report --exp-dir EXP --systems "a b" --command "..." --out EXP/results.md [--no-plot]

Reads EXP/<system>/scores/metrics.json and EXP/<system>/config.yaml for every system;
writes results.md (one row per system x back-end x trials list), results.json and
det.png (all systems on the first trials list; det_<list>.png for the others).
"""

from __future__ import annotations

import argparse
import logging
import sys

from pyspk.metrics.report import write_report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk report", description=__doc__.split("\n\n")[1])
    ap.add_argument("--exp-dir", required=True)
    ap.add_argument("--systems", required=True, help="space-separated system names")
    ap.add_argument("--command", default="", help="the command that produced the results (recorded)")
    ap.add_argument("--out", required=True, help="results.md path; results.json and det.png go beside it")
    ap.add_argument("--no-plot", action="store_true", help="skip the DET plots")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        write_report(args.exp_dir, args.systems.split(), args.command, args.out, plot=not args.no_plot)
    except (ValueError, FileNotFoundError) as e:
        print(f"pyspk report: error: {e}", file=sys.stderr)
        return 1
    print(open(args.out).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
