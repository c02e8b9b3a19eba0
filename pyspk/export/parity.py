"""Does an exported model give the same embeddings in a real runtime as in pyspk?

For every recording of a Kaldi data dir (``wav.scp``) the same samples go to

- ``pyspk embed``'s path (:meth:`pyspk.embed.extractor.Embedder.embed_wave`: pyspk's
  fbank, energy VAD when the encoder was trained with it, CMN, the PyTorch encoder), and
- sherpa-onnx's ``SpeakerEmbeddingExtractor`` on the exported ONNX file (its own
  kaldi-native-fbank front end, configured by the file's metadata; no VAD).

and the two embeddings are compared by cosine, per file.  Because sherpa-onnx has no
VAD, pyspk's path is also run with VAD off, which isolates the numerical parity of the
two front ends and runtimes from the VAD difference.  Each trial list of the data dir
(``trials*``) is scored by cosine with each set of embeddings and its EER reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional

import numpy as np

from pyspk.features.fbank import FbankConfig


def read_waves(data_dir, sample_rate: int) -> Dict[str, np.ndarray]:
    """utt -> mono float32 samples at ``sample_rate`` for every wav.scp entry."""
    from pyspk.data.kaldi_dir import read_table
    from pyspk.features.audio import read_audio

    wav_scp = read_table(Path(data_dir) / "wav.scp")
    return {utt: read_audio(utt, src, sample_rate) for utt, src in wav_scp.items()}


def sherpa_embeddings(
    onnx_path, waves: Mapping[str, np.ndarray], sample_rate: int, threads: int = 1
) -> Dict[str, np.ndarray]:
    """sherpa-onnx's SpeakerEmbeddingExtractor on each wave (accept_waveform, input_finished, compute)."""
    import sherpa_onnx

    config = sherpa_onnx.SpeakerEmbeddingExtractorConfig(model=str(onnx_path), num_threads=threads)
    if not config.validate():
        raise ValueError(f"sherpa-onnx rejects the extractor config for {onnx_path}")
    extractor = sherpa_onnx.SpeakerEmbeddingExtractor(config)
    out = {}
    for utt, wave in waves.items():
        stream = extractor.create_stream()
        stream.accept_waveform(sample_rate=sample_rate, waveform=wave)
        stream.input_finished()
        if not extractor.is_ready(stream):
            raise ValueError(f"sherpa-onnx: no frames for utterance '{utt}' ({len(wave)} samples)")
        out[utt] = np.asarray(extractor.compute(stream), dtype=np.float32)
    return out


def pyspk_embeddings(
    model_path, waves: Mapping[str, np.ndarray], fbank: FbankConfig, vad: Optional[bool] = None
) -> Dict[str, np.ndarray]:
    """``pyspk embed``'s embeddings of each wave; ``vad`` None = as trained, else forced on/off."""
    from pyspk.embed.extractor import Embedder
    from pyspk.models import load_encoder

    model, ckpt = load_encoder(model_path)
    features = dict(ckpt.get("extra", {}).get("features") or {})
    if vad is not None:
        features["vad"] = vad
    embedder = Embedder(model, features, device="cpu")
    return {utt: embedder.embed_wave(w, fbank.sample_rate, fbank, utt=utt) for utt, w in waves.items()}


def cosines(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """utt -> cos(a[utt], b[utt]); KeyError naming an utterance missing from ``b``."""
    out = {}
    for utt, x in a.items():
        if utt not in b:
            raise KeyError(f"utterance '{utt}' has no second embedding")
        y = b[utt]
        out[utt] = float(np.dot(x, y) / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-30))
    return out


def between_files_median(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Median of cos(a[u], b[v]) over u != v: what a per-file cosine must clearly beat to mean anything."""
    keys = list(a)
    x = np.stack([a[k] / max(np.linalg.norm(a[k]), 1e-30) for k in keys])
    y = np.stack([b[k] / max(np.linalg.norm(b[k]), 1e-30) for k in keys])
    c = x @ y.T
    return float(np.median(c[~np.eye(len(keys), dtype=bool)]))


def trial_eers(data_dir, emb: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Cosine-scored EER (fraction) of every ``trials*`` list of ``data_dir``.

    An enrolment id that is a speaker (``spk2utt``) is the mean of its utterances'
    embeddings, as the recipe's ``spk_xvector`` is.
    """
    from pyspk.data.kaldi_dir import read_spk2utt, read_trials
    from pyspk.metrics.eer import compute_eer

    data_dir = Path(data_dir)
    spk2utt = read_spk2utt(data_dir / "spk2utt") if (data_dir / "spk2utt").is_file() else {}
    unit = {u: v / max(np.linalg.norm(v), 1e-30) for u, v in emb.items()}

    def vec(key):
        if key in unit:
            return unit[key]
        if key in spk2utt:
            m = np.mean([emb[u] for u in spk2utt[key]], axis=0)
            return m / max(np.linalg.norm(m), 1e-30)
        raise KeyError(f"{data_dir}: trial id '{key}' is neither an utterance nor a speaker")

    out = {}
    for path in sorted(data_dir.glob("trials*")):
        trials = read_trials(path)
        scores = np.array([float(vec(t.enroll) @ vec(t.test)) for t in trials])
        labels = np.array([t.target for t in trials])
        out[path.name] = compute_eer(scores, labels)[0]
    return out


def compare(model_path, onnx_path, data_dir, fbank: Optional[FbankConfig] = None, threads: int = 1) -> dict:
    """Per-file cosines (sherpa-onnx vs pyspk as trained, and vs pyspk without VAD) and EERs of each."""
    fbank = fbank or FbankConfig()
    waves = read_waves(data_dir, fbank.sample_rate)
    sets = {
        "sherpa_onnx": sherpa_embeddings(onnx_path, waves, fbank.sample_rate, threads),
        "pyspk": pyspk_embeddings(model_path, waves, fbank),
        "pyspk_novad": pyspk_embeddings(model_path, waves, fbank, vad=False),
    }
    result = {
        "files": len(waves),
        "cosine": {},
        "eer": {},
        "between_files_median": between_files_median(sets["sherpa_onnx"], sets["pyspk"]),
    }
    for ref in ("pyspk", "pyspk_novad"):
        cos = cosines(sets["sherpa_onnx"], sets[ref])
        # Centred on pyspk's mean embedding: a model whose output hardly depends on the input
        # (an untrained one) has raw cosines near 1 for any pair, centred ones only when equal.
        centre = np.mean(list(sets[ref].values()), axis=0)
        centred = cosines(
            {u: v - centre for u, v in sets["sherpa_onnx"].items()}, {u: v - centre for u, v in sets[ref].items()}
        )
        worst = min(cos, key=cos.get)
        vals, cvals = np.array(list(cos.values())), np.array(list(centred.values()))
        result["cosine"][ref] = {
            "min": float(vals.min()),
            "median": float(np.median(vals)),
            "mean": float(vals.mean()),
            "worst_utt": worst,
            "centred_min": float(cvals.min()),
            "centred_median": float(np.median(cvals)),
            "per_file": cos,
        }
    for name, emb in sets.items():
        result["eer"][name] = trial_eers(data_dir, emb)
    return result
