"""``exp/<system>/final.pt`` -> an ONNX or TorchScript file that runs without pyspk.

The exported program is :class:`pyspk.export.graph.ExportModule` (in-graph CMN, then
the encoder) with a dynamic batch and frame axis: input ``feats`` float32
(batch, frames, feat_dim) raw log-mel fbank, output ``embedding`` (batch, embed_dim).
ONNX goes through PyTorch's torch.export-based exporter (``dynamo=True``, needs
onnxscript) and carries :func:`pyspk.export.metadata.build_metadata` in its
``metadata_props``; TorchScript is a trace, with the same metadata as the extra file
``pyspk_metadata.json``.

Before the file is renamed into place, the export is run on random fbank-like
features of several lengths and compared with the eager PyTorch module; an export
whose max abs difference exceeds ``tol`` is refused (nothing is written).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from pyspk.export.graph import ExportModule
from pyspk.export.metadata import build_metadata
from pyspk.features.fbank import FbankConfig
from pyspk.io import atomic_path

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
CHECK_SHAPES = ((1, 37), (2, 150), (1, 401))  # (batch, frames) run by the self-check
MIN_FRAMES = 2  # torch.export treats sizes 0 and 1 as special; 2+ frames stay symbolic
TS_METADATA = "pyspk_metadata.json"


class ExportError(RuntimeError):
    """An export that cannot be made or that does not reproduce the PyTorch model."""


@dataclass
class ExportResult:
    path: Path
    format: str
    seconds: float  # export alone (tracing/translation + writing)
    size_bytes: int
    max_abs_diff: float  # self-check against eager PyTorch
    metadata: dict = field(default_factory=dict)


def default_output(model_path, fmt: str) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + SUFFIX[fmt])


def fbank_like(batch: int, frames: int, feat_dim: int, seed: int = 0) -> np.ndarray:
    """Random features on the scale of int16-range log-mels (mean ~8, spread ~3)."""
    rng = np.random.default_rng(seed + 1000 * frames + batch)
    base = rng.normal(8.0, 2.0, size=(batch, 1, feat_dim))
    return (base + rng.normal(0.0, 2.5, size=(batch, frames, feat_dim))).astype(np.float32)


def load_export_module(model_path) -> tuple[ExportModule, dict]:
    """(ExportModule of the checkpoint, checkpoint dict) with the training features' CMN settings."""
    from pyspk.models import load_encoder

    encoder, ckpt = load_encoder(model_path)
    features = dict(ckpt.get("extra", {}).get("features") or {"cmn": True})
    module = ExportModule(encoder, cmn=features.get("cmn", True), cmn_window=features.get("cmn_window"))
    return module.eval(), ckpt


def _export_onnx(module: ExportModule, example: torch.Tensor, tmp: Path, metadata: dict) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1)
    frames = torch.export.Dim("frames", min=MIN_FRAMES)
    # no autograd in the graph: inference ops only (a process that trained may have set
    # train.gemm: onednn, whose training-only custom op ONNX has no counterpart for)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            dynamo=True,
            external_data=False,
            verbose=False,
            input_names=["feats"],
            output_names=["embedding"],
            dynamic_shapes={"feats": {0: batch, 1: frames}},
        )
    model = onnx.load(str(tmp))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp))


def _export_torchscript(module: ExportModule, example: torch.Tensor, tmp: Path, metadata: dict) -> None:
    import warnings

    # The encoders' input-shape checks become constants in a trace (TracerWarning); that is
    # harmless, and generalisation to other lengths is what the self-check of export() tests.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, (example,), check_trace=False)
    torch.jit.save(traced, str(tmp), _extra_files={TS_METADATA: json.dumps(metadata, indent=1)})


def run_onnx(path, feats: np.ndarray, session=None) -> np.ndarray:
    """Embeddings from onnxruntime for (B, T, F) float32 features."""
    if session is None:
        session = onnx_session(path)
    return session.run(["embedding"], {"feats": np.ascontiguousarray(feats, dtype=np.float32)})[0]


