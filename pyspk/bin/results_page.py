"""pyspk results-page --title TITLE --out PAGE.md [--intro TEXT.md] RUN [RUN ...]   (RUN: [LABEL=]PATH)

Writes a results page (docs/results/<corpus>.md) from the results.json of several runs of a
recipe (RUN: an exp dir or its results.json), one table per commit, each figure the mean ± sd
over the runs (seeds). The page names the command that wrote it and each run's commit, date,
CPU class and command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pyspk.io import atomic_write_text
from pyspk.metrics.pages import load_run, render


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="pyspk results-page", description=__doc__.split("\n\n")[1])
    ap.add_argument("--title", required=True)
    ap.add_argument("--out", required=True, help="the markdown page to write")
    ap.add_argument("--intro", help="a markdown file whose text goes under the title (the setting, by hand)")
    ap.add_argument("runs", nargs="+", help="exp dirs or results.json files, one per run")
    args = ap.parse_args(argv)
    try:
        runs = [load_run(r) for r in args.runs]
        intro = Path(args.intro).read_text() if args.intro else ""
        command = "pyspk results-page " + " ".join(shlex.quote(a) for a in argv)
        atomic_write_text(args.out, render(runs, args.title, command, intro))
    except (ValueError, OSError) as e:
        print(f"pyspk results-page: error: {e}", file=sys.stderr)
        return 1
    print(f"pyspk results-page: wrote {args.out} from {len(runs)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
