"""pyspk corpus list | info --corpus NAME [--format text|shell|json] | flags | prepare --corpus NAME --data DIR ...

The corpus registry (pyspk/corpora.py, plus corpora registered by PYSPK_PLUGINS) as the recipe
asks it. `info --format shell` prints `key=value` lines (keys and names validated, one line
each) that run.sh reads with `read`, never `eval`; `flags` prints `name=default` for the root
and option flags of every corpus, which run.sh and local/prepare_corpus.sh declare before
parsing their options; `prepare` is stage 0 for one corpus (local/prepare_corpus.sh runs it).
"""

from __future__ import annotations

import argparse
import json
import sys

from pyspk.corpora import CORPORA, Context, CorpusError, all_flags, get_corpus, info, prepare
from pyspk.registry import RegistryError


def _line(text: str) -> str:
    return " ".join(str(text).split())


def shell_lines(d: dict) -> list:
    out = [
        f"corpus={d['corpus']}",
        f"train_set={d['train_set']}",
        f"test_set={d['test_set']}",
        f"trials={' '.join(d['trials'])}",
        f"roots={' '.join(r['flag'] for r in d['roots'])}",
        f"options={' '.join(o['flag'] for o in d['options'])}",
        f"inputs={' '.join(d['inputs'])}",
        f"outputs={' '.join(d['outputs'])}",
        f"conf_dir={d['conf_dir']}",
    ]
    out += [f"hint_{r['flag'].replace('-', '_')}={_line(r['hint'])}" for r in d["roots"]]
    return out


def text_lines(d: dict) -> list:
    out = [
        f"{d['corpus']}: {d['doc']}",
        f"  train set  {d['train_set']}",
        f"  test set   {d['test_set']}: {', '.join(d['trials'])}",
    ]
    for r in d["roots"]:
        out.append(f"  --{r['flag']} DIR  {r['what']}" + (f"; {r['hint']}" if r["script"] else ""))
    for o in d["options"]:
        out.append(f"  --{o['flag']} {o['default'] or repr('')}  {o['what']}")
    out.append(f"  prepared by {d['prepared_by']}" + (f"; reads {', '.join(d['inputs'])}" if d["inputs"] else ""))
    out.append(f"  systems    {d['conf_dir']}/systems.list")
    return out


def _bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"takes true or false, got '{text}'")
    return text == "true"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk corpus", description=__doc__.split("\n\n")[1])
    ap.add_argument("--prog", default="pyspk corpus", help="the name errors start with (the calling script)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="registered corpora, one a line")
    p = sub.add_parser("info", help="one corpus: sets, trials, root flags, options")
    p.add_argument("--corpus", required=True)
    p.add_argument("--format", choices=("text", "shell", "json"), default="text")
    p = sub.add_parser("flags", help="NAME=DEFAULT of every corpus's root (and option) flags")
    p.add_argument("--roots-only", action="store_true")
    p = sub.add_parser("prepare", help="stage 0 for one corpus")
    p.add_argument("--corpus", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--synth-size", default="default")
    p.add_argument("--skip-missing", type=_bool, default=False)
    p.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE", help="a root or option flag")
    p.add_argument("--recipe-dir", default=".", help="where the corpus's scripts are (local/, synth/)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "list":
            for name in CORPORA.names():
                print(f"{name}\t{info(name)['doc']}")
        elif args.cmd == "info":
            d = info(args.corpus)
            lines = {"shell": shell_lines, "text": text_lines}.get(args.format)
            print("\n".join(lines(d)) if lines else json.dumps(d, indent=2))
        elif args.cmd == "flags":
            for flag, (kind, default) in all_flags().items():
                if kind == "root" or not args.roots_only:
                    print(f"{flag.replace('-', '_')}={default}")
        else:
            return _prepare(args)
    except (RegistryError, ValueError, OSError, ImportError) as e:  # CorpusError, DataDirError are ValueErrors
        print(f"{args.prog}: {e}", file=sys.stderr)
        return 1
    return 0


def _prepare(args) -> int:
    corpus = get_corpus(args.corpus)
    given = dict(s.split("=", 1) for s in args.set if "=" in s)
    known = all_flags()  # local/prepare_corpus.sh passes every corpus's flags; this one takes its own
    bad = [s for s in args.set if "=" not in s] + [f for f in given if f not in known]
    if bad:
        raise CorpusError(f"--set {bad[0]}: not FLAG=VALUE of a registered corpus's root or option")
    ctx = Context(
        args.corpus,
        args.data,
        corpus.train_set,
        corpus.test_set,
        seed=args.seed,
        nj=args.nj,
        synth_size=args.synth_size,
        skip_missing=args.skip_missing,
        roots={r.flag: given.get(r.flag, "") for r in corpus.roots},
        options={o.flag: given.get(o.flag, o.default) for o in corpus.options},
        prog=args.prog,
    )
    return prepare(args.corpus, ctx, args.recipe_dir)


if __name__ == "__main__":
    sys.exit(main())
