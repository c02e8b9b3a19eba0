"""``pyspk train``: train one speaker-embedding system from a yaml config.

    utils/torchrun.sh --nproc N pyspk.bin.train --config conf/synth/proposed.yaml \\
        --seed 777 --train-dir data/synth_train_combined --exp-dir exp/proposed

Writes EXP/config.yaml, EXP/checkpoints/epoch_N.pt, EXP/train.csv, EXP/final.pt;
resumes from the latest checkpoint of EXP when one exists and was trained on the same
data (features, labels, augmented copies) and config; starts over when the data changed
or --restart is given (the old checkpoints are kept in EXP/checkpoints.stale). Under ``torchrun``
each process is one DDP rank (RANK/WORLD_SIZE/LOCAL_RANK from the environment).

``--set KEY=VALUE`` (repeatable) overrides one key of the config, e.g. ``--set data.source=audio``
(the value is read as yaml: ``2``, ``true``, ``null``, a string); the key is checked like a key of
the file, so a misspelled one is an error naming the nearest.

``--lmft FILE --lmft-from DIR``: large-margin fine-tuning (:mod:`pyspk.train.lmft`) of the system
trained in DIR: the config with FILE's changes (longer crops, margins raised, low learning rate,
a few epochs), initialised from DIR's last checkpoint (encoder and head).
"""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from pyspk.data.kaldi_dir import DataDirError
from pyspk.io import WriteError
from pyspk.train.config import ConfigError, config_from_dict, config_to_dict, load_config, validate_config
from pyspk.train.distributed import dist_info_from_env
from pyspk.train.lmft import lmft_config, read_lmft
from pyspk.train.trainer import TrainingDiverged, train


def parse_overrides(items) -> dict:
    """``["data.source=audio", "train.epochs=2"]`` -> ``{"data": {"source": "audio"}, "train": {"epochs": 2}}``."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. data.source=audio")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid yaml ({e})") from None
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is set to a value and used as a section")
        node[parts[-1]] = parsed
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="pyspk train", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="system yaml (see pyspk/train/config.py)")
    p.add_argument("--seed", type=int, default=None, help="overrides train.seed")
    p.add_argument("--train-dir", required=True, help="Kaldi data dir with feats.scp, utt2spk, utt2num_frames")
    p.add_argument("--exp-dir", required=True, help="experiment dir (checkpoints, final.pt)")
    p.add_argument(
        "--restart",
        action="store_true",
        help="start over even when EXP has checkpoints (run.sh passes it with --force true)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (dotted path; the value is read as yaml); repeatable",
    )
    p.add_argument("--lmft", default=None, metavar="FILE", help="large-margin fine-tuning settings (conf/lmft.yaml)")
    p.add_argument("--lmft-from", default=None, metavar="DIR", help="with --lmft: the trained system's exp dir")
    args = p.parse_args(argv)
    if (args.lmft is None) != (args.lmft_from is None):
        p.error("--lmft and --lmft-from go together")
    info = dist_info_from_env()
    logging.basicConfig(
        level=logging.INFO if info.is_main else logging.WARNING,
        format=f"%(asctime)s [rank {info.rank}] %(name)s %(levelname)s: %(message)s",
    )
    try:
        cfg = load_config(args.config, overrides=parse_overrides(args.overrides))
        if args.lmft:
            source = f"{args.config} + {args.lmft}"
            cfg = config_from_dict(lmft_config(config_to_dict(cfg), read_lmft(args.lmft), args.lmft_from), source)
            validate_config(cfg, source)
        seed = cfg.train.seed if args.seed is None else args.seed
        final = train(cfg, args.train_dir, args.exp_dir, seed, info, source=args.config, restart=args.restart)
    except (ConfigError, DataDirError, TrainingDiverged, ValueError, WriteError) as e:
        print(f"pyspk train: error: {e}", file=sys.stderr)
        return 1
    if info.is_main:
        logging.getLogger("pyspk.train").info("done: %s", final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
