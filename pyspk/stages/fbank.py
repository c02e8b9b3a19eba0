"""The fbank stage (Kaldi ``make_fbank.sh``): split, run jobs via ``$cmd``, merge.

    make_fbank(data_dir, fbank_dir, config_path, nj, cmd)

1. splits ``data_dir/wav.scp`` (or ``segments``) into ``nj`` contiguous parts
   (``fbank_dir/split/wav.J.scp`` [``segments.J``]);
2. runs every job that does not verify (:func:`verify_job`: its stamp holds the hash of its
   split, its augmentation recipes and the config, and its arks are whole) through the
   queue script (:class:`pyspk.jobs.JobSet`): ``CMD JOB=a:b fbank_dir/log/fbank.JOB.log
   python -m pyspk.bin.fbank --job JOB ...`` (one call per contiguous range of pending jobs);
   a job (:func:`run_job`) reads its audio, applies the augmentation recipe of each
   utterance that ``aug.scp`` gives one (:mod:`pyspk.augment.apply`), computes features and
   writes the files of :mod:`pyspk.features.ark`;
3. merges the job scps into ``data_dir/feats.scp``, ``utt2num_frames`` (and
   ``vad.scp``), each written atomically.

A failed job makes :class:`StageError` name its log.  With ``skip_bad`` the skipped
utterances (listed in ``data_dir/bad_utts`` with their reason) are removed from the
data directory's per-utterance tables, as Kaldi's fix_data_dir.sh would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from pyspk.augment.apply import RecipeApplier, read_recipes, recipe_lines
from pyspk.data.dir_edit import commit_staged, staged_dir
from pyspk.data.kaldi_dir import (
    DataDirError,
    check_table_entries,
    read_table,
    utt2spk_to_spk2utt,
    validate_data_dir,
    write_table,
)
from pyspk.features.ark import check_outputs, job_files, novoice_utts, read_split, write_arks
from pyspk.features.audio import AudioError, read_audio_rate, slice_segment
from pyspk.features.fbank import FbankConfig, compute_fbank_energy
from pyspk.features.vad import vad_from_config
from pyspk.io import atomic_write_text
from pyspk.jobs import JobSet, StageError, concat, num_jobs, signature, split_lines, write_if_changed
from pyspk.malloc import keep_freed_memory

__all__ = ["StageError", "job_signature", "make_fbank", "merge", "run_job", "verify_job", "write_splits"]

log = logging.getLogger(__name__)

PER_UTT_TABLES = (
    "wav.scp",
    "segments",
    "utt2spk",
    "utt2lang",
    "utt2orig",
    "utt2genre",
    "utt2dur",
    "utt2gender",
    "text",
    "aug.scp",
)


def jobs_of(fbank_dir) -> JobSet:
    """The fbank jobs writing into ``fbank_dir`` (their stamps ``.done.feats.J``, logs ``log/fbank.J.log``)."""
    return JobSet(Path(fbank_dir).resolve(), "fbank", "pyspk.bin.fbank", "fbank", "feats")


def job_signature(split_text: str, recipes_text: str, config: FbankConfig) -> str:
    """Hash of everything a job's output depends on (its wav.scp lines, recipes, config).
    ``compress`` counts only when on, so jobs written before that option still verify."""
    settings = dict(config.__dict__)
    if not settings["compress"]:
        del settings["compress"]
    return signature(split_text, recipes_text, json.dumps(settings, sort_keys=True))


def verify_job(fbank_dir, job: int, signature: str, vad: bool) -> str:
    """'' when job ``job`` is complete and consistent with ``signature``; else why not."""
    return jobs_of(fbank_dir).stamp_check(job, signature) or check_outputs(fbank_dir, job, vad)


def write_splits(data_dir: Path, fbank_dir: Path, nj: int) -> List[str]:
    """Write ``split/wav.J.scp`` (+ ``split/segments.J``), only where their content changed.

    Returns the split texts that the job signatures hash (see :func:`read_split`).
    """
    wav = read_table(data_dir / "wav.scp")  # sorted, unique keys, or a clear error
    seg_path = data_dir / "segments"
    segments = read_table(seg_path) if seg_path.is_file() else None
    keys = list(segments if segments is not None else wav)
    for j, part in enumerate(split_lines(keys, nj), 1):
        p = job_files(fbank_dir, j)
        if segments is None:
            write_if_changed(p["split"], "".join(f"{u} {wav[u]}\n" for u in part))
            with contextlib.suppress(FileNotFoundError):
                p["segments"].unlink()
            continue
        recs = sorted({segments[u].split()[0] for u in part}, key=str.encode)
        missing = [r for r in recs if r not in wav]
        if missing:
            raise DataDirError(f"{seg_path}: recording '{missing[0]}' is not in {data_dir / 'wav.scp'}")
        write_if_changed(p["split"], "".join(f"{r} {wav[r]}\n" for r in recs))
        write_if_changed(p["segments"], "".join(f"{u} {segments[u]}\n" for u in part))
    return [read_split(fbank_dir, j)[1] for j in range(1, nj + 1)]


def merge(data_dir: Path, fbank_dir: Path, nj: int, vad: bool) -> Dict[str, str]:
    """Concatenate job outputs into the data directory; return the skipped {utt: reason}."""
    parts = {"feats.scp": "scp", "utt2num_frames": "frames", "bad_utts": "bad"}
    if vad:
        parts["vad.scp"] = "vad_scp"
    texts = {name: concat(job_files(fbank_dir, j)[key] for j in range(1, nj + 1)) for name, key in parts.items()}
    bad = dict(ln.split(None, 1) for ln in texts["bad_utts"].splitlines())
    if bad:
        # The data dir is edited in place: build and validate the new tables beside it
        # first, so a result that is not a data dir (every utterance bad) changes nothing.
        with staged_dir(data_dir, link_existing=True) as tmp:
            try:
                _drop_utts(tmp, set(bad))
                for name, text in texts.items():
                    atomic_write_text(tmp / name, text)
                if not vad and (tmp / "vad.scp").exists():
                    (tmp / "vad.scp").unlink()
                validate_data_dir(tmp, check_files=False, need_wav=False, need_feats=True, check_trials=False)
            except DataDirError as e:
                raise StageError(
                    f"{data_dir}: after skipping {len(bad)} bad utterance(s) (first: "
                    f"{next(iter(bad))}: {next(iter(bad.values())).strip()}) it would not be a valid "
                    f"data dir; nothing was changed: {str(e).replace(str(tmp), str(data_dir))}"
                ) from None
            commit_staged(tmp, data_dir)
    for name, text in texts.items():
        if name == "bad_utts" and not text:
            with contextlib.suppress(FileNotFoundError):
                (data_dir / name).unlink()
            continue
        path = data_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
    if not vad:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / "vad.scp").unlink()
    return bad


def _drop_utts(data_dir: Path, bad: set) -> None:
    for name in PER_UTT_TABLES:
        path = data_dir / name
        if path.is_file():
            table = read_table(path)
            if bad & set(table):
                write_table(path, {u: v for u, v in table.items() if u not in bad})
    utt2spk = read_table(data_dir / "utt2spk")
    write_table(data_dir / "spk2utt", utt2spk_to_spk2utt(utt2spk))


def make_fbank(
    data_dir,
    fbank_dir,
    config_path: Optional[str],
    nj: int,
    cmd: str,
    force: bool = False,
    skip_bad: bool = False,
    compress: Optional[bool] = None,
) -> Dict[str, str]:
    """Run the whole fbank stage; return the skipped utterances {utt: reason}. ``compress``
    (``--compress-feats``), when given, overrides the config's ``compress``."""
    data_dir, fbank_dir = Path(data_dir), Path(fbank_dir).resolve()
    # the arks' paths go into feats.scp and into ark,scp specifiers: refused now, not in every job
    check_table_entries(f"pyspk fbank output dir {fbank_dir}", paths=[fbank_dir])
    config = FbankConfig() if config_path is None else FbankConfig.from_yaml(config_path)
    if compress is not None:
        config = dataclasses.replace(config, compress=compress)
    n_utts = len(read_table(data_dir / ("segments" if (data_dir / "segments").is_file() else "wav.scp")))
    nj = num_jobs(nj, n_utts)
    texts = write_splits(data_dir, fbank_dir, nj)
    lines = recipe_lines(data_dir)
    sigs = []
    for j, text in enumerate(texts, 1):
        utts = [e[0] for e in read_split(fbank_dir, j)[0]]
        recipes_text = "\n".join(f"{u} {lines[u][1]}" for u in utts if u in lines)
        sigs.append(job_signature(text, recipes_text, config))
    jobs = jobs_of(fbank_dir)
    pending = jobs.pending(sigs, force, lambda j, sig: verify_job(fbank_dir, j, sig, config.vad))
    if pending:
        argv = (
            (["--config", str(Path(config_path).resolve())] if config_path else [])
            + (["--compress-feats", str(compress).lower()] if compress is not None else [])
            + (["--skip-bad"] if skip_bad else [])
            + [str(data_dir.resolve()), str(fbank_dir)]
        )
        jobs.run(cmd, pending, argv)
    bad = merge(data_dir, fbank_dir, nj, config.vad)
    for utt, reason in bad.items():
        log.warning("skipped utterance '%s': %s", utt, reason)
    # on the console (the driver's stderr, for pyspk fbank and pyspk augment alike): the jobs
    # said these in their logs only
    report_resampled(fbank_dir, nj, config.sample_rate)
    silent = novoice_utts(data_dir) if config.vad else []
    if silent:  # these utterances train nothing
        log.warning(
            "%d utterance(s) of %s have no voiced frame (VAD kept none), e.g. '%s'; they are kept in "
            "feats.scp/vad.scp, listed in %s/novoice.*",
            len(silent),
            data_dir,
            silent[0],
            fbank_dir,
        )
    return bad


