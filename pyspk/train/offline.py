"""Offline training input: random crops of the features in ``feats.scp``.

:class:`FeatureStore` reads ``feats.scp`` (and ``vad.scp``) through
:class:`pyspk.data.arkread.ArkReader` (float32 or Kaldi compressed matrices, as
``--compress-feats`` stores them; kaldiio for what it does not read) and
applies what :func:`pyspk.features.reader.load_features` does (VAD frame selection, then
CMN) at read time, so the arks stay raw. It keeps every processed matrix in RAM
when asked (``in_memory``; stored as float16, half the memory, a rounding error
of < 0.01 on mean-normalised log-Mel values) or reads each one on demand.

:class:`CropBatchDataset` turns a batch of utterance indices (from a sampler)
into a ``(B, crop_frames, F)`` float tensor and the speaker labels. Its random
numbers come from ``numpy.random.default_rng([seed, epoch, batch, rank])``, so a
batch is the same whatever the number of loader workers, and a resumed run
draws the same crops and masks as an uninterrupted one (:mod:`pyspk.data.dataset`:
the crops, the masks, the loader).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from pyspk.data.arkread import ArkReader
from pyspk.data.dataset import random_crop, spec_augment
from pyspk.features.reader import apply_cmn, utterance_mean, voiced_frames


class FeatureStore:
    """utt -> processed feature matrix (frames, dim) float32."""

    def __init__(
        self,
        feats_scp: Mapping[str, str],
        vad_scp: Optional[Mapping[str, str]] = None,
        cmn: bool = True,
        cmn_window: Optional[int] = None,
        in_memory: bool = True,
        source: str = "feats.scp",
    ):
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

    def crop(
        self, utt: str, crop_frames: int, rng: np.random.Generator, out: Optional[np.ndarray] = None
    ) -> np.ndarray:
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


class CropBatchDataset(torch.utils.data.Dataset):
    """Map a key ``(epoch, batch_no, utt_indices)`` to ``(feats (B,T,F), labels (B,))``."""

    def __init__(
        self,
        store: FeatureStore,
        utts: Sequence[str],
        labels: Sequence[int],
        crop_frames: int,
        spec_cfg=None,
        seed: int = 0,
        rank: int = 0,
    ):
        self.store, self.utts = store, list(utts)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.crop_frames, self.spec_cfg = crop_frames, spec_cfg
        self.seed, self.rank = seed, rank

    def __getitem__(self, key: Tuple[int, int, Tuple[int, ...]]):
        epoch, batch_no, indices = key
        rng = np.random.default_rng([self.seed, epoch, batch_no, self.rank])
        sa = self.spec_cfg if self.spec_cfg is not None and self.spec_cfg.enabled else None
        first = self.store.crop(self.utts[indices[0]], self.crop_frames, rng)  # its shape sizes the batch
        batch = np.empty((len(indices),) + first.shape, np.float32)
        batch[0] = first
        for j, i in enumerate(indices):  # each crop is written into the batch once, then masked there
            if j:
                self.store.crop(self.utts[i], self.crop_frames, rng, out=batch[j])
            if sa is not None:
                spec_augment(batch[j], rng, sa.time_masks, sa.time_width, sa.freq_masks, sa.freq_width, copy=False)
        return torch.from_numpy(batch), torch.from_numpy(self.labels[list(indices)])

    def __len__(self) -> int:  # not used for sampling; the sampler drives the loader
        return len(self.utts)
