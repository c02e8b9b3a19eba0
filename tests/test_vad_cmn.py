"""Energy VAD (Kaldi compute-vad) and read-time CMN (load_features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyspk.features.cmvn import apply_cmn, sliding_mean, utterance_mean
from pyspk.features.fbank import FbankConfig, compute_fbank_energy
from pyspk.features.reader import load_features
from pyspk.features.vad import compute_vad, vad_from_config


def vad_loop(e, thr, scale, ctx, prop):
    """Kaldi's compute-vad loop, written directly."""
    t_final = thr + scale * (sum(e) / len(e))
    out = []
    for t in range(len(e)):
        num = den = 0
        for t2 in range(t - ctx, t + ctx + 1):
            if 0 <= t2 < len(e):
                den += 1
                num += e[t2] > t_final
        out.append(1.0 if num >= den * prop else 0.0)
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize("ctx,prop,scale", [(0, 0.6, 0.5), (2, 0.12, 0.5), (3, 0.5, 0.0)])
def test_vad_matches_kaldi_loop(ctx, prop, scale):
    e = np.random.default_rng(ctx).uniform(0, 20, size=257)
    np.testing.assert_array_equal(compute_vad(e, 5.5, scale, ctx, prop), vad_loop(e, 5.5, scale, ctx, prop))
    assert compute_vad(np.zeros(0)).shape == (0,)


def test_vad_separates_speech_from_silence():
    rng = np.random.default_rng(0)
    wave = np.concatenate(
        [0.1 * rng.standard_normal(16000), 1e-4 * rng.standard_normal(16000), 0.1 * rng.standard_normal(16000)]
    ).astype(np.float32)
    cfg = FbankConfig(vad=True)
    feats, energy = compute_fbank_energy(wave, 16000, cfg)
    vad = vad_from_config(energy, cfg)
    assert feats.shape == (300, 80) and energy.shape == (300,)
    assert vad[:95].all() and vad[205:].all() and not vad[110:190].any()
    # the raw log energy is Kaldi's: log sum of squared int16-scale samples (DC removed)
    frame = wave[1600 - 120 : 1600 - 120 + 400] * 32768.0  # frame 10 starts at 10*160 - (400-160)//2
    frame = frame - frame.mean()
    assert abs(energy[10] - np.log(np.sum(frame.astype(np.float64) ** 2))) < 1e-3


def test_load_features_vad_then_cmn():
    rng = np.random.default_rng(1)
    feats = rng.normal(5.0, 2.0, size=(50, 4)).astype(np.float32)
    vad = (np.arange(50) % 3 != 0).astype(np.float32)
    out = load_features(feats, cmn=True, vad=vad)
    kept = feats[vad > 0.5]
    np.testing.assert_allclose(out, kept - kept.mean(0), atol=1e-5)
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)
    np.testing.assert_array_equal(load_features(feats, cmn=False), feats)
    assert load_features(feats, cmn=False, vad=vad).shape == (kept.shape[0], 4)


