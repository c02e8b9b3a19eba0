"""P x K and shuffle samplers: structure, ranks, seeds, resume, views via utt2orig."""

from collections import Counter

import numpy as np
import pytest

from pyspk.data.sampler import PKSampler, ShuffleSampler, build_sampler, group_by_original
from pyspk.train.config import SamplerConfig


def corpus(num_spk=10, utts=6, copies=0, uneven=False):
    utt2spk, utt2orig = {}, {}
    for s in range(num_spk):
        for u in range(utts - (s % 3 if uneven else 0)):
            orig = f"s{s:02d}-u{u:02d}"
            utt2spk[orig] = f"s{s:02d}"
            for c in range(copies):
                utt2spk[f"{orig}-aug{c}"] = f"s{s:02d}"
                utt2orig[f"{orig}-aug{c}"] = orig
    return utt2spk, utt2orig


def epoch_batches(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler]


def test_pk_structure():
    utt2spk, _ = corpus(num_spk=10, utts=6, uneven=True)
    s = PKSampler(utt2spk, speakers_per_batch=4, utts_per_speaker=3, seed=1)
    batches = epoch_batches(s)
    assert len(batches) == len(s) == (10 * 6 - 10) // 12
    for b in batches:
        assert len(b) == 12 and len(set(b)) == 12  # no utterance twice in a batch
        labels = s.labels[b]
        counts = Counter(labels.tolist())
        assert len(counts) == 4 and set(counts.values()) == {3}
        # speaker-major layout: each run of K indices is one speaker
        assert all(len(set(labels[i : i + 3])) == 1 for i in range(0, 12, 3))


def test_pk_visits_speakers_evenly_over_an_epoch():
    utt2spk, _ = corpus(num_spk=12, utts=8)
    s = PKSampler(utt2spk, 4, 2, seed=3, steps_per_epoch=30)
    counts = Counter(int(s.labels[i]) for b in epoch_batches(s) for i in b)
    assert len(counts) == 12 and max(counts.values()) - min(counts.values()) <= 2 * 2


def test_speaker_with_fewer_than_k_utterances_repeats():
    utt2spk = {"a1": "a", "b1": "b", "b2": "b", "b3": "b"}
    s = PKSampler(utt2spk, 2, 3, seed=0, steps_per_epoch=3)
    for b in epoch_batches(s):
        assert Counter(s.labels[b].tolist()) == {0: 3, 1: 3}


def test_seeded_and_epoch_reseeded():
    utt2spk, _ = corpus()
    a = PKSampler(utt2spk, 3, 2, seed=7)
    b = PKSampler(utt2spk, 3, 2, seed=7)
    c = PKSampler(utt2spk, 3, 2, seed=8)
    assert epoch_batches(a, 0) == epoch_batches(b, 0)
    assert epoch_batches(a, 0) != epoch_batches(c, 0)
    assert epoch_batches(a, 1) != epoch_batches(b, 0)
    assert epoch_batches(a, 1) == epoch_batches(b, 1)


