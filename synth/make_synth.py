#!/usr/bin/env python3
"""Make SynthCeleb, the embedded multi-speaker English + Mandarin corpus (stage 0, --corpus synth).

    synth/make_synth.py --out-dir data --size tiny|default --seed 777 [--nj 2]
        [--config conf/synth.yaml] [--num-train-spk N] [--num-test-spk N] [--utts-per-lang N]
        [--difficulty F] [--languages en,cmn] [--snr-db LO,HI] [--rt60 LO,HI] ...

writes DIR/synth_train and DIR/synth_test (Kaldi dirs; trials_en, trials_cmn, trials_cross
in the test dir) and the audio under DIR/synth_audio. Knobs are checked before any audio
is written; a bad one is an error naming its flag. See synth/synthceleb/ for the method.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
sys.path.insert(1, str(_HERE.parent))

from synthceleb.config import SynthConfigError, load_config, parse_range  # noqa: E402

DEFAULT_CONFIG = _HERE.parent / "conf" / "synth.yaml"


def _csv(text: str):
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", required=True, help="where synth_train/, synth_test/, synth_audio/ go")
    p.add_argument("--size", default="default", help="tiny | default (presets of the config's sizes:)")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--nj", type=int, default=1, help="parallel worker processes")
    p.add_argument("--config", default=str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None)
    p.add_argument("--verbose", action="store_true")
    knobs = p.add_argument_group("knobs (override the config)")
    for name, typ in (
        ("num-train-spk", int),
        ("num-test-spk", int),
        ("utts-per-lang", int),
        ("trials-per-list", int),
        ("num-crowd", int),
        ("difficulty", float),
        ("min-dur", float),
        ("max-dur", float),
        ("reverb-prob", float),
        ("eq-tilt-db", float),
        ("eq-peak-db", float),
        ("label-noise", float),
    ):
        knobs.add_argument(f"--{name}", type=typ, default=None)
    for name in ("languages", "noise-kinds"):
        knobs.add_argument(f"--{name}", type=_csv, default=None, help="comma-separated list")
    for name in ("snr-db", "rt60", "level-dbfs", "babble-talkers"):
        knobs.add_argument(f"--{name}", default=None, help="range LO,HI")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    skip = {"out_dir", "size", "seed", "nj", "config", "verbose"}
    overrides = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
    try:
        for name in ("snr_db", "rt60", "level_dbfs", "babble_talkers"):
            if name in overrides:
                try:
                    lo, hi = parse_range(overrides[name])
                except ValueError as e:
                    raise SynthConfigError(f"--{name.replace('_', '-')}: {e}") from None
                overrides[name] = [int(lo), int(hi)] if name == "babble_talkers" else [lo, hi]
        if args.nj < 1:
            raise SynthConfigError(f"--nj must be >= 1, got {args.nj}")
        cfg = load_config(Path(args.config) if args.config else None, args.size, overrides)
    except SynthConfigError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        return 2

    from synthceleb.corpus import make_corpus

    t0 = time.time()
    summary = make_corpus(Path(args.out_dir), cfg, args.seed, args.nj)
    logging.info("SynthCeleb done in %.1f s: %s", time.time() - t0, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
