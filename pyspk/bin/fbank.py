"""pyspk fbank: Lhotse Fbank features of a data directory, as Kaldi ark/scp.

    pyspk fbank --config conf/fbank.yaml --nj N --cmd CMD [--compress-feats true|false] [--force] [--skip-bad] \
        DATA_DIR FBANK_DIR

Internal job mode (what the queue script runs):
    python -m pyspk.bin.fbank --job J --config conf/fbank.yaml [--compress-feats true|false] [--skip-bad] \
        DATA_DIR FBANK_DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from pyspk.bin._args import positive_int, true_false


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="pyspk fbank", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default=None, help="conf/fbank.yaml (defaults: 80 mel, 25/10 ms, 20-7600 Hz)")
    ap.add_argument("--nj", type=positive_int, default=1, help="number of parallel jobs (>= 1)")
    ap.add_argument(
        "--cmd",
        default="",
        help="queue script, called as CMD JOB=1:N LOG COMMAND (default: this checkout's utils/run.pl)",
    )
    ap.add_argument(
        "--compress-feats",
        type=true_false,
        default=None,
        metavar="true|false",
        help="write Kaldi compressed matrices (copy-feats --compress=true); default: the config's compress",
    )
    ap.add_argument("--force", action="store_true", help="recompute even verified jobs")
    ap.add_argument("--skip-bad", action="store_true", help="skip unusable recordings (listed in bad_utts)")
    ap.add_argument("--job", type=int, default=None, help="internal: run one job of the split")
    ap.add_argument("data_dir")
    ap.add_argument("fbank_dir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from pyspk.features.audio import AudioError
    from pyspk.stages.fbank import StageError

    try:
        if args.job is not None:
            import torch

            from pyspk.features.fbank import load_config
            from pyspk.stages.fbank import run_job

            torch.set_num_threads(1)
            config = load_config(args.config)
            if args.compress_feats is not None:
                config = dataclasses.replace(config, compress=args.compress_feats)
            run_job(args.data_dir, args.fbank_dir, args.job, config, args.skip_bad)
        else:
            from pyspk.stages.fbank import make_fbank

            make_fbank(
                args.data_dir,
                args.fbank_dir,
                args.config,
                args.nj,
                args.cmd,
                args.force,
                args.skip_bad,
                args.compress_feats,
            )
    except (AudioError, StageError, ValueError, OSError) as e:
        logging.getLogger("pyspk.fbank").error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