def onnx_session(path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_torchscript(path, feats: np.ndarray, module=None) -> np.ndarray:
    if module is None:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))).numpy()


def read_metadata(path) -> dict:
    """The metadata of an exported file (ONNX metadata_props, or the TorchScript extra file)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in model.metadata_props}
    extra = {TS_METADATA: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[TS_METADATA])


def max_abs_diff_vs_eager(
    module: ExportModule, path: Path, fmt: str, shapes: Sequence[tuple[int, int]] = CHECK_SHAPES, feat_dim: int = 80
) -> float:
    """Largest |exported - eager| over embeddings of random fbank-like inputs of ``shapes``."""
    runner = onnx_session(path) if fmt == "onnx" else torch.jit.load(str(path), map_location="cpu").eval()
    worst = 0.0
    for b, t in shapes:
        x = fbank_like(b, t, feat_dim)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        got = run_onnx(path, x, runner) if fmt == "onnx" else run_torchscript(path, x, runner)
        if got.shape != want.shape:
            raise ExportError(f"{path}: output shape {got.shape} for input {x.shape}, PyTorch gives {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def export(
    model_path,
    out=None,
    fmt: str = "onnx",
    fbank: Optional[FbankConfig] = None,
    language: str = "multilingual",
    framework: str = "wespeaker",
    tol: float = 1e-4,
) -> ExportResult:
    """Export ``model_path`` (a :func:`pyspk.models.save_encoder` checkpoint) to ``out``.

    ``fbank`` is the front end the encoder was trained with (conf/fbank.yaml; it goes
    into the metadata).  Raises ExportError when the export fails or disagrees with
    PyTorch by more than ``tol``; FileNotFoundError/ValueError for a bad checkpoint.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (valid: {', '.join(FORMATS)})")
    model_path = Path(model_path)
    out = Path(out) if out else default_output(model_path, fmt)
    fbank = fbank or FbankConfig()
    module, ckpt = load_export_module(model_path)
    encoder = module.encoder
    feat_dim = int(getattr(encoder, "feat_dim", ckpt["encoder_kwargs"].get("feat_dim", 80)))
    if feat_dim != fbank.num_mel_bins:
        raise ExportError(
            f"{model_path}: encoder takes {feat_dim}-dim features but the fbank config has "
            f"num_mel_bins {fbank.num_mel_bins}; pass the --fbank-config it was trained with"
        )
    extra = ckpt.get("extra", {})
    features = dict(extra.get("features") or {"cmn": True})
    metadata = build_metadata(
        encoder=ckpt["encoder"],
        encoder_kwargs=dict(ckpt["encoder_kwargs"]),
        embed_dim=int(encoder.embed_dim),
        feat_dim=feat_dim,
        fbank=fbank,
        features=features,
        config=extra.get("config"),
        checkpoint=model_path,
        language=language,
        framework=framework,
    )
    example = torch.from_numpy(fbank_like(2, 200, feat_dim))
    with atomic_path(out) as tmp:
        start = time.perf_counter()
        try:
            (_export_onnx if fmt == "onnx" else _export_torchscript)(module, example, tmp, metadata)
        except ImportError as e:
            raise ExportError(f"--format {fmt} needs the 'export' extra (pip install -e '.[export]'): {e}") from None
        except Exception as e:  # the exporters raise many types; name the checkpoint and format
            raise ExportError(f"exporting {model_path} to {fmt} failed: {type(e).__name__}: {e}") from e
        seconds = time.perf_counter() - start
        diff = max_abs_diff_vs_eager(module, tmp, fmt, feat_dim=feat_dim)
        if not diff <= tol:
            raise ExportError(
                f"{fmt} export of {model_path} differs from PyTorch by {diff:.3g} (> tol {tol:g}); not written"
            )
        size = tmp.stat().st_size
    log.info("wrote %s (%s, %.1f s, %.2f MB, max abs diff vs PyTorch %.2e)", out, fmt, seconds, size / 1e6, diff)
    return ExportResult(out, fmt, seconds, size, diff, metadata)
