"""Training examples from a Kaldi data dir: features, random crops, SpecAugment.

:class:`FeatureStore` reads ``feats.scp`` (and ``vad.scp``) through
:class:`pyspk.features.arkread.ArkReader` (kaldiio for what it does not read) and
applies what :func:`pyspk.features.reader.load_features` does (VAD frame selection, then
CMN) at read time, so the arks stay raw. It keeps every processed matrix in RAM
when asked (``in_memory``; stored as float16, half the memory, a rounding error
of < 0.01 on mean-normalised log-Mel values) or reads each one on demand.

:class:`CropBatchDataset` turns a batch of utterance indices (from a sampler)
into a ``(B, crop_frames, F)`` float tensor and the speaker labels. Its random
numbers come from ``numpy.random.default_rng([seed, epoch, batch, rank])``, so a
batch is the same whatever the number of loader workers, and a resumed run
draws the same crops and masks as an uninterrupted one.

Utterances shorter than the crop (after VAD) are an error listed before training
(:func:`check_lengths`) unless ``short_utts: pad``, which repeats the utterance
end to end up to the crop length.
"""

from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from pyspk.features.arkread import ArkReader
from pyspk.features.reader import apply_cmn, utterance_mean, voiced_frames

log = logging.getLogger(__name__)


class FeatureStore:
    """utt -> processed feature matrix (frames, dim) float32."""

    def __init__(self, feats_scp: Mapping[str, str], vad_scp: Optional[Mapping[str, str]] = None,
                 cmn: bool = True, cmn_window: Optional[int] = None, in_memory: bool = True,
                 source: str = "feats.scp"):
        self.feats_scp, self.vad_scp = dict(feats_scp), dict(vad_scp) if vad_scp else None
        self.cmn, self.cmn_window, self.source = cmn, cmn_window, source
        self.cache: Dict[str, np.ndarray] = {}
        self.reader = ArkReader()
        if in_memory:
            for utt in sorted(self.feats_scp):
                self.cache[utt] = self._read(utt).astype(np.float16)

    def _read(self, utt: str) -> np.ndarray:
        m = self._read_voiced(utt)
        return np.ascontiguousarray(apply_cmn(m, self.cmn_window)) if self.cmn else m

    def _read_voiced(self, utt: str, check_finite: bool = True) -> np.ndarray:
        """The VAD-selected frames, checked, not mean-normalised (errors as :meth:`_read`)."""
        try:
            feats = self.reader(self.feats_scp[utt])
            vad = self.reader(self.vad_scp[utt]) if self.vad_scp and utt in self.vad_scp else None
            return voiced_frames(feats, vad, check_finite)
        except KeyError:
            raise KeyError(f"{self.source}: no entry for utterance '{utt}'") from None
        except Exception as e:
            raise self._error(utt, e) from e

    def _error(self, utt: str, what) -> ValueError:
        return ValueError(f"{self.source}: utterance '{utt}' ({self.feats_scp.get(utt)}): {what}")

    def _voiced_and_mean(self, utt: str) -> Tuple[np.ndarray, np.ndarray]:
        """``(voiced frames, their float32 mean)``: ``_read_voiced`` and :func:`utterance_mean`
        with the finite check on that mean instead of on every value (a NaN or inf among the
        frames training reads makes the mean non-finite; frames VAD drops are never read): one
        pass fewer over the frames, which makes the loader cheaper per batch on demand
        (bench/bench_train.py ``train_loader_ms_per_batch_synth``)."""
        m = self._read_voiced(utt, check_finite=False)
        if m.shape[0] == 0:
            raise self._error(utt, "no frames")
        mean = utterance_mean(m)
        if not np.isfinite(mean).all():
            raise self._error(utt, "features contain NaN or inf")
        return m, mean

    def __getitem__(self, utt: str) -> np.ndarray:
        m = self.cache.get(utt)
        return m.astype(np.float32) if m is not None else self._read(utt)

    def crop(self, utt: str, crop_frames: int, rng: np.random.Generator,
             out: Optional[np.ndarray] = None) -> np.ndarray:
        """``random_crop(self[utt], crop_frames, rng)``, the same numbers from the same draws,
        written to ``out`` (or a new float32 array) without converting or normalising the
        frames outside the crop: a matrix kept in memory is cropped before its float16 ->
        float32 conversion, one read on demand with whole-utterance CMN is cropped before the
        mean is subtracted (the mean is still that of every voiced frame)."""
        m = self.cache.get(utt)
        mean = None
        if m is None:
            if self.cmn and not (self.cmn_window and self.cmn_window > 0):
                m, mean = self._voiced_and_mean(utt)
            else:
                m = self._read(utt)
        x = random_crop(m, crop_frames, rng)
        if out is None:
            out = np.empty(x.shape, np.float32)
        if mean is None:
            out[...] = x
        else:
            np.subtract(x, mean, out=out)
        return out

    def num_frames(self, utt: str) -> Optional[int]:
        """Frames after VAD when known (in memory), else None."""
        m = self.cache.get(utt)
        return None if m is None else m.shape[0]


