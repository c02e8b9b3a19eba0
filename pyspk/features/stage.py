"""The fbank stage driver (Kaldi ``make_fbank.sh``): split, run jobs via ``$cmd``, merge.

    make_fbank(data_dir, fbank_dir, config_path, nj, cmd)

1. splits ``data_dir/wav.scp`` into ``nj`` contiguous parts (``fbank_dir/split/wav.J.scp``);
2. runs every job that does not verify (:func:`pyspk.features.ark.verify_job`) through
   the queue script: ``CMD JOB=a:b fbank_dir/log/fbank.JOB.log python -m pyspk.bin.fbank
   --job JOB ...`` (one call per contiguous range of pending jobs);
3. merges the job scps into ``data_dir/feats.scp``, ``utt2num_frames`` (and
   ``vad.scp``), each written atomically.

A failed job makes :class:`StageError` name its log.  With ``skip_bad`` the skipped
utterances (listed in ``data_dir/bad_utts`` with their reason) are removed from the
data directory's per-utterance tables, as Kaldi's fix_data_dir.sh would.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional

from pyspk.data.dir_edit import commit_staged, staged_dir
from pyspk.data.kaldi_dir import (DataDirError, check_table_entries, read_table, utt2spk_to_spk2utt,
                                  validate_data_dir, write_table)
from pyspk.features.ark import job_files, job_signature, read_split, split_lines, verify_job
from pyspk.features.fbank import FbankConfig
from pyspk.io import atomic_write_text
from pyspk.queue import JOB, failure_reason, queue_argv, run_queue

log = logging.getLogger(__name__)

PER_UTT_TABLES = ("wav.scp", "segments", "utt2spk", "utt2lang", "utt2orig", "utt2genre", "utt2dur", "utt2gender",
                  "text", "aug.scp")


class StageError(RuntimeError):
    """A stage failed; the message names the log file(s) to read."""


def _ranges(jobs: List[int]) -> List[tuple]:
    out: List[list] = []
    for j in jobs:
        if out and out[-1][1] == j - 1:
            out[-1][1] = j
        else:
            out.append([j, j])
    return [tuple(r) for r in out]


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


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
            _write_if_changed(p["split"], "".join(f"{u} {wav[u]}\n" for u in part))
            with contextlib.suppress(FileNotFoundError):
                p["segments"].unlink()
            continue
        recs = sorted({segments[u].split()[0] for u in part}, key=str.encode)
        missing = [r for r in recs if r not in wav]
        if missing:
            raise DataDirError(f"{seg_path}: recording '{missing[0]}' is not in {data_dir / 'wav.scp'}")
        _write_if_changed(p["split"], "".join(f"{r} {wav[r]}\n" for r in recs))
        _write_if_changed(p["segments"], "".join(f"{u} {segments[u]}\n" for u in part))
    return [read_split(fbank_dir, j)[1] for j in range(1, nj + 1)]


def run_jobs(cmd: str, fbank_dir: Path, jobs: List[int], job_argv: List[str]) -> None:
    """Run ``jobs`` through the queue script; StageError naming the logs of failed jobs."""
    log_pattern = fbank_dir / "log" / "fbank.JOB.log"
    (fbank_dir / "log").mkdir(parents=True, exist_ok=True)
    failed, why = [], []
    for a, b in _ranges(jobs):
        argv = queue_argv(cmd, a, b, log_pattern, [sys.executable, "-m", "pyspk.bin.fbank", "--job", JOB, *job_argv])
        line = shlex.join(argv)
        log.info("running %s", line)
        rc, err = run_queue(argv)
        if rc != 0:
            bad = [j for j in range(a, b + 1) if not job_files(fbank_dir, j)["done"].is_file()] or [a]
            failed += bad
            why.append(failure_reason([fbank_dir / "log" / f"fbank.{j}.log" for j in bad], rc, err, line))
    if failed:
        raise StageError(f"{len(failed)} fbank job(s) failed; {'; '.join(why)}")


def merge(data_dir: Path, fbank_dir: Path, nj: int, vad: bool) -> Dict[str, str]:
    """Concatenate job outputs into the data directory; return the skipped {utt: reason}."""
    parts = {"feats.scp": "scp", "utt2num_frames": "frames", "bad_utts": "bad"}
    if vad:
        parts["vad.scp"] = "vad_scp"
    texts = {name: "".join(job_files(fbank_dir, j)[key].read_text(encoding="utf-8") for j in range(1, nj + 1))
             for name, key in parts.items()}
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
                raise StageError(f"{data_dir}: after skipping {len(bad)} bad utterance(s) (first: "
                                 f"{next(iter(bad))}: {next(iter(bad.values())).strip()}) it would not be a valid "
                                 f"data dir; nothing was changed: {str(e).replace(str(tmp), str(data_dir))}") from None
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


def make_fbank(data_dir, fbank_dir, config_path: Optional[str], nj: int, cmd: str,
               force: bool = False, skip_bad: bool = False) -> Dict[str, str]:
    """Run the whole fbank stage; return the skipped utterances {utt: reason}."""
    data_dir, fbank_dir = Path(data_dir), Path(fbank_dir).resolve()
    # the arks' paths go into feats.scp and into ark,scp specifiers: refused now, not in every job
    check_table_entries(f"pyspk fbank output dir {fbank_dir}", paths=[fbank_dir])
    config = FbankConfig() if config_path is None else FbankConfig.from_yaml(config_path)
    n_utts = len(read_table(data_dir / ("segments" if (data_dir / "segments").is_file() else "wav.scp")))
    nj = max(1, min(nj, n_utts))
    texts = write_splits(data_dir, fbank_dir, nj)
    from pyspk.augment.apply import recipe_lines

    lines = recipe_lines(data_dir)
    pending = []
    for j, text in enumerate(texts, 1):
        utts = [e[0] for e in read_split(fbank_dir, j)[0]]
        recipes_text = "\n".join(f"{u} {lines[u][1]}" for u in utts if u in lines)
        sig = job_signature(text, recipes_text, config)
        why = "--force" if force else verify_job(fbank_dir, j, sig, config.vad)
        if why:
            log.info("fbank job %d of %d: computing (%s)", j, nj, why)
            pending.append(j)
        else:
            log.info("fbank job %d of %d: reusing verified output", j, nj)
    if force:
        for j in pending:
            with contextlib.suppress(FileNotFoundError):
                job_files(fbank_dir, j)["done"].unlink()
    if pending:
        argv = (["--config", str(Path(config_path).resolve())] if config_path else []) + \
            (["--skip-bad"] if skip_bad else []) + [str(data_dir.resolve()), str(fbank_dir)]
        run_jobs(cmd, fbank_dir, pending, argv)
    bad = merge(data_dir, fbank_dir, nj, config.vad)
    for utt, reason in bad.items():
        log.warning("skipped utterance '%s': %s", utt, reason)
    # on the console (the driver's stderr, for pyspk fbank and pyspk augment alike): the jobs
    # said these in their logs only
    from pyspk.features.ark import novoice_utts, report_resampled

    report_resampled(fbank_dir, nj, config.sample_rate)
    silent = novoice_utts(data_dir) if config.vad else []
    if silent:   # these utterances train nothing
        log.warning("%d utterance(s) of %s have no voiced frame (VAD kept none), e.g. '%s'; they are kept in "
                    "feats.scp/vad.scp, listed in %s/novoice.*", len(silent), data_dir, silent[0], fbank_dir)
    return bad
