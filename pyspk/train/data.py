"""The training data of one run: tables of ``--train-dir``, checks, store, sampler, loader.

``--train-dir`` is a Kaldi data dir with ``feats.scp``, ``utt2spk``, ``spk2utt``,
``utt2num_frames`` and optionally ``vad.scp`` and ``utt2orig`` (augmented copy ->
original, written by the augmentation stage). Every check that needs the data
runs here, before the first step: missing tables, utterances without features,
more speakers per batch than the data has, utterances shorter than the crop.
Utterances in which VAD found no voiced frame (digital silence kept as an utterance)
are left out, with one warning giving their number (the choice depends only on the
data, so sampling stays deterministic); a ``sampler.utts_per_speaker`` far above the
speakers' numbers of recordings is warned about with its repetition factor.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from pyspk.data.dataset import check_lengths, make_loader
from pyspk.data.kaldi_dir import DataDirError, read_table
from pyspk.data.sampler import build_sampler, repetition_warning
from pyspk.train.config import Config, ConfigError
from pyspk.train.offline import CropBatchDataset, FeatureStore

log = logging.getLogger(__name__)
FEAT_DIM_GUESS = 80


@dataclass
class TrainData:
    speakers: List[str]
    sampler: object
    dataset: CropBatchDataset
    feat_dim: int
    num_workers: int

    def loader(self):
        return make_loader(self.dataset, self.sampler, self.num_workers)


FINGERPRINT_TABLES = ("feats.scp", "vad.scp", "utt2spk", "utt2orig", "utt2num_frames")


def data_fingerprint(train_dir) -> str:
    """Hash of what training reads from ``train_dir``: its tables and the content of every ark
    that feats.scp/vad.scp point at.  An ark written by a fbank job is represented by that job's
    stamp (:func:`pyspk.features.ark.job_stamp`: the hash of its audio list, augmentation
    recipes and fbank config), so the check is cheap and survives copies; any other ark by
    its size and modification time.  Checkpoints carry it: a changed data dir is not resumed."""
    from pyspk.features.ark import job_stamp, scp_entries

    train_dir = Path(train_dir)
    h = hashlib.sha256()
    arks = set()
    for name in FINGERPRINT_TABLES:
        path = train_dir / name
        if not path.is_file():
            continue
        text = path.read_bytes()
        h.update(name.encode() + b"\0" + hashlib.sha256(text).digest())
        if name.endswith(".scp"):
            arks.update(ark for _, ark, _ in scp_entries(text.decode("utf-8")))
    for ark in sorted(arks):
        p, stamp = Path(ark), job_stamp(ark)
        if stamp is not None and stamp.is_file():
            h.update(f"{ark}\0stamp\0".encode() + stamp.read_bytes())
        elif p.is_file():
            st = p.stat()
            h.update(f"{ark}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        else:
            h.update(f"{ark}\0missing".encode())
    return h.hexdigest()


def _read(train_dir: Path, name: str, required: bool = True) -> Optional[Dict[str, str]]:
    path = train_dir / name
    if not path.is_file():
        if required:
            raise DataDirError(f"{path}: missing (the training dir needs feats.scp, utt2spk, utt2num_frames)")
        return None
    return read_table(path)


def _drop_silent(train_dir: Path, utt2spk: Dict[str, str], rank: int) -> Dict[str, str]:
    """``utt2spk`` without the utterances in which VAD found no voiced frame (read from the
    fbank jobs' lists, :func:`pyspk.features.ark.novoice_utts`); rank 0 warns once with their
    number. Training on them would fail at their first crop: there is no frame to crop."""
    from pyspk.features.ark import novoice_utts

    silent = [u for u in novoice_utts(train_dir) if u in utt2spk]
    if not silent:
        return utt2spk
    if len(silent) == len(utt2spk):
        raise DataDirError(
            f"{train_dir}/vad.scp: VAD found no voiced frame in any of the {len(silent)} "
            f"utterances; check the audio or the vad settings of conf/fbank.yaml"
        )
    if rank == 0:
        shown = ", ".join(silent[:3]) + (", ..." if len(silent) > 3 else "")
        log.warning(
            "%s/vad.scp: %d of %d utterance(s) have no voiced frame after VAD (%s); training leaves them out",
            train_dir,
            len(silent),
            len(utt2spk),
            shown,
        )
    dropped = set(silent)
    return {u: s for u, s in utt2spk.items() if u not in dropped}


def load_train_data(
    train_dir, cfg: Config, seed: int, rank: int = 0, world_size: int = 1, source: str = "<config>"
) -> TrainData:
    """Read and check ``train_dir``; build the feature store, sampler and dataset."""
    train_dir = Path(train_dir)
    feats_scp = _read(train_dir, "feats.scp")
    utt2spk = _read(train_dir, "utt2spk")
    u2nf = {u: int(n) for u, n in _read(train_dir, "utt2num_frames").items()}
    vad_scp = _read(train_dir, "vad.scp", required=False) if cfg.features.vad else None
    utt2orig = _read(train_dir, "utt2orig", required=False)
    missing = [u for u in utt2spk if u not in feats_scp]
    if missing:
        raise DataDirError(
            f"{train_dir}/feats.scp: no features for {len(missing)} utterance(s) of utt2spk, "
            f"e.g. '{missing[0]}'; run utils/fix_data_dir"
        )
    utt2spk = {u: s for u, s in utt2spk.items()}
    if vad_scp:
        utt2spk = _drop_silent(train_dir, utt2spk, rank)
    fc = cfg.features
    if fc.short_utts == "error":
        check_lengths(sorted(utt2spk), u2nf, fc.crop_frames, f"{train_dir}/utt2num_frames")
    nbytes = sum(u2nf.get(u, 0) for u in utt2spk) * FEAT_DIM_GUESS * 2  # float16 in RAM
    in_memory = fc.in_memory == "always" or (fc.in_memory == "auto" and nbytes <= fc.memory_limit_mb * 2**20)
    log.info(
        "%s: %d utterances, %d speakers, %.0f MB of features (%s)",
        train_dir,
        len(utt2spk),
        len(set(utt2spk.values())),
        nbytes / 2**20,
        "in memory" if in_memory else "read on demand",
    )
    store = FeatureStore(
        {u: feats_scp[u] for u in utt2spk}, vad_scp, fc.cmn, fc.cmn_window, in_memory, source=f"{train_dir}/feats.scp"
    )
    if in_memory and fc.short_utts == "error" and vad_scp:
        after_vad = {u: store.num_frames(u) for u in utt2spk}
        check_lengths(sorted(utt2spk), after_vad, fc.crop_frames, f"{train_dir}/feats.scp (after VAD)")
    n_spk = len(set(utt2spk.values()))
    smp = cfg.sampler
    if smp.kind == "pk" and smp.speakers_per_batch > n_spk:
        raise ConfigError(
            f"{source}: key 'sampler.speakers_per_batch' = {smp.speakers_per_batch} but "
            f"{train_dir} has only {n_spk} speakers"
        )
    sampler = build_sampler(
        smp, utt2spk, utt2orig, seed=seed, rank=rank, world_size=world_size, steps_per_epoch=cfg.train.steps_per_epoch
    )
    note = repetition_warning(sampler, f"{source}: {train_dir}: ")
    if note and rank == 0:
        log.warning("%s", note)
    first = sampler.utts[0]
    feat_dim = int(store[first].shape[1])
    dataset = CropBatchDataset(
        store, sampler.utts, sampler.labels, fc.crop_frames, fc.spec_augment, seed=seed, rank=rank
    )
    return TrainData(sampler.speakers, sampler, dataset, feat_dim, cfg.train.num_workers)
