"""pyspk augment: Kaldi v2-style augmented copies (reverb, noise, music, babble, speed), their
fbank features and the combined training set.

    pyspk augment --config conf/augment.yaml --fbank-config conf/fbank.yaml --nj N --cmd CMD \\
        --seed N [--musan-root P] [--rirs-root P] [--subset N] [--compress-feats true|false] [--force] \\
        [--skip-bad] DATA_DIR FBANK_ROOT OUT_COMBINED_DIR
"""

from __future__ import annotations

import argparse
import logging
import sys

from pyspk.bin._args import nonnegative_int, positive_int, true_false


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="pyspk augment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default=None, help="conf/augment.yaml (defaults: Kaldi v2 settings)")
    ap.add_argument("--fbank-config", default=None, help="conf/fbank.yaml")
    ap.add_argument("--nj", type=positive_int, default=1, help="number of parallel jobs (>= 1)")
    ap.add_argument("--cmd", default="", help="queue script (default: this checkout's utils/run.pl)")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument(
        "--musan-root", default=None, help="MUSAN folder (else noise/music synthesised, babble from training speech)"
    )
    ap.add_argument("--rirs-root", default=None, help="RIRS_NOISES folder (else rooms simulated with pyroomacoustics)")
    ap.add_argument(
        "--subset",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="combine the clean set with N augmented utterances drawn with the seed over every copy, "
        "and compute the features of those only (Kaldi v2: 1M of 4M); 0: all of them",
    )
    ap.add_argument(
        "--compress-feats",
        type=true_false,
        default=None,
        metavar="true|false",
        help="write the copies' features as Kaldi compressed matrices; default: the fbank config's compress",
    )
    ap.add_argument("--force", action="store_true", help="recompute features of every copy")
    ap.add_argument("--skip-bad", action="store_true", help="skip unusable recordings")
    ap.add_argument("data_dir")
    ap.add_argument("fbank_root")
    ap.add_argument("out_dir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from pyspk.augment.config import AugmentConfig
    from pyspk.features.audio import AudioError
    from pyspk.stages.augment import make_augmented
    from pyspk.stages.fbank import StageError

    try:
        cfg = AugmentConfig() if args.config is None else AugmentConfig.from_yaml(args.config)
        make_augmented(
            args.data_dir,
            args.fbank_root,
            args.out_dir,
            cfg,
            args.fbank_config,
            args.nj,
            args.cmd,
            args.seed,
            args.musan_root,
            args.rirs_root,
            args.force,
            args.skip_bad,
            compress=args.compress_feats,
            subset=args.subset,
        )
    except (AudioError, StageError, ValueError, OSError) as e:
        logging.getLogger("pyspk.augment").error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
