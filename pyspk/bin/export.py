"""pyspk export --format onnx|torchscript [--out F] [--fbank-config conf/fbank.yaml] exp/<system>/final.pt

Writes a file that maps raw log-mel fbank (batch, frames, 80) to the embedding, with mean
normalisation inside the graph; ONNX files carry sherpa-onnx's speaker-model metadata and
pyspk's own (pyspk/export/metadata.py). Default output: final.onnx / final.torchscript.pt
beside the checkpoint. The export is checked against PyTorch before it is written.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyspk export", description=__doc__.split("\n\n")[1])
    ap.add_argument("model", help="encoder checkpoint (exp/<system>/final.pt)")
    ap.add_argument("--format", default="onnx", choices=("onnx", "torchscript"))
    ap.add_argument("--out", default=None, help="output file (default: beside the checkpoint)")
    ap.add_argument(
        "--fbank-config",
        default=None,
        help="the fbank yaml the system was trained with (default: built-in = conf/fbank.yaml)",
    )
    ap.add_argument("--language", default="multilingual", help="metadata 'language' (sherpa-onnx needs one)")
    ap.add_argument(
        "--framework",
        default="wespeaker",
        choices=("wespeaker", "3d-speaker"),
        help="metadata 'framework': both select sherpa-onnx's general extractor",
    )
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs difference from PyTorch allowed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The exporter's per-pass chatter, its note that torchvision ops are not registered, and a
    # deprecation inside torch.export say nothing about this model.
    for noisy in ("onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
    from pyspk.export.exporter import ExportError, export
    from pyspk.features.fbank import load_config

    try:
        fbank = load_config(args.fbank_config)
        res = export(args.model, args.out, args.format, fbank, args.language, args.framework, args.tol)
    except (ExportError, ValueError, OSError) as e:
        print(f"pyspk export: error: {e}", file=sys.stderr)
        return 1
    diffs = res.metadata["pyspk_frontend_vs_sherpa_onnx"]
    if diffs != "identical":
        print(f"pyspk export: note: front end vs sherpa-onnx: {diffs}", file=sys.stderr)
    print(f"{res.path}\t{res.format}\t{res.size_bytes} bytes\t{res.seconds:.2f} s\tmax abs diff {res.max_abs_diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
