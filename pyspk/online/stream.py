"""Online batches from shards: sequential reads, a shuffle buffer, two views per utterance.

Per epoch ``e`` the shards are shuffled with ``default_rng([seed, e])``; the ``j``-th goes to
rank ``j mod W`` and, on that rank, to stream ``(j div W) mod S`` (``S = data.streams``). A
stream reads its shards one after another, each once, sequentially (a network filesystem sees
one open and one forward read per shard), through a shuffle buffer of ``data.shuffle_buffer``
utterances: once full, each arriving utterance pushes out a random one (drawn with
``default_rng([seed, e, rank, stream])``), and the rest leave in random order at the end.
Babble speakers are the last 64 utterances out of the stream (other speakers only), each as the
region its first view decoded (rebuilt from its random draws after a resume), so babble costs
no decoding; at the very start of a stream, the buffer's utterances (decoded); a view that
finds no other speaker (a stream of one speaker) stays clean.
Stream ``i`` belongs to loader worker ``i mod num_workers``, so **every shard is read by
exactly one (rank, worker) per epoch** and every utterance leaves its stream once.

Positives for the contrastive loss: **two views of each utterance** (``sampler.views: 2``), not
a speaker-aware buffer. A buffer of a few hundred utterances drawn from thousands of speakers
rarely holds K of one speaker, so P x K batches would need speaker-sorted shards (tying K to
the writer and making every shard a few speakers) or long waits that bias the speaker mix;
two views give every row a positive whatever the shard order, buffer size or speaker count,
and each view is its own crop and augmentation draw (as the authors trained, with the shuffle
sampler's ``views: 2``). Same-speaker rows that meet in a batch are positives too. ``views: 1``
(no contrastive loss) gives one row per utterance.

The t-th utterance leaving stream ``i`` of rank ``r`` is made with
``default_rng([seed, e, r, i, t, v])`` for view ``v`` (its speed identity, with new-speaker
speed perturbation, with ``[seed, e, r, i, t]``), by whichever worker owns the stream. The
rank's sequence is the streams' outputs taken round-robin (stream 0's first, stream 1's first,
..., stream 0's second, ...; a finished stream is passed over), reassembled in that order in
the main process whatever order the workers deliver, and cut into batches of ``batch_size``
utterances: the batches depend on ``(seed, epoch, rank)`` only, never on the number of workers
(which should divide ``S`` for an even load). Every rank makes the same number of batches
(:meth:`ShardPlan.steps`, from the shard sizes alone, the same every epoch); the few utterances
past the last batch of a rank wait for the next epoch's shuffle. A resumed epoch (position ``k``)
replays the streams' reads and buffers without decoding the ``k x batch_size`` utterances
already trained on, and gives the batches an uninterrupted run gives from batch ``k``.
"""

from __future__ import annotations

import logging
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from pyspk.data.sampler import EpochState
from pyspk.online.audio import Audio
from pyspk.online.example import ExampleMaker
from pyspk.online.shards import ShardItem, iter_shard

log = logging.getLogger(__name__)

RECENT = 64  # utterances a stream keeps after they leave it, as babble for the next ones


