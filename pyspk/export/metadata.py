"""Metadata of an exported model: the keys sherpa-onnx reads, and pyspk's own.

sherpa-onnx's speaker-embedding extractor (``SpeakerEmbeddingExtractorModel`` in
sherpa-onnx/csrc/speaker-embedding-extractor-model.cc) reads, from the ONNX
``metadata_props``:

    framework               "wespeaker" | "3d-speaker" (both the general extractor;
                            "nemo" selects another); required
    sample_rate             int, required; the rate of its fbank (it resamples input)
    output_dim              int, required
    normalize_samples       int, required: 0 = samples are multiplied by 32768 before
                            the fbank (Kaldi's int16 range), 1 = kept in [-1, 1]
    language                non-empty string, required
    feature_normalize_type  optional: "" (none) or "global-mean" (subtract the mean
                            over time before the model)

Its fbank (``FeatureExtractorConfig`` of sherpa-onnx/csrc/features.h, kaldi-native-fbank)
is fixed apart from the rate and the scaling: 80 mel bins, 20 Hz to Nyquist - 400 Hz,
25/10 ms Povey frames, pre-emphasis 0.97, DC removal, no dither, snip_edges false, and
no VAD.  :func:`sherpa_frontend_differences` lists where a pyspk fbank config differs.

pyspk's own keys (prefix ``pyspk_``) carry what is needed to rebuild or audit the
model: encoder name and arguments, the fbank settings (json), where CMN is applied,
whether the encoder was trained on VAD-selected frames, and sha256 hashes of the
training config (canonical json) and of the checkpoint file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from pyspk.features.fbank import FbankConfig
from pyspk.io import file_digest

# sherpa-onnx FeatureExtractorConfig defaults a speaker model gets (features.h).
SHERPA_FBANK = {
    "num_mel_bins": 80,
    "low_freq": 20.0,
    "high_freq_below_nyquist": 400.0,
    "frame_length_ms": 25.0,
    "frame_shift_ms": 10.0,
    "dither": 0.0,
    "preemph_coeff": 0.97,
    "remove_dc_offset": True,
    "window_type": "povey",
    "snip_edges": False,
}
SHERPA_KEYS = ("framework", "sample_rate", "output_dim", "normalize_samples", "language", "feature_normalize_type")


def config_hash(config) -> str:
    """sha256 of the training config as canonical json (sorted keys); "" when absent."""
    if not config:
        return ""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def sherpa_frontend_differences(fbank: FbankConfig, features: dict) -> list[str]:
    """Where sherpa-onnx's front end would differ from the one the encoder was trained with."""
    diffs = []
    high = fbank.high_freq if fbank.high_freq > 0 else fbank.sample_rate / 2 + fbank.high_freq
    sherpa_high = fbank.sample_rate / 2 - SHERPA_FBANK["high_freq_below_nyquist"]
    if abs(high - sherpa_high) > 1e-6:
        diffs.append(f"mel high_freq {high:g} Hz (sherpa-onnx: {sherpa_high:g} Hz = Nyquist - 400)")
    for key in (
        "num_mel_bins",
        "low_freq",
        "frame_length_ms",
        "frame_shift_ms",
        "dither",
        "preemph_coeff",
        "remove_dc_offset",
        "window_type",
        "snip_edges",
    ):
        ours, theirs = getattr(fbank, key), SHERPA_FBANK[key]
        if ours != theirs:
            diffs.append(f"{key} {ours!r} (sherpa-onnx: {theirs!r})")
    if features.get("vad"):
        diffs.append("energy VAD: trained on VAD-selected frames, sherpa-onnx keeps every frame")
    return diffs


def build_metadata(
    *,
    encoder: str,
    encoder_kwargs: dict,
    embed_dim: int,
    feat_dim: int,
    fbank: FbankConfig,
    features: dict,
    config,
    checkpoint: Path,
    language: str,
    framework: str = "wespeaker",
) -> dict:
    """All metadata strings of an export (sherpa-onnx's keys, then ``pyspk_*``)."""
    if not language:
        raise ValueError("language must be a non-empty string (sherpa-onnx refuses an empty one)")
    if framework not in ("wespeaker", "3d-speaker"):
        raise ValueError(
            f"framework must be 'wespeaker' or '3d-speaker' (sherpa-onnx's general extractor), got {framework!r}"
        )
    from pyspk import __version__

    window = features.get("cmn_window") or 0
    cmn = (
        "none"
        if not features.get("cmn", True)
        else f"in-graph, sliding window of {window} frames"
        if window > 0
        else "in-graph, whole utterance"
    )
    diffs = sherpa_frontend_differences(fbank, features)
    return {
        "framework": framework,
        "sample_rate": str(fbank.sample_rate),
        "output_dim": str(embed_dim),
        "normalize_samples": "0" if fbank.int16_scale else "1",
        "language": language,
        # CMN is inside the graph, so the runtime must not need to do anything; a runtime that
        # subtracted the global mean anyway would change nothing (the graph's mean is then 0).
        "feature_normalize_type": "",
        "comment": f"pyspk {__version__} export of {checkpoint.name}: input raw log-mel fbank "
        f"(batch, frames, {feat_dim}), output embedding (batch, {embed_dim})",
        "pyspk_version": __version__,
        "pyspk_encoder": encoder,
        "pyspk_encoder_kwargs": json.dumps(encoder_kwargs, sort_keys=True),
        "pyspk_feat_dim": str(feat_dim),
        "pyspk_fbank": json.dumps(dataclasses.asdict(fbank), sort_keys=True),
        "pyspk_cmn": cmn,
        "pyspk_vad": "1" if features.get("vad") else "0",
        "pyspk_frontend_vs_sherpa_onnx": "; ".join(diffs) if diffs else "identical",
        "pyspk_config_sha256": config_hash(config),
        "pyspk_checkpoint_sha256": file_digest(checkpoint, "sha256"),
    }