def report_resampled(fbank_dir, nj: int, sample_rate: int, logger: Optional[logging.Logger] = None) -> List[str]:
    """Warn on the console (the stage driver's stderr; the jobs write only to their logs) how
    many utterances each lower sample rate brought, from the jobs' ``resampled.J`` lists.
    Returns the lines warned (none for jobs from before those lists were written)."""
    fbank_dir = Path(fbank_dir)
    counts: Dict[int, List[int]] = {}  # rate -> [utterances, first job]
    for j in range(1, nj + 1):
        path = job_files(fbank_dir, j)["resampled"]
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rate = int(line.split()[1])
                counts.setdefault(rate, [0, j])[0] += 1
    lines = [
        f"{n} utterance(s) were resampled from {rate} Hz to {sample_rate} Hz; their mel bins above "
        f"{rate // 2} Hz are empty, unlike the rest (see {fbank_dir / 'log' / f'fbank.{j}.log'})"
        for rate, (n, j) in sorted(counts.items())
    ]
    for line in lines:
        (logger or log).warning("%s", line)
    return lines


def run_job(data_dir, fbank_dir, job: int, config: FbankConfig, skip_bad: bool = False) -> Dict[str, str]:
    """Compute features for split ``job``; return the skipped utterances {utt: reason}.

    Raises AudioError on the first bad utterance unless ``skip_bad``.
    """
    keep_freed_memory()  # reuse freed buffers from the first utterance on (pyspk.malloc)
    p = job_files(fbank_dir, job)
    entries, split_text = read_split(fbank_dir, job)
    # keys and ark paths an scp could not hold are refused before anything is written
    check_table_entries(p["scp"], [e[0] for e in entries], [p["ark"]] + ([p["vad_ark"]] if config.vad else []))
    recipes, recipes_text = read_recipes(Path(data_dir), [e[0] for e in entries])
    sig = job_signature(split_text, recipes_text, config)
    jobs = jobs_of(fbank_dir)
    jobs.begin(job)
    for old in ("resampled", "novoice"):
        with contextlib.suppress(FileNotFoundError):
            p[old].unlink()
    for stale in p["ark"].parent.glob(f".*.{job}.*.tmp*"):  # left by a killed run of this job
        stale.unlink()
    applier = RecipeApplier(config.sample_rate)
    novoice: List[str] = []  # utterances kept with no voiced frame (a warning, not an error, here)

    upsampled: Dict[str, int] = {}  # utt -> the lower rate its audio was resampled up from

    # (source, samples, the source's sample rate): consecutive segments share a recording
    last: list = [None, None, None]

    def load(utt: str, source: str, start, end) -> np.ndarray:
        if start is None:
            wave, rate = read_audio_rate(utt, source, config.sample_rate, config.min_duration_s, config.stereo)
        else:
            if last[0] != source:
                last[:] = [source, *read_audio_rate(utt, source, config.sample_rate, 0.0, config.stereo)]
            wave = slice_segment(utt, source, last[1], config.sample_rate, start, end, config.min_duration_s)
            rate = last[2]
        if rate < config.sample_rate:
            upsampled[utt] = rate
        return wave

    def items():
        from tqdm import tqdm

        for utt, source, start, end in tqdm(
            entries, desc=f"fbank job {job}", unit="utt", disable=not sys.stderr.isatty()
        ):
            try:
                wave = load(utt, source, start, end)
                if utt in recipes:
                    wave = applier(utt, wave, recipes[utt])
                feats, energy = compute_fbank_energy(wave, config.sample_rate, config)
                if not np.isfinite(feats).all():
                    raise AudioError(utt, source, "features contain NaN or inf")
            except AudioError as e:
                if not skip_bad:
                    raise
                log.warning("skipping %s", e)
                yield utt, None, None, f"{e.reason} [{e.source}]"
                continue
            v = vad_from_config(energy, config) if config.vad else None
            if v is not None and not v.any():
                novoice.append(utt)
            yield utt, feats, v, ""

    frames, bad = write_arks(p, items(), config.vad, config.compress)
    atomic_write_text(p["frames"], "".join(f"{u} {n}\n" for u, n in frames.items()))
    # for the stage driver's console summary (report_resampled): the log has only the first of each rate
    atomic_write_text(p["resampled"], "".join(f"{u} {r}\n" for u, r in upsampled.items() if u in frames))
    atomic_write_text(p["bad"], "".join(f"{u} {r}\n" for u, r in bad.items()))
    if novoice:
        log.warning(
            "job %d: %d utterance(s) with no voiced frame (VAD kept none), e.g. '%s'; listed in %s",
            job,
            len(novoice),
            novoice[0],
            p["novoice"],
        )
    atomic_write_text(p["novoice"], "".join(f"{u}\n" for u in novoice))
    jobs.finish(job, sig)
    log.info("job %d: %d utterances, %d skipped", job, len(frames), len(bad))
    return bad
