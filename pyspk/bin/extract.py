"""pyspk extract: x-vectors of a data directory (Kaldi ark/scp), split over queue jobs.

    pyspk extract [--nj N] [--cmd CMD] [--max-frames N --chunk-frames N --chunk-hop N]
                  [--device auto|cpu|cuda] [--fbank-config YAML] [--force] MODEL.pt DATA_DIR OUT_DIR

Writes OUT_DIR/xvector.{ark,scp}, spk_xvector.{ark,scp} (speaker means), num_utts.ark
(text "spk count", as Kaldi's ark,t), per-job xvector.J.{ark,scp} and .done.extract.J
stamps (a rerun reuses matching jobs), logs in OUT_DIR/log/extract.J.log.
Utterances longer than --max-frames (0 = never) are embedded as the mean over windows
of --chunk-frames every --chunk-hop frames. With --fbank-config the jobs read the audio
(wav.scp, segments) and make the features in memory as the fbank stage would, for a set
whose features are not stored (the online recipe's training set).

Internal job mode (what the queue script runs):
    python -m pyspk.bin.extract --job J [chunk/device options] MODEL.pt DATA_DIR OUT_DIR
"""

from __future__ import annotations

import argparse
import logging
import sys

from pyspk.bin._args import positive_int


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="pyspk extract", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nj", type=positive_int, default=1, help="number of parallel jobs (>= 1)")
    ap.add_argument(
        "--cmd",
        default="",
        help="queue script, called as CMD JOB=1:N LOG COMMAND (default: this checkout's utils/run.pl)",
    )
    ap.add_argument("--max-frames", type=int, default=6000, help="chunk utterances longer than this (0 = never)")
    ap.add_argument("--chunk-frames", type=int, default=3000, help="window length when chunking")
    ap.add_argument("--chunk-hop", type=int, default=1500, help="window shift when chunking")
    ap.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    ap.add_argument(
        "--fbank-config",
        default=None,
        help="read audio and compute features with this fbank config instead of reading feats.scp",
    )
    ap.add_argument("--force", action="store_true", help="recompute every job")
    ap.add_argument("--job", type=int, default=None, help="internal: run one job of the split")
    ap.add_argument("model")
    ap.add_argument("data_dir")
    ap.add_argument("out_dir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from pyspk.embed.extractor import ChunkConfig
    from pyspk.stages.extract import ExtractError, extract, run_job

    try:
        chunk = ChunkConfig(args.max_frames, args.chunk_frames, args.chunk_hop)
        if args.job is not None:
            import torch

            torch.set_num_threads(1)
            run_job(args.model, args.data_dir, args.out_dir, args.job, chunk, args.device, args.fbank_config)
        else:
            extract(
                args.model,
                args.data_dir,
                args.out_dir,
                args.nj,
                args.cmd,
                chunk,
                args.device,
                args.force,
                args.fbank_config,
            )
    except (ExtractError, ValueError, KeyError, OSError) as e:
        logging.getLogger("pyspk.extract").error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