def check_lengths(utts: Sequence[str], lengths: Mapping[str, int], crop_frames: int, source: str) -> None:
    """Raise ValueError listing every utterance shorter than ``crop_frames``."""
    short = [(u, lengths[u]) for u in utts if u in lengths and lengths[u] < crop_frames]
    if short:
        shown = ", ".join(f"{u} ({n} frames)" for u, n in short[:20])
        more = f" and {len(short) - 20} more" if len(short) > 20 else ""
        raise ValueError(f"{source}: {len(short)} utterance(s) shorter than the {crop_frames}-frame crop: "
                         f"{shown}{more}; remove them (utils/subset_data_dir) or set features.short_utts: pad "
                         f"(repeats them) or a smaller features.crop_frames")


def random_crop(feats: np.ndarray, crop_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``crop_frames`` window; a shorter input is tiled end to end first."""
    n = feats.shape[0]
    if n < crop_frames:
        feats = np.tile(feats, (int(np.ceil(crop_frames / n)), 1))
        n = feats.shape[0]
    start = int(rng.integers(0, n - crop_frames + 1))
    return feats[start:start + crop_frames]


def spec_augment(feats: np.ndarray, rng: np.random.Generator, time_masks: int, time_width: int,
                 freq_masks: int, freq_width: int, copy: bool = True) -> np.ndarray:
    """SpecAugment (Park et al., 2019) without time warping: zero ``time_masks`` bands of
    0..time_width frames and ``freq_masks`` bands of 0..freq_width bins (after CMN the
    mean is 0, so zero is the neutral value). Returns a copy (``copy=False``: masks
    ``feats`` itself and returns it)."""
    out = feats.copy() if copy else feats
    t, f = out.shape
    for _ in range(time_masks):
        w = int(rng.integers(0, min(time_width, t) + 1))
        s = int(rng.integers(0, t - w + 1))
        out[s:s + w, :] = 0.0
    for _ in range(freq_masks):
        w = int(rng.integers(0, min(freq_width, f) + 1))
        s = int(rng.integers(0, f - w + 1))
        out[:, s:s + w] = 0.0
    return out


class CropBatchDataset(torch.utils.data.Dataset):
    """Map a key ``(epoch, batch_no, utt_indices)`` to ``(feats (B,T,F), labels (B,))``."""

    def __init__(self, store: FeatureStore, utts: Sequence[str], labels: Sequence[int], crop_frames: int,
                 spec_cfg=None, seed: int = 0, rank: int = 0):
        self.store, self.utts = store, list(utts)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.crop_frames, self.spec_cfg = crop_frames, spec_cfg
        self.seed, self.rank = seed, rank

    def __getitem__(self, key: Tuple[int, int, Tuple[int, ...]]):
        epoch, batch_no, indices = key
        rng = np.random.default_rng([self.seed, epoch, batch_no, self.rank])
        sa = self.spec_cfg if self.spec_cfg is not None and self.spec_cfg.enabled else None
        first = self.store.crop(self.utts[indices[0]], self.crop_frames, rng)   # its shape sizes the batch
        batch = np.empty((len(indices),) + first.shape, np.float32)
        batch[0] = first
        for j, i in enumerate(indices):   # each crop is written into the batch once, then masked there
            if j:
                self.store.crop(self.utts[i], self.crop_frames, rng, out=batch[j])
            if sa is not None:
                spec_augment(batch[j], rng, sa.time_masks, sa.time_width, sa.freq_masks, sa.freq_width, copy=False)
        return torch.from_numpy(batch), torch.from_numpy(self.labels[list(indices)])

    def __len__(self) -> int:  # not used for sampling; the sampler drives the loader
        return len(self.utts)


class KeyedBatches:
    """Wrap a batch sampler so each item is ``(epoch, batch_no, indices)`` for the dataset."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        for batch in self.sampler:
            yield (self.sampler.epoch, self.sampler.position - 1, tuple(batch))

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.sampler.position)


def make_loader(dataset: CropBatchDataset, sampler, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A loader yielding one whole batch per item (the sampler already batched)."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=KeyedBatches(sampler),
                                       num_workers=num_workers, persistent_workers=False,
                                       pin_memory=False)
