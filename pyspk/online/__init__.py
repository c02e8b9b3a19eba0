"""The online training data path: audio in, augmented fbank crops out, batch by batch.

Offline, stage 2 writes augmented copies and stage 1 their features, and training reads crops
of the arks (:mod:`pyspk.data.dataset`). Online, training reads the audio itself and does the
rest in its loader workers, for each view of each batch: decode the crop (a seek, for WAV and
FLAC), augment it with stage 2's config and recipe code, compute the fbank with the offline
FbankConfig, VAD, CMN, crop, SpecAugment. The disk holds the audio once, and every view is a new
draw. Two sources (``data.source`` of the training config, :class:`OnlineConfig`):

* ``audio``: a Kaldi data dir (``wav.scp`` files or pipes, ``segments``), batches keyed
  ``(epoch, batch_no, indices)`` by the offline samplers (P x K, shuffle, views)
  (:mod:`pyspk.online.dataset`);
* ``shards``: Lhotse Shar shards written by ``pyspk shards`` (:mod:`pyspk.online.shards`), read
  sequentially, one (rank, worker) per shard, through shuffle buffers, with two views per
  utterance as positives (:mod:`pyspk.online.stream`).

Both give the trainer what :func:`pyspk.train.data.load_train_data` gives it (speakers, a
sampler with ``state_dict``/``load_state_dict``/``set_epoch``/``len``, ``feat_dim``,
``loader()`` of ``(feats (B, T, F) float32, labels (B,))``), deterministic per
``(seed, epoch, batch or stream, rank)`` whatever the number of workers, and resumable.
The trainer's glue is one call: :func:`load_online_data`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from pyspk.online.config import OnlineConfig, check_online_config, view_kinds

log = logging.getLogger(__name__)

__all__ = ["OnlineConfig", "OnlineTrainData", "load_online_data", "online_fingerprint", "make_maker"]


@dataclass
class OnlineTrainData:
    """What the trainer reads from :class:`pyspk.train.data.TrainData`, for the online sources."""

    speakers: List[str]
    sampler: object
    dataset: object
    feat_dim: int
    num_workers: int
    make_loader: Callable[[], object]

    def loader(self):
        return self.make_loader()


def noise_context(aug, dc: OnlineConfig, seed: int, sample_rate: int, work_dir=None) -> dict:
    """Stage 2's noise sources (:func:`pyspk.augment.recipes.make_context` without its babble pool
    and durations, which are online's): RIR files or the simulated pool, MUSAN, and the bank of
    synthesised noise and music (:func:`pyspk.online.augment.make_bank`) when MUSAN is not given.
    The pool and the bank are made once, in ``data.rir_dir`` or else ``work_dir``."""
    from pyspk.augment import rir
    from pyspk.online.augment import make_bank

    ctx: dict = {}
    where = dc.rir_dir or work_dir
    need_place = (aug.reverb and not dc.rirs_root) or ((aug.noise or aug.music) and not dc.musan_root)
    if need_place and where is None:
        raise ValueError(
            "data.rir_dir: the simulated RIR pool and noise bank need a directory (or give "
            "data.rirs_root and data.musan_root)"
        )
    if aug.reverb:
        if dc.rirs_root:
            ctx["rirs"] = rir.list_rirs(dc.rirs_root)
        else:
            pool = Path(where).resolve() / f"rir_pool.n{aug.num_rooms}.sr{sample_rate}.seed{seed}.npz"
            if not pool.is_file():
                log.info("simulating %d rooms into %s", aug.num_rooms, pool)
                rir.simulate_pool(pool, aug.num_rooms, sample_rate, seed)
            ctx["rir_pool"] = str(pool)
    if dc.musan_root:
        from pyspk.augment.musan import musan_sources

        ctx["musan"] = musan_sources(dc.musan_root)
    elif aug.noise or aug.music:
        Path(where).mkdir(parents=True, exist_ok=True)
        ctx["synth_bank"] = make_bank(where, aug, sample_rate, seed)
    return ctx


def make_maker(dc: OnlineConfig, features, seed: int, work_dir=None, source: str = "data"):
    """(ExampleMaker, AugmentConfig or None) from the ``data`` and ``features`` sections."""
    from pyspk.augment.config import AugmentConfig
    from pyspk.features.fbank import load_config
    from pyspk.online.augment import OnlineAugmenter
    from pyspk.online.example import ExampleMaker

    for key in ("fbank_config", "augment_config", "musan_root", "rirs_root"):
        path = getattr(dc, key)
        if path and not Path(path).exists():
            raise ValueError(
                f"{source}: key 'data.{key}': {path} does not exist (relative paths are read from {Path.cwd()})"
            )
    fbank = load_config(dc.fbank_config)
    aug = AugmentConfig.from_yaml(dc.augment_config) if dc.augment_config else None
    probs = check_online_config(dc, aug, source)
    augmenter = None
    if aug is not None:
        kinds = view_kinds(aug)
        augmenter = OnlineAugmenter(
            aug, kinds, probs, fbank.sample_rate, noise_context(aug, dc, seed, fbank.sample_rate, work_dir)
        )
    maker = ExampleMaker(
        fbank,
        features.crop_frames,
        features.cmn,
        features.cmn_window,
        features.vad,
        features.spec_augment,
        augmenter,
        dc.scope,
        dc.vad_margin,
    )
    return maker, aug


def load_online_data(
    train_dir, cfg, seed: int, rank: int = 0, world_size: int = 1, source: str = "<config>", work_dir=None
) -> OnlineTrainData:
    """The online counterpart of :func:`pyspk.train.data.load_train_data`.

    ``cfg`` has the training config's sections ``data`` (:class:`OnlineConfig`), ``features``,
    ``sampler`` and ``train``; ``train_dir`` is a Kaldi data dir (``data.source: audio``) or a
    shard directory (``shards``); ``work_dir`` (the experiment dir) keeps the simulated RIR pool
    unless ``data.rir_dir`` says where.
    """
    dc = cfg.data
    if dc.source == "audio":
        return _audio_data(Path(train_dir), cfg, seed, rank, world_size, source, work_dir)
    if dc.source == "shards":
        return _shard_data(Path(train_dir), cfg, seed, rank, world_size, source, work_dir)
    raise ValueError(f"{source}: key 'data.source': '{dc.source}' is read by pyspk.train.data, not pyspk.online")


def _audio_data(train_dir: Path, cfg, seed, rank, world_size, source, work_dir) -> OnlineTrainData:
    import numpy as np

    from pyspk.data.dataset import check_lengths, make_loader
    from pyspk.data.kaldi_dir import DataDirError, read_table
    from pyspk.data.sampler import build_sampler, repetition_warning
    from pyspk.online.audio import AudioTable
    from pyspk.online.dataset import AudioBatchDataset, BabblePool, speed_prefixes, with_speed_speakers

    for name in ("aug.scp", "utt2orig"):
        if (train_dir / name).is_file():
            raise DataDirError(
                f"{train_dir / name}: {train_dir} holds offline augmented copies; online training "
                f"reads the clean set (data/<train>) and augments it itself"
            )
    maker, aug = make_maker(cfg.data, cfg.features, seed, work_dir, source)
    fb = maker.fbank
    table = AudioTable(train_dir, fb.sample_rate, fb.stereo, fb.min_duration_s)
    utt2spk = read_table(train_dir / "utt2spk")
    missing = [u for u in utt2spk if u not in table.index]
    if missing:
        raise DataDirError(
            f"{train_dir}: {len(missing)} utterance(s) of utt2spk have no audio in wav.scp/segments, "
            f"e.g. '{missing[0]}'; run utils/fix_data_dir"
        )
    fc = cfg.features
    if fc.short_utts == "error":
        lengths = _known_frames(train_dir, fb)
        if lengths:
            check_lengths(sorted(utt2spk), lengths, fc.crop_frames, f"{train_dir}/{lengths.source}")
    prefixes = speed_prefixes(aug)
    sampler = build_sampler(
        cfg.sampler,
        with_speed_speakers(utt2spk, prefixes),
        None,
        seed=seed,
        rank=rank,
        world_size=world_size,
        steps_per_epoch=cfg.train.steps_per_epoch,
    )
    note = repetition_warning(sampler, f"{source}: {train_dir}: ")
    if note and rank == 0:
        log.warning("%s", note)
    babble = None
    if aug is not None and aug.babble and "babble" in maker.aug.kinds:
        spk_index = {s: i for i, s in enumerate(sorted(set(utt2spk.values())))}
        spk_of_row = np.array([spk_index.get(utt2spk.get(u), -1) for u in table.utts], dtype=np.int64)
        spk_of_row[spk_of_row < 0] = len(spk_index)  # rows without a speaker: never babble
        babble = BabblePool(table, spk_of_row, aug.babble_max_speakers)
    dataset = AudioBatchDataset(table, sampler.utts, sampler.labels, maker, seed, rank, prefixes, babble)
    nw = cfg.train.num_workers
    log.info(
        "%s: %d utterances, %d speakers, online from audio (%s scope; kinds %s)",
        train_dir,
        len(utt2spk),
        len(sampler.speakers),
        cfg.data.scope,
        ", ".join(maker.aug.kinds) if maker.aug else "clean",
    )
    return OnlineTrainData(
        sampler.speakers, sampler, dataset, maker.feat_dim, nw, lambda: make_loader(dataset, sampler, nw)
    )


class _Lengths(dict):
    source = ""


def _known_frames(train_dir: Path, fb) -> Optional[_Lengths]:
    """Frames per utterance from ``utt2num_frames`` or ``utt2dur`` when the dir has one, else None
    (then lengths are read from the audio, lazily, and a short utterance is repeated)."""
    from pyspk.data.kaldi_dir import read_table
    from pyspk.features.fbank import num_frames

    for name in ("utt2num_frames", "utt2dur"):
        path = train_dir / name
        if path.is_file():
            out = _Lengths()
            out.source = name
            for u, v in read_table(path).items():
                out[u] = int(v) if name == "utt2num_frames" else num_frames(int(round(float(v) * fb.sample_rate)), fb)
            return out
    return None


def _shard_data(shards_dir: Path, cfg, seed, rank, world_size, source, work_dir) -> OnlineTrainData:
    from pyspk.online.shards import read_index
    from pyspk.online.stream import ShardEpochs, ShardLoader, ShardPlan

    dc, smp = cfg.data, cfg.sampler
    index = read_index(shards_dir)
    maker, aug = make_maker(dc, cfg.features, seed, work_dir, source)
    if index["sample_rate"] != maker.fbank.sample_rate:
        raise ValueError(
            f"{shards_dir}: shards hold {index['sample_rate']} Hz audio, the fbank config asks for "
            f"{maker.fbank.sample_rate} Hz; rewrite them with its --fbank-config"
        )
    base = list(index["speakers"])
    speed = []
    if aug is not None and aug.speed and aug.speed_new_speakers:
        speed = [float(f) for f in aug.speed_factors]
    names = set(base) | {f"sp{f:g}-{s}" for f in speed for s in base}
    speakers = sorted(names, key=str.encode)
    labels = {s: i for i, s in enumerate(speakers)}
    contrastive = (
        getattr(cfg, "pair_loss", None) is not None or getattr(getattr(cfg, "loss", None), "con", "none") != "none"
    )
    if contrastive and smp.views < 2:
        raise ValueError(
            f"{source}: key 'sampler.views': shards give a contrastive loss its positives as two views "
            f"of each utterance (pyspk.online.stream); set sampler.views: 2"
        )
    originals = (
        smp.batch_size if (smp.kind == "shuffle" and smp.batch_size) else smp.speakers_per_batch * smp.utts_per_speaker
    )
    if smp.kind == "pk" and rank == 0:
        log.info(
            "shards: batches of %d utterances x %d views from shuffle buffers (sampler.speakers_per_batch x "
            "utts_per_speaker utterances; P x K speaker balance needs data.source: audio)",
            originals,
            smp.views,
        )
    plan = ShardPlan(index, seed, world_size, dc.streams, originals)
    epochs = ShardEpochs(plan, seed, cfg.train.steps_per_epoch)
    if len(epochs) == 0:
        raise ValueError(
            f"{shards_dir}: {len(plan.sizes)} shards of at most {max(plan.sizes)} utterances give some "
            f"of the {world_size} rank(s) fewer than one batch of {originals} utterances per epoch; "
            f"write smaller shards (pyspk shards --shard-size) or use smaller batches"
        )
    nw = cfg.train.num_workers
    if nw > dc.streams or (nw and dc.streams % nw):
        log.warning(
            "train.num_workers = %d does not divide data.streams = %d: some workers do more of the work", nw, dc.streams
        )
    loader = ShardLoader(shards_dir, plan, epochs, maker, labels, rank, smp.views, dc.shuffle_buffer, nw, speed)
    return OnlineTrainData(speakers, epochs, loader, maker.feat_dim, nw, lambda: loader)


FINGERPRINT_TABLES = ("wav.scp", "segments", "utt2spk", "shards.json")


def online_fingerprint(train_dir, dc: OnlineConfig) -> str:
    """Hash of what online training reads (the counterpart of :func:`pyspk.train.data.data_fingerprint`):
    the data dir's audio tables (or the shard index, which lists every shard's size) and the
    contents of the fbank and augmentation configs. The audio files themselves are not hashed."""
    h = hashlib.sha256()
    for name in FINGERPRINT_TABLES:
        p = Path(train_dir) / name
        if p.is_file():
            h.update(name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    for key in ("fbank_config", "augment_config"):
        path = getattr(dc, key)
        h.update(f"{key}\0".encode() + (Path(path).read_bytes() if path else b"-"))
    for key in ("musan_root", "rirs_root", "kind_weights", "scope", "vad_margin", "streams", "shuffle_buffer"):
        h.update(f"{key}\0{getattr(dc, key)!r}\0".encode())
    return h.hexdigest()
