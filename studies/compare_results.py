#!/usr/bin/env python
"""EERs of two recipe runs, figure by figure: after - before, in points.

    python studies/compare_results.py BEFORE/exp/results.json AFTER/exp/results.json

Both files are the ``exp/results.json`` that stage 7 writes. Prints one line per (system,
trial list, back-end) that both runs scored, then the mean, mean absolute and range of the
differences, so a speed change can be checked for what it did to the results (compare the
spread with the seed-to-seed spread of the loss study, ``studies/study_losses.sh``). A figure
present in only one run is named and left out of the summary.
"""

from __future__ import annotations

import argparse
import json
import sys


def eers(path: str) -> dict:
    try:
        with open(path) as f:
            systems = json.load(f)["systems"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"{path}: not a results.json with 'systems' ({e})")
    out = {}
    for system, entry in systems.items():
        for trials, backends in entry.get("metrics", {}).items():
            for backend, m in backends.items():
                out[(system, trials, backend)] = 100.0 * m["eer"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    args = p.parse_args(argv)
    a, b = eers(args.before), eers(args.after)
    common = [k for k in a if k in b]
    for k in sorted(set(a) ^ set(b)):
        print(f"only in {'before' if k in a else 'after'}: {' '.join(k)}")
    if not common:
        print("no figure in both runs", file=sys.stderr)
        return 1
    print(f"{'system':<26} {'trials':<14} {'back-end':<8} {'before':>7} {'after':>7} {'diff':>6}")
    diffs = []
    for k in common:
        d = b[k] - a[k]
        diffs.append(d)
        print(f"{k[0]:<26} {k[1]:<14} {k[2]:<8} {a[k]:7.2f} {b[k]:7.2f} {d:+6.2f}")
    n = len(diffs)
    print(
        f"{n} figures: after - before mean {sum(diffs) / n:+.2f} points, mean absolute "
        f"{sum(abs(d) for d in diffs) / n:.2f}, range {min(diffs):+.2f} to {max(diffs):+.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
