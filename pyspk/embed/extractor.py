"""One encoder turned into an utterance embedder.

Whole-utterance by default: the post-processed features (VAD selection, then CMN,
with the settings the encoder was trained with, ``ckpt["extra"]["features"]``) go
through the encoder in one forward pass.  Utterances longer than ``max_frames``
are cut into windows of ``chunk_frames`` frames every ``chunk_hop`` frames (the
last window ends at the last frame) and the window embeddings are averaged, as
WeSpeaker/SpeechBrain do for long recordings to bound memory and keep the
embedding close to the training segment length.

:meth:`Embedder.embed_prepared` batches utterances of equal length (exact: no padding,
no masks); the extraction job feeds it length-sorted windows (pyspk.stages.extract).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class ChunkConfig:
    max_frames: int = 6000  # longer utterances (60 s at 10 ms) are chunked; 0 = always whole
    chunk_frames: int = 3000  # window length in frames
    chunk_hop: int = 1500  # window shift in frames

    def __post_init__(self):
        if self.max_frames < 0 or self.chunk_frames < 1 or self.chunk_hop < 1:
            raise ValueError(f"chunking needs max_frames >= 0, chunk_frames >= 1, chunk_hop >= 1 ({self})")


def chunk_starts(num_frames: int, chunk: ChunkConfig):
    """Window start frames: every chunk_hop, plus one window ending at the last frame."""
    if chunk.max_frames == 0 or num_frames <= chunk.max_frames or num_frames <= chunk.chunk_frames:
        return [0], num_frames
    last = num_frames - chunk.chunk_frames
    starts = list(range(0, last + 1, chunk.chunk_hop))
    if starts[-1] != last:
        starts.append(last)
    return starts, chunk.chunk_frames


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class Embedder:
    """``embed(feats)`` -> float32 embedding of one utterance's raw (ark) features."""

    def __init__(
        self,
        model,
        features: Optional[dict] = None,
        chunk: Optional[ChunkConfig] = None,
        device: str = "cpu",
        batch_size: int = 32,
    ):
        self.device = pick_device(device)
        from pyspk.models.fold import for_inference

        self.model = model.to(self.device).eval()
        self.infer = for_inference(self.model)  # the TDNN with its BatchNorms folded (exact)
        feats_cfg = dict(features or {})
        self.cmn = bool(feats_cfg.get("cmn", True))
        self.cmn_window = feats_cfg.get("cmn_window")
        self.use_vad = bool(feats_cfg.get("vad", False))
        self.chunk = chunk or ChunkConfig()
        self.batch_size = max(1, batch_size)

    @classmethod
    def from_checkpoint(cls, path, chunk: Optional[ChunkConfig] = None, device: str = "auto") -> "Embedder":
        from pyspk.models import load_encoder

        model, ckpt = load_encoder(path)
        return cls(model, ckpt.get("extra", {}).get("features"), chunk, device)

    def prepare(self, feats: np.ndarray, vad: Optional[np.ndarray] = None) -> np.ndarray:
        from pyspk.features.reader import load_features

        return load_features(feats, cmn=self.cmn, cmn_window=self.cmn_window, vad=vad if self.use_vad else None)

    def embed(self, feats: np.ndarray, vad: Optional[np.ndarray] = None, utt: str = "?") -> np.ndarray:
        """Embedding of one utterance; ValueError naming ``utt`` on bad input or NaN output."""
        try:
            x = self.prepare(feats, vad)
        except ValueError as e:
            raise ValueError(f"utterance '{utt}': {e}") from None
        return self.embed_prepared([(utt, x)])[0]

    def embed_prepared(self, items: Sequence[Tuple[str, np.ndarray]]) -> List[np.ndarray]:
        """Embeddings of already prepared utterances, ``[(utt, (frames, dim))]``.

        An encoder that takes utterances of any lengths at once (``embed_list``: the folded
        TDNN) gets them in calls of about RAGGED_FRAMES frames. Otherwise utterances of the same
        length that need no chunking go through the encoder as one batch: exact, since every
        layer and the pooling treat batch rows apart (BatchNorm runs on its running statistics
        in eval mode), and the others one at a time."""
        if hasattr(self.infer, "embed_list"):
            out = self._embed_ragged(items)
        else:
            out = self._embed_equal_lengths(items)
        for (utt, x), e in zip(items, out):
            if not np.isfinite(e).all():
                raise ValueError(f"utterance '{utt}': embedding contains NaN or inf ({x.shape[0]} frames)")
        return [e.astype(np.float32) for e in out]

    RAGGED_FRAMES = 16384  # frames per call of a model that takes utterances of any lengths at once

    def _embed_ragged(self, items) -> List[np.ndarray]:
        """Every window (a whole utterance, or the windows of a chunked one) through
        ``infer.embed_list`` in calls of about RAGGED_FRAMES frames (the folded TDNN: one buffer
        per call, no padding maths, bench/bench_extract.py); chunk embeddings averaged."""
        import torch

        windows, owner = [], []
        for i, (_, x) in enumerate(items):
            starts, size = chunk_starts(x.shape[0], self.chunk)
            for s in starts:
                windows.append(x[s : s + size])
                owner.append(i)
        per_item: List[List[np.ndarray]] = [[] for _ in items]
        start = 0
        while start < len(windows):
            end, frames = start, 0
            while end < len(windows) and (end == start or frames + windows[end].shape[0] <= self.RAGGED_FRAMES):
                frames += windows[end].shape[0]
                end += 1
            batch = [torch.from_numpy(w).to(self.device) for w in windows[start:end]]
            for i, e in zip(owner[start:end], self.infer.embed_list(batch).float().cpu().numpy()):
                per_item[i].append(e)
            start = end
        return [e[0] if len(e) == 1 else np.mean(e, axis=0) for e in per_item]

    def _embed_equal_lengths(self, items) -> List[np.ndarray]:
        out: List[Optional[np.ndarray]] = [None] * len(items)
        whole: Dict[int, List[int]] = {}
        for i, (_, x) in enumerate(items):
            starts, _ = chunk_starts(x.shape[0], self.chunk)
            if len(starts) == 1:
                whole.setdefault(x.shape[0], []).append(i)
            else:
                out[i] = self._forward([x[s : s + self.chunk.chunk_frames] for s in starts]).mean(axis=0)
        for idx in whole.values():
            for b in range(0, len(idx), self.batch_size):
                part = idx[b : b + self.batch_size]
                for i, e in zip(part, self._forward([items[i][1] for i in part])):
                    out[i] = e
        return out

    def _forward(self, windows: List[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.stack(windows)).to(self.device)
            return self.infer(x).float().cpu().numpy()

    def front_end(self, wave: np.ndarray, sample_rate: int, fbank_config=None):
        """(fbank, VAD mask or None): the recipe's features, VAD when the encoder was trained with it."""
        import dataclasses

        from pyspk.features.fbank import FbankConfig, compute_fbank, compute_fbank_energy

        cfg = fbank_config or FbankConfig()
        if self.use_vad:
            from pyspk.features.vad import vad_from_config

            cfg = dataclasses.replace(cfg, vad=True)
            feats, energy = compute_fbank_energy(wave, sample_rate, cfg)
            return feats, vad_from_config(energy, cfg)
        return compute_fbank(wave, sample_rate, dataclasses.replace(cfg, vad=False)), None

    def embed_wave(self, wave: np.ndarray, sample_rate: int, fbank_config=None, utt: str = "?") -> np.ndarray:
        """Fbank (``pyspk.features.fbank``) + VAD when the encoder was trained with it, then embed."""
        feats, mask = self.front_end(wave, sample_rate, fbank_config)
        return self.embed(feats, mask, utt=utt) if mask is not None else self.embed(feats, utt=utt)
