"""Batch samplers over a training data dir: speaker-balanced P x K, and plain shuffle.

Both yield batches as lists of utterance indices (into ``sampler.utts``, the
sorted utterance ids) and are

* **grouped by original utterance**: the augmentation stage writes ``utt2orig``
  (augmented copy -> original). Every original with its copies (and itself, when
  the clean copy is in the dir) forms a group; a draw picks an original, then
  ``views`` different members of its group (``views: 2`` = two differently
  augmented views of the same recording, as the paper's authors trained; with
  ``views: 1`` one random member, so copies act as data augmentation). A copy given
  another speaker (speed perturbation with new speakers, ``sp0.9-<spk>``) is an
  original of that speaker, not a member of its source's group.
* **seeded and epoch-reseeded**: batches of epoch ``e`` depend only on
  ``(seed, e)``; the same seed gives the same batches on any machine.
* **distributed-aware**: the epoch's global batch list is generated identically on
  every rank and rank ``r`` of ``W`` takes batches ``r, r+W, ...``; so ranks get
  disjoint batches and the same number of them.
* **resumable**: ``state_dict()`` holds the epoch and the position (batches
  consumed in it); ``load_state_dict`` + iteration continues from there.

:class:`PKSampler` (the default): each batch holds P distinct speakers x K
originals of each (x views). Speakers are visited in shuffled cycles and each
speaker's originals in shuffled cycles, so every speaker and utterance is seen
about equally often; a speaker with fewer than K originals repeats some (they
still differ by copy and crop). Batch layout: speaker-major, then original, then view.
When the speakers have far fewer originals than K (``utts_per_speaker: 500`` on
speakers of 30 recordings), most of every batch is repeats: the steps cost K crops
and teach what fewer would. :func:`repetition_warning` says so, with the factor; a
warning rather than an error, since a K above some speakers' counts is a fair choice
on small corpora (a contrastive loss needs K >= 2 even for a speaker of one
recording, whose crops and augmented copies still differ).

:class:`ShuffleSampler`: the authors' plain shuffle: originals in a random order,
``batch_size`` at a time, each expanded into ``views`` members of its group.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np


def group_by_original(utts: Sequence[str], utt2orig: Optional[Mapping[str, str]]) -> "OrderedDict[str, List[int]]":
    """Map each original utterance id to the indices (into ``utts``) of its copies.

    Utterances absent from ``utt2orig`` are their own original. Groups and their
    members are sorted, so the result is deterministic.
    """
    groups: Dict[str, List[int]] = {}
    for i, u in enumerate(utts):
        orig = utt2orig.get(u, u) if utt2orig else u
        groups.setdefault(orig, []).append(i)
    return OrderedDict((o, sorted(groups[o])) for o in sorted(groups))


class EpochState:
    """Where a sampler stands: ``epoch``, ``position`` (batches consumed) and ``seed``, saved in
    checkpoints and restored on resume. Subclasses set ``seed`` and call :meth:`reset_state`."""

    def reset_state(self) -> None:
        self.epoch, self.position, self._resumed = 0, 0, False

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` at position 0, or, right after :meth:`load_state_dict`
        of a state in that same epoch, at the loaded position."""
        if not (self._resumed and epoch == self.epoch):
            self.epoch, self.position = epoch, 0
        self._resumed = False

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.seed = int(state.get("seed", self.seed))
        self._resumed = True


class _BaseSampler(EpochState):
    def __init__(
        self,
        utt2spk: Mapping[str, str],
        views: int = 1,
        utt2orig: Optional[Mapping[str, str]] = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        steps_per_epoch: Optional[int] = None,
    ):
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got {views}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.utts = sorted(utt2spk)
        self.speakers = sorted(set(utt2spk.values()))
        spk_index = {s: i for i, s in enumerate(self.speakers)}
        self.labels = np.array([spk_index[utt2spk[u]] for u in self.utts], dtype=np.int64)
        # a group is one original *under one speaker label*: copies made new speakers (speed
        # perturbation's sp0.9-<spk>, Kaldi's convention) are originals of their own speaker
        self.groups: List[np.ndarray] = []
        for members in group_by_original(self.utts, utt2orig).values():
            by_label: Dict[int, List[int]] = {}
            for i in members:
                by_label.setdefault(int(self.labels[i]), []).append(i)
            self.groups += [np.array(by_label[k]) for k in sorted(by_label)]
        self.group_labels = np.array([self.labels[g[0]] for g in self.groups], dtype=np.int64)
        self.views, self.seed = views, seed
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = steps_per_epoch
        self.reset_state()

    # ---- iteration
    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.num_steps()

    def num_steps(self) -> int:
        raise NotImplementedError

    def _epoch_batches(self, rng: np.random.Generator, n: int) -> List[List[int]]:
        raise NotImplementedError

    def _expand(self, origs: Sequence[int], rng: np.random.Generator) -> List[int]:
        """Indices of ``views`` members (distinct where the group allows) of each original."""
        out: List[int] = []
        for g in origs:
            members = self.groups[g]
            if self.views == 1:
                out.append(int(members[rng.integers(len(members))]))
            else:
                pick = rng.choice(len(members), size=2, replace=len(members) < 2)
                out.extend(int(members[j]) for j in pick)
        return out

    def __iter__(self) -> Iterator[List[int]]:
        n = self.num_steps()
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = self._epoch_batches(rng, n * self.world_size)
        mine = batches[self.rank :: self.world_size]
        while self.position < n:
            batch = mine[self.position]
            self.position += 1
            yield batch


