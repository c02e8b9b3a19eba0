"""The augmentation stage: copies of DATA_DIR, their features, and the combined set.

    make_augmented(data_dir, fbank_root, out_dir, cfg, fbank_config, nj, cmd, seed, ...)

For each enabled kind K it writes ``DATA_DIR_K`` (:mod:`pyspk.augment.recipes`), runs
the fbank stage (:mod:`pyspk.stages.fbank`) on it into ``FBANK_ROOT/<basename>_K``
(recipes applied on the fly in the jobs, so the copy is resumable like any set), then
combines the clean set (whose feats.scp must exist) with every copy into ``out_dir``.

With ``subset`` N > 0 (Kaldi's egs/voxceleb/v2, which adds a random 1M of its 4M augmented
utterances to the clean set), N of all the copies' utterances are drawn with the seed
(:func:`pyspk.augment.combine.draw_subset`) before anything is computed: each copy holds only
its drawn utterances, and only their features are computed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from pyspk.augment.combine import combine_dirs, draw_subset
from pyspk.augment.config import AugmentConfig
from pyspk.augment.recipes import copy_utts, make_context, write_copy
from pyspk.data.kaldi_dir import DataDirError
from pyspk.features.fbank import load_config
from pyspk.stages.fbank import make_fbank

log = logging.getLogger(__name__)


def make_augmented(
    data_dir,
    fbank_root,
    out_dir,
    cfg: AugmentConfig,
    fbank_config: Optional[str],
    nj: int,
    cmd: str,
    seed: int,
    musan_root: Optional[str] = None,
    rirs_root: Optional[str] = None,
    force: bool = False,
    skip_bad: bool = False,
    compress: Optional[bool] = None,
    subset: int = 0,
) -> dict:
    """Run the stage; return the combined directory's counts. ``compress`` overrides the fbank
    config's; ``subset`` > 0: only that many augmented utterances, drawn over every copy."""
    data_dir, fbank_root, out_dir = Path(data_dir), Path(fbank_root), Path(out_dir)
    if not (data_dir / "feats.scp").is_file():
        raise DataDirError(f"{data_dir / 'feats.scp'}: not found; run the fbank stage on {data_dir} first")
    sample_rate = load_config(fbank_config).sample_rate
    base = data_dir.name
    ctx = make_context(data_dir, cfg, seed, fbank_root / f"{base}_rirs", sample_rate, musan_root, rirs_root)
    keep = None  # copy -> its utterances drawn; None: all of them
    if subset:
        copies = {kind: copy_utts(data_dir, kind, cfg) for kind in cfg.kinds()}
        total = sum(map(len, copies.values()))
        if subset < total:
            keep = draw_subset(copies, subset, seed)
            log.info(
                "subset: %d of the %d augmented utterances (%s)",
                subset,
                total,
                ", ".join(f"{kind} {len(utts)}" for kind, utts in keep.items()),
            )
        else:
            log.warning("subset %d: the copies have %d utterances in all; every one is used", subset, total)
    parts = [data_dir]
    for kind in cfg.kinds():
        copy_dir = data_dir.parent / f"{base}_{kind}"
        if keep is not None and not keep[kind]:
            log.info("augmented copy %s: none of its utterances drawn; skipped", kind)
            continue
        log.info("augmented copy %s -> %s", kind, copy_dir)
        write_copy(data_dir, copy_dir, kind, cfg, seed, ctx, None if keep is None else keep[kind])
        make_fbank(copy_dir, fbank_root / f"{base}_{kind}", fbank_config, nj, cmd, force, skip_bad, compress)
        parts.append(copy_dir)
    counts = combine_dirs(parts, out_dir)
    log.info("combined %s: %d utterances, %d speakers", out_dir, counts["utts"], counts["speakers"])
    return counts