class ShardPlan:
    """Which shards each (epoch, rank, stream) reads, and the epoch's number of batches."""

    def __init__(self, index: dict, seed: int, world_size: int, streams: int, batch_size: int):
        self.index, self.seed, self.world_size = index, seed, world_size
        self.streams, self.batch_size = streams, batch_size
        self.sizes = [int(s["num_utts"]) for s in index["shards"]]

    def shards(self, epoch: int, rank: int, stream: int) -> List[int]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.sizes))
        W, S = self.world_size, self.streams
        return [int(k) for j, k in enumerate(order) if j % W == rank and (j // W) % S == stream]

    def counts(self, epoch: int, rank: int) -> List[int]:
        """Utterances of each stream of ``rank`` in ``epoch``."""
        return [sum(self.sizes[k] for k in self.shards(epoch, rank, i)) for i in range(self.streams)]

    def steps(self) -> int:
        """Batches per epoch on every rank: what the rank with the fewest utterances can make
        whatever the shuffle (the ``floor(#shards / W)`` smallest shards)."""
        fewest = sum(sorted(self.sizes)[: len(self.sizes) // self.world_size])
        return fewest // self.batch_size


def canonical(counts: Sequence[int]) -> Iterator[tuple]:
    """``(stream, t)`` of a rank's sequence: the streams round-robin, finished ones passed over."""
    for t in range(max(counts, default=0)):
        for i, c in enumerate(counts):
            if t < c:
                yield (i, t)


class ShardStreams(torch.utils.data.IterableDataset):
    """The streams of one (epoch, rank); in a loader worker, those the worker owns.

    Yields lists (one per round over the worker's streams) of item dicts: ``i``, ``t``,
    ``feats`` (views, T, F), ``label``, ``utt``, ``shard``, ``worker``.
    """

    def __init__(
        self,
        shards_dir,
        plan: ShardPlan,
        maker: ExampleMaker,
        labels: Dict[str, int],
        epoch: int,
        rank: int,
        skip: Sequence[int],
        views: int,
        buffer: int,
        speed: Sequence[float] = (),
    ):
        self.shards_dir, self.plan, self.maker = Path(shards_dir), plan, maker
        self.labels, self.epoch, self.rank = labels, epoch, rank
        self.skip, self.views, self.buffer, self.speed = list(skip), views, buffer, list(speed)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        k, w = (0, 1) if info is None else (info.id, info.num_workers)
        mine = [self._stream(i, k) for i in range(self.plan.streams) if i % w == k]
        while mine:
            chunk, alive = [], []
            for g in mine:
                try:
                    item = next(g)
                except StopIteration:
                    continue
                alive.append(g)
                if item is not None:
                    chunk.append(item)
            mine = alive
            if chunk:
                yield chunk

    def _stream(self, i: int, worker: int):
        """Stream ``i``: yields its t-th item (None while skipping a resumed epoch's first ones)."""
        seed, e, r = self.plan.seed, self.epoch, self.rank
        rng = np.random.default_rng([seed, e, r, i])
        buf: List[ShardItem] = []
        recent: deque = deque(maxlen=RECENT)
        t = 0
        for k in self.plan.shards(e, r, i):
            for item in iter_shard(self.shards_dir, self.plan.index["shards"][k]):
                buf.append(item)
                if len(buf) >= self.buffer:
                    yield self._emit(buf, recent, rng, i, t, worker)
                    t += 1
        while buf:
            yield self._emit(buf, recent, rng, i, t, worker)
            t += 1

    def _identity(self, i: int, t: int, item: ShardItem):
        """(speaker label name, speed factor or None) of stream ``i``'s t-th utterance."""
        if not self.speed:
            return item.spk, None
        seed, e, r = self.plan.seed, self.epoch, self.rank
        choice = int(np.random.default_rng([seed, e, r, i, t]).integers(len(self.speed) + 1))
        if not choice:
            return item.spk, None
        factor = self.speed[choice - 1]
        return f"sp{factor:g}-{item.spk}", factor

    def _source(self, p: "_Past") -> np.ndarray:
        """The babble source of a past utterance: its first view's region (rebuilt after a resume)."""
        if p.src is None:
            seed, e, r = self.plan.seed, self.epoch, self.rank
            rng = np.random.default_rng([seed, e, r, p.i, p.t, 0])
            p.src = self.maker.source(
                p.item.utt, _shard_audio(p.item, self.maker), rng, self._identity(p.i, p.t, p.item)[1]
            )
        return p.src

    def _emit(self, buf: List[ShardItem], recent: deque, rng, i: int, t: int, worker: int) -> Optional[dict]:
        j = int(rng.integers(len(buf)))
        item = buf[j]
        buf[j] = buf[-1]
        buf.pop()
        past = list(recent)
        entry = _Past(item, i, t)
        recent.append(entry)
        if t < self.skip[i]:
            return None
        seed, e, r = self.plan.seed, self.epoch, self.rank
        spk, factor = self._identity(i, t, item)
        aug, pool = self.maker.aug, None
        if aug is not None:
            others = [p for p in past if p.item.spk != item.spk]
            if others:
                aug.babble_source = lambda token, n, at: _cut(self._source(others[int(token[1:])]), n, at)
            else:  # the start of a stream: the buffer's utterances of other speakers, decoded
                others = [b for b in buf if b.spk != item.spk]
                aug.babble_source = lambda token, n, at: _read_piece(others[int(token[1:])], self.maker, n, at)
            if others:
                pool = lambda g: _buffer_pool(others, g, aug.cfg.babble_max_speakers)  # noqa: E731
        views = self.maker.begin_views(
            item.utt,
            _shard_audio(item, self.maker),
            [np.random.default_rng([seed, e, r, i, t, v]) for v in range(self.views)],
            [factor] * self.views,
            [pool] * self.views,
        )
        entry.src = views[0].src
        feats = np.empty((self.views, self.maker.crop_frames, self.maker.feat_dim), np.float32)
        for v, view in enumerate(views):
            self.maker.end(view, out=feats[v])
        return {
            "i": i,
            "t": t,
            "feats": feats,
            "label": self.labels[spk],
            "utt": item.utt,
            "shard": item.shard,
            "worker": worker,
        }


class _Past:
    """An utterance that left a stream (its t-th), with its babble source once known."""

    __slots__ = ("item", "i", "t", "src")

    def __init__(self, item: ShardItem, i: int, t: int):
        self.item, self.i, self.t, self.src = item, i, t, None


def _cut(src: np.ndarray, n: int, at: float) -> np.ndarray:
    start = int(at * max(0, src.shape[0] - n))
    return src[start : start + n]


def _shard_audio(item: ShardItem, maker: ExampleMaker) -> Audio:
    return Audio(item.utt, f"{item.shard}:{item.utt}.{item.ext}", item.shard, maker.fbank.sample_rate, data=item.data)


def _read_piece(item: ShardItem, maker: ExampleMaker, n: int, at: float) -> np.ndarray:
    with _shard_audio(item, maker) as other:
        return other.read(int(at * max(0, other.open() - n)), n)


def _buffer_pool(others: list, rng: np.random.Generator, max_speakers: int) -> List[str]:
    """Babble candidates: up to 4 x max_speakers of ``others`` (utterances of other speakers)."""
    want = min(4 * max_speakers, len(others))
    if want == 0:
        return []
    return [f"#{int(j)}" for j in sorted(rng.choice(len(others), size=want, replace=False))]


def _identity(x):
    return x


class ShardEpochs(EpochState):
    """The sampler the trainer sees for shards: epoch, position (batches consumed), seed, length."""

    def __init__(self, plan: ShardPlan, seed: int, steps_per_epoch: Optional[int] = None):
        self.plan, self.seed = plan, seed
        bound = plan.steps()
        self.steps = bound if steps_per_epoch is None else min(int(steps_per_epoch), bound)
        if steps_per_epoch is not None and steps_per_epoch > bound:
            log.warning(
                "train.steps_per_epoch = %d but the shards give every rank %d batches per epoch; training %d",
                steps_per_epoch,
                bound,
                bound,
            )
        self.reset_state()
        self.batch_size = plan.batch_size

    def __len__(self) -> int:
        return self.steps


class ShardLoader:
    """Iterating gives the current epoch's remaining batches ``(feats (B V, T, F), labels (B V,))``
    of this rank, B utterances x V views, utterance-major; advances ``epochs.position``."""

    def __init__(
        self,
        shards_dir,
        plan: ShardPlan,
        epochs: ShardEpochs,
        maker: ExampleMaker,
        labels: Dict[str, int],
        rank: int,
        views: int,
        buffer: int,
        num_workers: int = 0,
        speed: Sequence[float] = (),
    ):
        self.shards_dir, self.plan, self.epochs, self.maker = shards_dir, plan, epochs, maker
        self.labels, self.rank, self.views, self.buffer = labels, rank, views, buffer
        self.num_workers, self.speed = num_workers, list(speed)

    def items(self, epoch: int, start: int = 0, stop: Optional[int] = None) -> Iterator[dict]:
        """Items ``[start, stop)`` of the rank's sequence of ``epoch`` (all: ``stop=None``)."""
        counts = self.plan.counts(epoch, self.rank)
        keys = list(canonical(counts))
        stop = len(keys) if stop is None else min(stop, len(keys))
        skip = [0] * len(counts)
        for i, _ in keys[:start]:
            skip[i] += 1
        ds = ShardStreams(
            self.shards_dir,
            self.plan,
            self.maker,
            self.labels,
            epoch,
            self.rank,
            skip,
            self.views,
            self.buffer,
            self.speed,
        )
        if self.num_workers > 0:
            source = iter(
                torch.utils.data.DataLoader(
                    ds, batch_size=None, num_workers=self.num_workers, collate_fn=_identity, persistent_workers=False
                )
            )
        else:
            source = iter(ds)
        pending: Dict[tuple, dict] = {}
        try:
            for key in islice(keys, start, stop):
                while key not in pending:
                    for item in next(source):
                        pending[(item["i"], item["t"])] = item
                yield pending.pop(key)
        finally:
            del source

    def __iter__(self):
        ep = self.epochs
        bs = self.plan.batch_size
        batch: List[dict] = []
        for item in self.items(ep.epoch, ep.position * bs, ep.steps * bs):
            batch.append(item)
            if len(batch) == bs:
                feats = np.concatenate([b["feats"] for b in batch], axis=0)
                labels = np.repeat(np.array([b["label"] for b in batch], dtype=np.int64), self.views)
                ep.position += 1
                batch = []
                yield torch.from_numpy(feats), torch.from_numpy(labels)

    def __len__(self) -> int:
        return max(0, self.epochs.steps - self.epochs.position)