@pytest.mark.parametrize("kind", ["pk", "shuffle"])
def test_ranks_get_disjoint_batches_of_the_same_count(kind):
    utt2spk, utt2orig = corpus(num_spk=10, utts=8, copies=1)
    cfg = SamplerConfig(kind=kind, speakers_per_batch=3, utts_per_speaker=2, views=2)
    single = build_sampler(cfg, utt2spk, utt2orig, seed=5, world_size=1, steps_per_epoch=6)
    ranks = [build_sampler(cfg, utt2spk, utt2orig, seed=5, rank=r, world_size=3, steps_per_epoch=2) for r in range(3)]
    per_rank = [epoch_batches(r) for r in ranks]
    assert [len(b) for b in per_rank] == [2, 2, 2]
    # rank r holds global batches r, r+3, ...: the same 6 batches as one process, interleaved
    interleaved = [per_rank[i % 3][i // 3] for i in range(6)]
    assert interleaved == epoch_batches(single)
    keys = [tuple(b) for r in per_rank for b in r]
    assert len(set(keys)) == 6


def test_default_epoch_length_splits_over_ranks():
    utt2spk, _ = corpus(num_spk=10, utts=12)
    one = PKSampler(utt2spk, 2, 3, seed=0)
    two = PKSampler(utt2spk, 2, 3, seed=0, rank=1, world_size=2)
    assert len(one) == 120 // 6 and len(two) == 120 // 12  # same total per epoch


def test_resume_mid_epoch():
    utt2spk, _ = corpus()
    full = epoch_batches(PKSampler(utt2spk, 3, 2, seed=2), epoch=4)
    s = PKSampler(utt2spk, 3, 2, seed=2)
    s.set_epoch(4)
    it = iter(s)
    first = [next(it), next(it)]
    state = s.state_dict()
    assert state["epoch"] == 4 and state["position"] == 2
    r = PKSampler(utt2spk, 3, 2, seed=0)  # seed comes from the state
    r.load_state_dict(state)
    r.set_epoch(4)  # same epoch: position kept
    assert first + [list(b) for b in r] == full


def test_views_draw_two_different_copies_of_one_original():
    utt2spk, utt2orig = corpus(num_spk=6, utts=4, copies=2)
    s = PKSampler(utt2spk, 3, 2, views=2, utt2orig=utt2orig, seed=0, steps_per_epoch=10)
    assert s.batch_size == 12
    for b in epoch_batches(s):
        assert len(b) == 12
        for i in range(0, 12, 2):
            u, v = s.utts[b[i]], s.utts[b[i + 1]]
            assert u != v and u.split("-aug")[0] == v.split("-aug")[0]
        origs = [s.utts[i].split("-aug")[0] for i in b[::2]]
        assert len(set(origs)) == 6  # K distinct originals per speaker


def test_views_one_uses_copies_as_augmentation():
    utt2spk, utt2orig = corpus(num_spk=4, utts=3, copies=2)
    s = PKSampler(utt2spk, 2, 3, views=1, utt2orig=utt2orig, seed=0, steps_per_epoch=20)
    drawn = {s.utts[i] for b in epoch_batches(s) for i in b}
    assert any("-aug" in u for u in drawn) and any("-aug" not in u for u in drawn)
    assert len(s.groups) == 12  # grouped by original: 4 speakers x 3


def test_group_by_original_and_speaker_consistency():
    groups = group_by_original(["a", "a-r", "b"], {"a-r": "a"})
    assert groups == {"a": [0, 1], "b": [2]}
    # a copy made a new speaker (speed perturbation, sp0.9-<spk>) is an original of its own speaker
    u2s = {"a": "x", "a-r": "x", "sp0.9-a": "sp0.9-x", "b": "y", "sp0.9-b": "sp0.9-y"}
    s = PKSampler(u2s, 2, 1, utt2orig={"a-r": "a", "sp0.9-a": "a", "sp0.9-b": "b"}, steps_per_epoch=8)
    members = sorted(sorted(s.utts[i] for i in g) for g in s.groups)
    assert members == [["a", "a-r"], ["b"], ["sp0.9-a"], ["sp0.9-b"]]
    assert all(len({s.labels[i] for i in g}) == 1 for g in s.groups)
    assert {s.speakers[s.labels[i]] for b in epoch_batches(s) for i in b} == set(u2s.values())


def test_too_many_speakers_per_batch_is_an_error():
    utt2spk, _ = corpus(num_spk=3)
    with pytest.raises(ValueError, match="speakers_per_batch = 4 .* only 3 speakers"):
        PKSampler(utt2spk, 4, 2)


def test_shuffle_sampler_is_a_permutation_of_originals():
    utt2spk, utt2orig = corpus(num_spk=5, utts=4, copies=1)
    s = ShuffleSampler(utt2spk, batch_size=4, views=2, utt2orig=utt2orig, seed=3)
    batches = epoch_batches(s)
    assert len(batches) == 20 // 4 and all(len(b) == 8 for b in batches)
    origs = [s.utts[b[i]].split("-aug")[0] for b in batches for i in range(0, 8, 2)]
    assert sorted(origs) == sorted(set(origs)) and len(origs) == 20  # each original once
    plain = ShuffleSampler(utt2spk, batch_size=4, seed=3)
    labels = np.concatenate([plain.labels[b] for b in epoch_batches(plain)])
    assert len(labels) == 40 and Counter(labels.tolist()) == {i: 8 for i in range(5)}
