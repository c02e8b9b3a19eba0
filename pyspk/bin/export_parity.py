"""pyspk export_parity --model exp/<system>/final.pt --onnx exp/<system>/final.onnx [--json OUT] data/<test_set>

Runs sherpa-onnx's speaker-embedding extractor on the exported ONNX file and pyspk's own
front end + encoder (as `pyspk embed` does) on every recording of the data dir, and
prints the per-file cosine between the two (also against pyspk without VAD, since
sherpa-onnx has none) and the cosine-scored EER of each trials list with each.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk export_parity", description=__doc__.split("\n\n")[1])
    ap.add_argument("--model", required=True, help="encoder checkpoint (final.pt)")
    ap.add_argument("--onnx", required=True, help="its `pyspk export --format onnx` file")
    ap.add_argument("--fbank-config", default=None, help="fbank yaml the system was trained with")
    ap.add_argument("--json", default=None, help="also write the full result (per-file cosines) here")
    ap.add_argument("data_dir", help="Kaldi data dir with wav.scp (and trials* for EERs)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pyspk.data.kaldi_dir import DataDirError
    from pyspk.export.parity import compare
    from pyspk.features.audio import AudioError
    from pyspk.features.fbank import load_config

    try:
        res = compare(args.model, args.onnx, args.data_dir, load_config(args.fbank_config))
    except (AudioError, DataDirError, ValueError, KeyError, OSError, ImportError) as e:
        print(f"pyspk export_parity: error: {e}", file=sys.stderr)
        return 1
    print(f"files\t{res['files']}")
    for ref, c in res["cosine"].items():
        print(
            f"cosine_sherpa_vs_{ref}\tmin {c['min']:.6f}\tmedian {c['median']:.6f}\tworst {c['worst_utt']}"
            f"\tcentred min {c['centred_min']:.6f}\tcentred median {c['centred_median']:.6f}"
        )
    print(f"cosine_between_different_files\tmedian {res['between_files_median']:.6f}")
    for name, eers in res["eer"].items():
        for trials, eer in eers.items():
            print(f"eer_{name}\t{trials}\t{100 * eer:.2f}")
    if args.json:
        from pyspk.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