def test_sliding_cmn_matches_brute_force():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(40, 3)).astype(np.float32)
    w = 9
    want = np.empty_like(feats)
    for t in range(40):
        start = min(max(t - w // 2, 0), 40 - w)
        want[t] = feats[t] - feats[start : start + w].mean(0)
    np.testing.assert_allclose(load_features(feats, cmn_window=w), want, atol=1e-5)
    np.testing.assert_allclose(sliding_mean(feats, 100), np.broadcast_to(feats.mean(0), feats.shape), atol=1e-6)
    np.testing.assert_allclose(apply_cmn(feats, None), feats - feats.mean(0), atol=1e-6)


def test_load_features_rejects_bad_input():
    feats = np.ones((5, 2), np.float32)
    with pytest.raises(ValueError, match="features have 5"):
        load_features(feats, vad=np.ones(4))
    with pytest.raises(ValueError, match="no frame"):
        load_features(feats, vad=np.zeros(5))
    bad = feats.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        load_features(bad)
    with pytest.raises(ValueError, match="2-D"):
        load_features(np.ones(5))
    for v in (np.inf, -np.inf):
        bad[2, 1] = v
        with pytest.raises(ValueError, match="inf"):
            load_features(bad, cmn=False)
    huge = np.full((4, 2), 3e38, np.float32)  # finite, but its float32 sum overflows
    assert np.array_equal(load_features(huge, cmn=False), huge)


def _reference_batch(store, utts, indices, crop, spec, seed, key):
    """What the loader computed before it cropped first: the whole processed utterance,
    then the crop, then SpecAugment on a copy, then the stack."""
    from pyspk.data.dataset import random_crop, spec_augment

    rng = np.random.default_rng([seed, key[0], key[1], 0])
    out = []
    for i in indices:
        x = random_crop(store[utts[i]], crop, rng)
        if spec is not None:
            x = spec_augment(x, rng, spec.time_masks, spec.time_width, spec.freq_masks, spec.freq_width)
        out.append(x)
    return np.stack(out).astype(np.float32, copy=False)


@pytest.mark.parametrize("in_memory", [False, True])
@pytest.mark.parametrize("vad", [False, True])
@pytest.mark.parametrize("cmn,window", [(True, None), (True, 30), (False, None)])
@pytest.mark.parametrize("spec", [False, True])
def test_loader_crops_equal_whole_utterance_processing(tmp_path, in_memory, vad, cmn, window, spec):
    """The loader crops before it normalises (FeatureStore.crop) and masks in the batch: the
    same bits, from the same random draws, as processing each whole utterance first; crops
    longer than some utterances (tiled) included."""
    from toydata import make_toy_train_dir

    from pyspk.data.kaldi_dir import read_table
    from pyspk.train.config import SpecAugmentConfig
    from pyspk.train.offline import CropBatchDataset, FeatureStore

    d = make_toy_train_dir(
        tmp_path / "d", num_speakers=3, utts_per_speaker=4, num_frames=60, feat_dim=8, vad=vad, frame_jitter=40
    )
    feats = read_table(d / "feats.scp")
    vad_scp = read_table(d / "vad.scp") if vad else None
    store = FeatureStore(feats, vad_scp, cmn, window, in_memory)
    utts = sorted(feats)
    sa = SpecAugmentConfig(enabled=True, time_masks=2, time_width=5, freq_masks=1, freq_width=3) if spec else None
    lengths = sorted(store[u].shape[0] for u in utts)
    crop = lengths[len(lengths) // 2]
    assert lengths[0] < crop < lengths[-1]  # both the tiled and the plain crop are met
    ds = CropBatchDataset(store, utts, list(range(len(utts))), crop, sa, seed=7)
    for key in [(0, 0, tuple(range(len(utts)))), (1, 3, (5, 0, 5, 11))]:
        got, labels = ds[key]
        ref = _reference_batch(store, utts, key[2], crop, sa, 7, key)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        assert np.array_equal(got.numpy(), ref)
        assert labels.tolist() == list(key[2])


def test_the_offline_store_reads_compressed_features(tmp_path):
    """--compress-feats true: FeatureStore reads Kaldi compressed arks (pyspk's reader, Kaldi's
    decoding) through the same VAD, CMN and crops; what differs from float32 arks is the
    quantisation alone."""
    from toydata import make_toy_train_dir

    from pyspk.data.arkread import ArkReader
    from pyspk.data.kaldi_dir import read_table
    from pyspk.train.offline import CropBatchDataset, FeatureStore

    stores = {}
    for compress in (False, True):
        d = make_toy_train_dir(
            tmp_path / f"c{compress}",
            num_speakers=3,
            utts_per_speaker=4,
            num_frames=60,
            feat_dim=8,
            vad=True,
            frame_jitter=40,
            compress=compress,
        )
        assert ((d / "feats.ark").read_bytes().count(b"\0BCM ") == 12) == compress
        feats, vad = read_table(d / "feats.scp"), read_table(d / "vad.scp")
        stores[compress] = FeatureStore(feats, vad, cmn=True, in_memory=False)
    store, reader, utts = stores[True], ArkReader(), sorted(feats)
    for u in utts:
        want = load_features(reader(feats[u]), vad=reader(vad[u]))
        np.testing.assert_array_equal(store[u], want)
        diff = np.abs(store[u] - stores[False][u])
        assert diff.max() < 0.1 and diff.mean() < 0.02, u  # toy columns span ~8: steps of <= 8 / 63
    key = (0, 0, tuple(range(len(utts))))
    got, _ = CropBatchDataset(store, utts, list(range(len(utts))), 50, None, seed=7)[key]
    np.testing.assert_array_equal(got.numpy(), _reference_batch(store, utts, key[2], 50, None, 7, key))


def test_utterance_mean_has_the_bits_of_numpy_mean():
    """utterance_mean sums a float64 copy over the frame count; it must give
    np.mean(dtype=float64)'s bits (what it computed before, and what the arks' users got) at
    every length, pairwise-summation block sizes and long utterances included."""
    rng = np.random.default_rng(5)
    for t in (1, 7, 8, 9, 127, 128, 129, 1000, 4097, 70000):
        x = (rng.standard_normal((t, 80)) * 4 + rng.standard_normal(80) * 3).astype(np.float32)
        numpy_mean = x.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        assert np.array_equal(utterance_mean(x), numpy_mean), t


def _one_utterance_arks(tmp_path, utt, feats, vad):
    """feats.scp and vad.scp tables (utt -> ark:offset) of one utterance written with kaldiio."""
    import kaldiio

    tables = []
    for name, m in (("f", feats), ("v", vad)):
        with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/{name}.ark,{tmp_path}/{name}.scp") as w:
            w(utt, m)
        tables.append(dict(line.split() for line in open(f"{tmp_path}/{name}.scp")))
    return tables


@pytest.mark.parametrize(
    "damage, message",
    [
        ("nan_voiced", "NaN or inf"),
        ("inf_voiced", "NaN or inf"),
        ("vad_length", "vad has 59 frames"),
        ("no_voiced", "VAD kept no frame"),
        ("not_2d", "2-D"),
    ],
)
def test_on_demand_crop_rejects_bad_features_naming_the_utterance(tmp_path, damage, message):
    from pyspk.train.offline import FeatureStore

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(60, 4)).astype(np.float32)
    vad = (np.arange(60) % 3 != 0).astype(np.float32)
    if damage == "nan_voiced":
        feats[1, 2] = np.nan  # frame 1 is voiced
    elif damage == "inf_voiced":
        feats[2, 0] = -np.inf
    elif damage == "vad_length":
        vad = vad[:59]
    elif damage == "no_voiced":
        vad[:] = 0
    elif damage == "not_2d":
        feats = feats[:, 0].copy()
    scp, vscp = _one_utterance_arks(tmp_path, "spk1-u1", feats, vad)
    store = FeatureStore(scp, vscp, cmn=True, in_memory=False, source=f"{tmp_path}/feats.scp")
    with pytest.raises(ValueError, match=message) as e:
        store.crop("spk1-u1", 10, np.random.default_rng(1))
    assert "utterance 'spk1-u1'" in str(e.value) and "feats.scp" in str(e.value)


def test_on_demand_crop_ignores_nan_in_frames_vad_drops(tmp_path):
    """A NaN in an unvoiced frame is never read by training: the crop path does not stop on it
    (the check is on the mean of the frames it reads); a NaN in a voiced frame does."""
    from pyspk.train.offline import FeatureStore

    feats = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    vad = (np.arange(60) % 3 != 0).astype(np.float32)
    feats[0, 1] = np.nan  # frame 0 is unvoiced
    store = FeatureStore(*_one_utterance_arks(tmp_path, "u", feats, vad), in_memory=False)
    x = store.crop("u", 20, np.random.default_rng(1))
    voiced = feats[vad > 0.5]
    start = int(np.random.default_rng(1).integers(0, voiced.shape[0] - 20 + 1))
    np.testing.assert_allclose(x, voiced[start : start + 20] - voiced.mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="NaN"):  # reading the whole matrix (extraction, in_memory) checks all
        store["u"]
