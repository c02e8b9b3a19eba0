"""pyspk shards: a data dir's audio as training shards (Lhotse Shar: FLAC or WAV in tar + cuts jsonl.gz).

    pyspk shards [--shard-size 1000] [--seed 777] [--fbank-config conf/fbank.yaml] [--nj N]
        [--bits 16|24] [--format flac|wav] DATA_DIR OUT_DIR

Writes OUT_DIR/shar/{cuts.NNNNNN.jsonl.gz,recording.NNNNNN.tar} (utterances shuffled with the
seed, --shard-size per shard, audio at the fbank config's sample rate) and OUT_DIR/shards.json
last. Each shard is written under a temporary name and renamed; a rerun skips finished shards.
Train on them with ``data: {source: shards}`` and --train-dir OUT_DIR (pyspk.online).
"""

from __future__ import annotations

import argparse
import logging
import sys

from pyspk.bin._args import positive_int


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="pyspk shards", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shard-size", type=positive_int, default=1000, help="utterances per shard (>= 1)")
    ap.add_argument("--seed", type=int, default=777, help="the shuffle of the utterances over the shards")
    ap.add_argument("--fbank-config", default=None, help="conf/fbank.yaml: sample rate, stereo policy, minimum length")
    ap.add_argument("--nj", type=positive_int, default=1, help="shards written at once (processes, >= 1)")
    ap.add_argument(
        "--bits", type=int, choices=(16, 24), default=16, help="sample size (16: lossless for 16-bit audio)"
    )
    ap.add_argument(
        "--format",
        choices=("flac", "wav"),
        default="flac",
        help="member audio: flac (about half the disk) or wav (read in place, no decoding per view)",
    )
    ap.add_argument("data_dir")
    ap.add_argument("out_dir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from pyspk.features.audio import AudioError
    from pyspk.features.fbank import load_config
    from pyspk.online.shards import write_shards

    try:
        write_shards(
            args.data_dir,
            args.out_dir,
            args.shard_size,
            args.seed,
            load_config(args.fbank_config),
            args.nj,
            f"PCM_{args.bits}",
            args.format,
        )
    except (AudioError, ValueError, OSError) as e:
        logging.getLogger("pyspk.shards").error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
