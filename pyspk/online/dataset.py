"""Online batches from a Kaldi data dir's audio, keyed as the offline ones.

:class:`AudioBatchDataset` maps the key ``(epoch, batch_no, indices)`` of
:class:`pyspk.data.dataset.KeyedBatches` to ``(feats (B, crop_frames, F) float32, labels (B,))``,
exactly the offline :class:`~pyspk.data.dataset.CropBatchDataset`'s contract, so the P x K and
shuffle samplers, :func:`pyspk.data.dataset.make_loader` and the trainer drive it unchanged.
Row ``j`` of a batch draws from ``numpy.random.default_rng([seed, epoch, batch_no, rank, j])``:
a batch depends on its key only, whatever the worker that makes it, and a resumed sampler gives
the same batches. The two views of an original (``sampler.views: 2`` on a clean data dir, where
an original's group is itself) are rows ``j`` and ``j + 1``: two crops, two augmentation draws.

Speed perturbation with new speakers (``speed_new_speakers: true``, Kaldi's convention and
stage 2's default) adds, for every utterance ``u`` of speaker ``s`` and factor ``f``, the
utterance ``sp<f>-u`` of speaker ``sp<f>-s`` to the sampler's ``utt2spk`` (names only: no table
grows); its rows are ``u`` perturbed by ``f``, then augmented as any view.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pyspk.online.audio import AudioTable
from pyspk.online.example import ExampleMaker

log = logging.getLogger(__name__)


def speed_prefixes(aug) -> Dict[str, float]:
    """``{"sp0.9-": 0.9, ...}`` when speed copies are new speakers, else {}."""
    if aug is None or not aug.speed or not aug.speed_new_speakers:
        return {}
    return {f"sp{f:g}-": float(f) for f in aug.speed_factors}


def with_speed_speakers(utt2spk: Dict[str, str], prefixes: Dict[str, float]) -> Dict[str, str]:
    """``utt2spk`` plus ``sp<f>-u -> sp<f>-s`` for every prefix (see the module docstring)."""
    out = dict(utt2spk)
    for p in prefixes:
        out.update({p + u: p + s for u, s in utt2spk.items()})
    return out


class BabblePool:
    """Other speakers' utterances of the data dir as babble sources (tokens ``#row``), for a batch
    whose other rows are all of the same speaker."""

    def __init__(self, table: AudioTable, spk_of_row: np.ndarray, max_speakers: int):
        self.table, self.spk, self.want = table, spk_of_row, 4 * max_speakers
        counts = np.bincount(spk_of_row)
        self.others = len(spk_of_row) - counts  # utterances of other speakers, per speaker

    def draw(self, row: int, rng: np.random.Generator) -> List[str]:
        """Up to ``4 x babble_max_speakers`` distinct rows of other speakers, drawn with ``rng``."""
        spk = self.spk[row]
        want = int(min(self.want, self.others[spk]))
        if want <= 0:
            return []
        cand = rng.integers(0, len(self.spk), size=4 * want + 8)
        cand = cand[self.spk[cand] != spk]
        _, first = np.unique(cand, return_index=True)
        picked = cand[np.sort(first)][:want]
        if picked.size == 0:  # a speaker holding nearly all utterances: take the others directly
            picked = np.flatnonzero(self.spk != spk)[:want]
        return [f"#{int(r)}" for r in picked]

    def read(self, token: str, n: int, at: float) -> np.ndarray:
        with self.table.audio(int(token[1:])) as other:
            return other.read(int(at * max(0, other.open() - n)), n)


class AudioBatchDataset(torch.utils.data.Dataset):
    """Map ``(epoch, batch_no, indices)`` to ``(feats (B, T, F), labels (B,))`` from audio.

    Every row's region is decoded first (:meth:`ExampleMaker.begin`); a babble view mixes the
    regions (:attr:`~pyspk.online.example.View.src`) of the batch's rows of other speakers (the
    data dir's other speakers when the batch has none), then every row is augmented and
    featurised (:meth:`ExampleMaker.end`).
    """

    def __init__(
        self,
        table: AudioTable,
        utts: Sequence[str],
        labels: Sequence[int],
        maker: ExampleMaker,
        seed: int = 0,
        rank: int = 0,
        prefixes: Optional[Dict[str, float]] = None,
        babble: Optional[BabblePool] = None,
    ):
        self.table, self.utts = table, list(utts)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.maker, self.seed, self.rank = maker, seed, rank
        self.prefixes = dict(prefixes or {})
        self.babble = babble

    def base(self, utt: str) -> Tuple[int, Optional[float]]:
        """(row of the table, speed factor or None) of a sampler utterance id."""
        row = self.table.index.get(utt)
        if row is not None:
            return row, None
        for p, f in self.prefixes.items():
            if utt.startswith(p) and utt[len(p) :] in self.table.index:
                return self.table.index[utt[len(p) :]], f
        raise KeyError(f"{self.table.data_dir}: no audio for utterance '{utt}'")

    def __getitem__(self, key: Tuple[int, int, Tuple[int, ...]]):
        epoch, batch_no, indices = key
        maker, aug = self.maker, self.maker.aug
        rows = [self.base(self.utts[i]) for i in indices]
        groups: Dict[int, List[int]] = {}  # table row -> its rows in the batch (views of one utterance)
        for j, (row, _) in enumerate(rows):
            groups.setdefault(row, []).append(j)
        views: list = [None] * len(rows)
        for row, js in groups.items():
            made = maker.begin_views(
                self.table.utts[row],
                self.table.audio(row),
                [np.random.default_rng([self.seed, epoch, batch_no, self.rank, j]) for j in js],
                [rows[j][1] for j in js],
                [self._pool(j, rows) for j in js],
            )
            for j, v in zip(js, made):
                views[j] = v
        if aug is not None:
            aug.babble_source = lambda token, n, at: self._babble_read(views, token, n, at)
        batch = np.empty((len(indices), maker.crop_frames, maker.feat_dim), np.float32)
        for j, v in enumerate(views):
            maker.end(v, out=batch[j])
        return torch.from_numpy(batch), torch.from_numpy(self.labels[list(indices)])

    def _pool(self, j: int, rows):
        """Babble candidates of row ``j``: ``#b<k>`` for the batch's rows of other speakers, else
        the data dir's (``#<row>``); None without babble."""
        if self.babble is None:
            return None
        spk = self.babble.spk
        mine = spk[rows[j][0]]
        cands = [k for k, (r, _) in enumerate(rows) if spk[r] != mine]

        def pool(rng):
            if not cands:
                return self.babble.draw(rows[j][0], rng)
            want = min(self.babble.want, len(cands))
            return [f"#b{cands[int(k)]}" for k in sorted(rng.choice(len(cands), size=want, replace=False))]

        return pool

    def _babble_read(self, views, token: str, n: int, at: float) -> np.ndarray:
        if token.startswith("#b"):
            src = views[int(token[2:])].src
            start = int(at * max(0, src.shape[0] - n))
            return src[start : start + n]
        return self.babble.read(token, n, at)

    def __len__(self) -> int:  # not used for sampling; the sampler drives the loader
        return len(self.utts)