class _Cycler:
    """Endless shuffled passes over ``items``; ``take(n)`` returns n distinct items
    (repeats only when there are fewer than n items)."""

    def __init__(self, items: Sequence[int], rng: np.random.Generator):
        self.items, self.rng, self.queue = np.asarray(items), rng, []

    def take(self, n: int) -> List[int]:
        out: List[int] = []
        skipped: List[int] = []
        distinct = len(self.items) >= n
        while len(out) < n:
            if not self.queue:
                self.queue = [int(x) for x in self.rng.permutation(self.items)]
            x = self.queue.pop(0)
            if distinct and x in out:
                skipped.append(x)  # a new pass began mid-batch: keep it for the next batch
                continue
            out.append(x)
        self.queue = skipped + self.queue
        return out


class PKSampler(_BaseSampler):
    """P speakers x K originals (x views) per batch; see the module docstring."""

    def __init__(
        self,
        utt2spk: Mapping[str, str],
        speakers_per_batch: int,
        utts_per_speaker: int,
        views: int = 1,
        utt2orig: Optional[Mapping[str, str]] = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        steps_per_epoch: Optional[int] = None,
    ):
        super().__init__(utt2spk, views, utt2orig, seed, rank, world_size, steps_per_epoch)
        self.P, self.K = speakers_per_batch, utts_per_speaker
        if self.P > len(self.speakers):
            raise ValueError(
                f"sampler.speakers_per_batch = {self.P} but the training data has only {len(self.speakers)} speakers"
            )
        if self.K < 1:
            raise ValueError("sampler.utts_per_speaker must be >= 1")
        self.spk_groups = [np.flatnonzero(self.group_labels == s) for s in range(len(self.speakers))]

    @property
    def batch_size(self) -> int:
        return self.P * self.K * self.views

    def num_steps(self) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return max(1, len(self.groups) // (self.P * self.K * self.world_size))

    def _epoch_batches(self, rng, n):
        spk_cycle = _Cycler(range(len(self.speakers)), rng)
        utt_cycles = [_Cycler(g, rng) for g in self.spk_groups]
        batches = []
        for _ in range(n):
            spks = spk_cycle.take(self.P)
            origs = [g for s in spks for g in utt_cycles[s].take(self.K)]
            batches.append(self._expand(origs, rng))
        return batches


class ShuffleSampler(_BaseSampler):
    """Plain shuffle of the originals, ``batch_size`` per batch (x views)."""

    def __init__(
        self,
        utt2spk: Mapping[str, str],
        batch_size: int,
        views: int = 1,
        utt2orig: Optional[Mapping[str, str]] = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        steps_per_epoch: Optional[int] = None,
    ):
        super().__init__(utt2spk, views, utt2orig, seed, rank, world_size, steps_per_epoch)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.orig_batch = batch_size

    @property
    def batch_size(self) -> int:
        return self.orig_batch * self.views

    def num_steps(self) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return max(1, len(self.groups) // (self.orig_batch * self.world_size))

    def _epoch_batches(self, rng, n):
        order: List[int] = []
        while len(order) < n * self.orig_batch:
            order.extend(int(i) for i in rng.permutation(len(self.groups)))
        return [self._expand(order[b * self.orig_batch : (b + 1) * self.orig_batch], rng) for b in range(n)]


# mean repetition factor from which a warning is given: half of every batch is repeats
REPEAT_WARN = 2.0


def repetition_factor(sampler: "PKSampler") -> float:
    """How many times, on average over speakers (the sampler visits them equally), a batch draws
    each original it takes: ``mean_s max(1, K / originals_s)``; 1.0 when no speaker repeats."""
    counts = np.array([len(g) for g in sampler.spk_groups], dtype=np.float64)
    return float(np.mean(np.maximum(1.0, sampler.K / np.maximum(counts, 1.0))))


def repetition_warning(sampler, where: str = "") -> Optional[str]:
    """A one-line warning when a P x K sampler's K is well above its speakers' numbers of
    original utterances (repetition factor >= :data:`REPEAT_WARN`), else None."""
    if not isinstance(sampler, PKSampler):
        return None
    factor = repetition_factor(sampler)
    if factor < REPEAT_WARN:
        return None
    counts = sorted(len(g) for g in sampler.spk_groups)
    median = counts[len(counts) // 2]
    return (
        f"{where}sampler.utts_per_speaker = {sampler.K} but the speakers have a median of {median} original "
        f"utterances (fewest {counts[0]}): each batch draws their originals {factor:.1f}x on average (the same "
        f"recordings in other crops), {factor:.1f}x the compute for the recordings it sees; "
        f"utts_per_speaker: {max(2, median)} or less avoids it"
    )


def build_sampler(cfg, utt2spk, utt2orig=None, seed=0, rank=0, world_size=1, steps_per_epoch=None):
    """A sampler from a :class:`pyspk.train.config.SamplerConfig`."""
    if cfg.kind == "pk":
        return PKSampler(
            utt2spk,
            cfg.speakers_per_batch,
            cfg.utts_per_speaker,
            cfg.views,
            utt2orig,
            seed,
            rank,
            world_size,
            steps_per_epoch,
        )
    bs = cfg.batch_size or cfg.speakers_per_batch * cfg.utts_per_speaker
    return ShuffleSampler(utt2spk, bs, cfg.views, utt2orig, seed, rank, world_size, steps_per_epoch)
