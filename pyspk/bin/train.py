"""``pyspk train``: train one speaker-embedding system from a yaml config.

    utils/torchrun.sh --nproc N pyspk.bin.train --config conf/synth/proposed.yaml \\
        --seed 777 --train-dir data/synth_train_combined --exp-dir exp/proposed

Writes EXP/config.yaml, EXP/checkpoints/epoch_N.pt, EXP/train.csv, EXP/final.pt;
resumes from the latest checkpoint of EXP when one exists and was trained on the same
data (features, labels, augmented copies) and config; starts over when the data changed
or --restart is given (the old checkpoints are kept in EXP/checkpoints.stale). Under ``torchrun``
each process is one DDP rank (RANK/WORLD_SIZE/LOCAL_RANK from the environment).
"""

from __future__ import annotations

import argparse
import logging
import sys

from pyspk.data.kaldi_dir import DataDirError
from pyspk.io import WriteError
from pyspk.train.config import ConfigError, load_config
from pyspk.train.distributed import dist_info_from_env
from pyspk.train.trainer import TrainingDiverged, train


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="pyspk train", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="system yaml (see pyspk/train/config.py)")
    p.add_argument("--seed", type=int, default=None, help="overrides train.seed")
    p.add_argument("--train-dir", required=True, help="Kaldi data dir with feats.scp, utt2spk, utt2num_frames")
    p.add_argument("--exp-dir", required=True, help="experiment dir (checkpoints, final.pt)")
    p.add_argument("--restart", action="store_true",
                   help="start over even when EXP has checkpoints (run.sh passes it with --force true)")
    args = p.parse_args(argv)
    info = dist_info_from_env()
    logging.basicConfig(level=logging.INFO if info.is_main else logging.WARNING,
                        format=f"%(asctime)s [rank {info.rank}] %(name)s %(levelname)s: %(message)s")
    try:
        cfg = load_config(args.config)
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
