"""Training examples, the parts every training input shares: crops, SpecAugment, batches.

:func:`random_crop` and :func:`spec_augment` draw from the generator they are given, so the
loaders that use them (:mod:`pyspk.train.offline` over ``feats.scp``, the online loader over
audio) give the same batch for a seed whatever the number of loader workers, and a resumed
run draws the same crops and masks as an uninterrupted one.

Utterances shorter than the crop (after VAD) are an error listed before training
(:func:`check_lengths`) unless ``short_utts: pad``, which repeats the utterance
end to end up to the crop length (:func:`random_crop` tiles a shorter input).

:func:`make_loader` wraps a dataset that maps ``(epoch, batch_no, utt_indices)`` to a whole
batch, and a batch sampler (:mod:`pyspk.data.sampler`), into a ``DataLoader``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch


def check_lengths(utts: Sequence[str], lengths: Mapping[str, int], crop_frames: int, source: str) -> None:
    """Raise ValueError listing every utterance shorter than ``crop_frames``."""
    short = [(u, lengths[u]) for u in utts if u in lengths and lengths[u] < crop_frames]
    if short:
        shown = ", ".join(f"{u} ({n} frames)" for u, n in short[:20])
        more = f" and {len(short) - 20} more" if len(short) > 20 else ""
        raise ValueError(
            f"{source}: {len(short)} utterance(s) shorter than the {crop_frames}-frame crop: "
            f"{shown}{more}; remove them (utils/subset_data_dir) or set features.short_utts: pad "
            f"(repeats them) or a smaller features.crop_frames"
        )


def random_crop(feats: np.ndarray, crop_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``crop_frames`` window; a shorter input is tiled end to end first."""
    n = feats.shape[0]
    if n < crop_frames:
        feats = np.tile(feats, (int(np.ceil(crop_frames / n)), 1))
        n = feats.shape[0]
    start = int(rng.integers(0, n - crop_frames + 1))
    return feats[start : start + crop_frames]


def spec_augment(
    feats: np.ndarray,
    rng: np.random.Generator,
    time_masks: int,
    time_width: int,
    freq_masks: int,
    freq_width: int,
    copy: bool = True,
) -> np.ndarray:
    """SpecAugment (Park et al., 2019) without time warping: zero ``time_masks`` bands of
    0..time_width frames and ``freq_masks`` bands of 0..freq_width bins (after CMN the
    mean is 0, so zero is the neutral value). Returns a copy (``copy=False``: masks
    ``feats`` itself and returns it)."""
    out = feats.copy() if copy else feats
    t, f = out.shape
    for _ in range(time_masks):
        w = int(rng.integers(0, min(time_width, t) + 1))
        s = int(rng.integers(0, t - w + 1))
        out[s : s + w, :] = 0.0
    for _ in range(freq_masks):
        w = int(rng.integers(0, min(freq_width, f) + 1))
        s = int(rng.integers(0, f - w + 1))
        out[:, s : s + w] = 0.0
    return out


class KeyedBatches:
    """Wrap a batch sampler so each item is ``(epoch, batch_no, indices)`` for the dataset."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        for batch in self.sampler:
            yield (self.sampler.epoch, self.sampler.position - 1, tuple(batch))

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.sampler.position)


def make_loader(dataset: torch.utils.data.Dataset, sampler, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A loader yielding one whole batch per item (the sampler already batched; ``dataset``
    maps :class:`KeyedBatches` items to batches, as :class:`pyspk.train.offline.CropBatchDataset`)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=KeyedBatches(sampler),
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=False,
    )
