"""One fbank job: wav.scp split -> ``feats.JOB.ark/.scp`` (+ ``vad.JOB.ark/.scp``) with kaldiio.

Files of job J under FBANK_DIR (final names appear only when complete):

    feats.J.ark, feats.J.scp        log-mel features, scp points at the absolute ark path
    vad.J.ark, vad.J.scp            0/1 per frame (only when VAD is configured)
    utt2num_frames.J                frames per utterance
    bad.J                           ``utt reason`` of skipped utterances (--skip-bad)
    novoice.J                       utterances in which VAD found no voiced frame (with VAD)
    resampled.J                     ``utt rate`` of utterances resampled up from a lower sample rate
    .done.feats.J                   written last: the job's input/config hash

A job is reused when its stamp matches the current input and every scp entry
verifies (see :func:`verify_job`).  Augmented sets carry ``aug.scp`` (utt -> JSON
recipe); the job then applies the recipe to the audio on the fly
(:mod:`pyspk.augment.apply`) before computing features.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import kaldiio
import numpy as np

from pyspk.data.kaldi_dir import DataDirError, check_table_entries, parse_segment
from pyspk.features.arkread import HEADER_BYTES, parse_header
from pyspk.features.audio import AudioError, read_audio_rate, slice_segment
from pyspk.features.fbank import FbankConfig, compute_fbank_energy
from pyspk.features.vad import vad_from_config
from pyspk.io import atomic_write_text, touch_done

log = logging.getLogger(__name__)


def job_files(fbank_dir, job: int) -> Dict[str, Path]:
    d = Path(fbank_dir).resolve()
    return {
        "ark": d / f"feats.{job}.ark", "scp": d / f"feats.{job}.scp",
        "vad_ark": d / f"vad.{job}.ark", "vad_scp": d / f"vad.{job}.scp",
        "frames": d / f"utt2num_frames.{job}", "bad": d / f"bad.{job}", "novoice": d / f"novoice.{job}",
        "resampled": d / f"resampled.{job}",
        "done": d / f".done.feats.{job}", "split": d / "split" / f"wav.{job}.scp",
        "segments": d / "split" / f"segments.{job}",
    }


Entry = Tuple[str, str, Optional[float], Optional[float]]  # utt, wav.scp value, start s, end s


def read_split(fbank_dir, job: int) -> Tuple[List[Entry], str]:
    """The job's entries and the split text its signature hashes.

    Without ``segments`` an entry is a whole wav.scp line; with it (Kaldi
    ``segments``: ``utt rec start end``, end -1 = to the end) a slice of a recording.
    """
    p = job_files(fbank_dir, job)
    wav_text = p["split"].read_text(encoding="utf-8")
    wav = dict(ln.split(None, 1) for ln in wav_text.splitlines() if ln.strip())
    if not p["segments"].is_file():
        return [(u, src, None, None) for u, src in wav.items()], wav_text
    seg_text = p["segments"].read_text(encoding="utf-8")
    entries = []
    for lineno, ln in enumerate(seg_text.splitlines(), 1):
        if not ln.strip():
            continue
        where = f"{p['segments']}:{lineno}"
        utt, value = (ln.split(None, 1) + [""])[:2]
        rec, start, end = parse_segment(value, f"{where}: segment '{utt}'")  # DataDirError naming the line
        if rec not in wav:
            raise DataDirError(f"{where}: segment '{utt}': recording '{rec}' is not in {p['split']}")
        entries.append((utt, wav[rec], start, end))
    return entries, seg_text + "\0" + wav_text


def split_lines(lines: List[str], nj: int) -> List[List[str]]:
    """Contiguous split into ``nj`` near-equal parts (Kaldi split_scp.pl); keeps sort order."""
    n = len(lines)
    bounds = [round(i * n / nj) for i in range(nj + 1)]
    return [lines[bounds[i]:bounds[i + 1]] for i in range(nj)]


def job_signature(split_text: str, recipes_text: str, config: FbankConfig) -> str:
    """Hash of everything a job's output depends on (its wav.scp lines, recipes, config)."""
    h = hashlib.sha256()
    for part in (split_text, recipes_text, json.dumps(config.__dict__, sort_keys=True)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def scp_entries(text: str) -> List[Tuple[str, str, int]]:
    """(utt, ark path, byte offset) of every ``utt ark:offset`` line of an scp file's text."""
    out = []
    for line in text.splitlines():
        utt, loc = line.split(None, 1)
        ark, off = loc.rsplit(":", 1)
        out.append((utt, ark, int(off)))
    return out


def _read_scp(path: Path) -> List[Tuple[str, str, int]]:
    return scp_entries(path.read_text(encoding="utf-8"))


_JOB_ARK = re.compile(r"^(?:feats|vad)\.(\d+)\.ark$")


def job_stamp(ark) -> Optional[Path]:
    """The completion stamp of the fbank job that wrote ``ark`` (``feats.J.ark`` or ``vad.J.ark``:
    ``.done.feats.J``, holding the job's input/config hash); None for an ark of another name."""
    m = _JOB_ARK.match(Path(ark).name)
    return job_files(Path(ark).parent, int(m.group(1)))["done"] if m else None


def novoice_utts(data_dir) -> List[str]:
    """Utterances of ``data_dir/vad.scp`` in which VAD found no voiced frame, in its order.

    Read from the ``novoice.J`` lists of the fbank jobs that wrote the entries (``vad.J.ark``);
    for a job from before those lists were written, from its VAD vectors. [] without vad.scp.
    """
    from pyspk.data.kaldi_dir import read_table
    from pyspk.features.arkread import ArkReader

    vad_scp = Path(data_dir) / "vad.scp"
    if not vad_scp.is_file():
        return []
    vad = read_table(vad_scp)
    found: set = set()
    by_ark: Dict[str, List[str]] = {}
    for utt, spec in vad.items():
        by_ark.setdefault(spec.rpartition(":")[0], []).append(utt)
    reader = ArkReader()
    try:
        for ark, utts in by_ark.items():
            m = _JOB_ARK.match(Path(ark).name)
            listed = job_files(Path(ark).parent, int(m.group(1)))["novoice"] if m else None
            if listed is not None and listed.is_file():
                found.update(listed.read_text(encoding="utf-8").split())
            else:
                found.update(u for u in utts if not reader(vad[u], u).any())
    finally:
        reader.close()
    return [u for u in vad if u in found]


def _check_entries(scp: Path, ark: Path, header: bytes, frames: Optional[Dict[str, int]]) -> str:
    """'' when every scp entry of ``ark`` is a complete binary float matrix/vector, else a reason."""
    if not scp.is_file() or not ark.is_file():
        return f"{scp.name} or {ark.name} missing"
    size = ark.stat().st_size
    end = 0
    with open(ark, "rb") as f:
        for utt, path, off in _read_scp(scp):
            if Path(path) != ark:
                return f"{scp.name}: '{utt}' points at {path}, not {ark}"
            f.seek(off)
            info = parse_header(f.read(HEADER_BYTES))
            if info is None or info[0] != header:
                return f"{ark.name}: entry '{utt}' at {off} is not a binary {header.decode().strip()} object"
            _, dtype, shape, header_len = info
            rows = shape[0]
            if frames is not None and frames.get(utt) != rows:
                return f"{ark.name}: '{utt}' has {rows} frames, utt2num_frames says {frames.get(utt)}"
            end = off + header_len + dtype.itemsize * int(np.prod(shape))
            if end > size:
                return f"{ark.name}: entry '{utt}' is truncated"
    if end != size:
        return f"{ark.name}: {size - end} bytes after the last scp entry"
    return ""


def verify_job(fbank_dir, job: int, signature: str, vad: bool) -> str:
    """'' when job ``job`` is complete and consistent with ``signature``; else why not."""
    p = job_files(fbank_dir, job)
    if not p["done"].is_file():
        return "no completion stamp"
    if p["done"].read_text().strip() != signature:
        return "input or config changed since it was computed"
    if not p["frames"].is_file():
        return f"{p['frames'].name} missing"
    frames = {u: int(n) for u, n in (ln.split() for ln in p["frames"].read_text().splitlines())}
    why = _check_entries(p["scp"], p["ark"], b"FM ", frames)
    if not why and vad:
        why = _check_entries(p["vad_scp"], p["vad_ark"], b"FV ", frames)
    if not why and len(frames) != len(_read_scp(p["scp"])):
        why = "utt2num_frames and feats.scp disagree"
    return why


def _write_stream(p: Dict[str, Path], items, vad: bool) -> Tuple[Dict[str, int], Dict[str, str]]:
    """Write (utt, feats, vad) items to temporary arks/scps; rename onto the final names."""
    tmp = {k: p[k].with_name(f".{p[k].name}.tmp{os.getpid()}") for k in ("ark", "scp", "vad_ark", "vad_scp")}
    frames: Dict[str, int] = {}
    bad: Dict[str, str] = {}
    try:
        with contextlib.ExitStack() as stack:
            feats_w = stack.enter_context(kaldiio.WriteHelper(f"ark,scp:{tmp['ark']},{tmp['scp']}"))
            vad_w = stack.enter_context(kaldiio.WriteHelper(f"ark,scp:{tmp['vad_ark']},{tmp['vad_scp']}")) if vad else None
            for utt, feats, v, reason in items:
                if reason:
                    bad[utt] = reason
                    continue
                feats_w(utt, feats)
                if vad_w is not None:
                    vad_w(utt, v)
                frames[utt] = int(feats.shape[0])
        for ark_key, scp_key in (("ark", "scp"), ("vad_ark", "vad_scp")):
            if ark_key == "vad_ark" and not vad:
                continue
            text = tmp[scp_key].read_text(encoding="utf-8").replace(str(tmp[ark_key]), str(p[ark_key]))
            os.replace(tmp[ark_key], p[ark_key])
            atomic_write_text(p[scp_key], text)
    finally:
        for t in tmp.values():
            with contextlib.suppress(FileNotFoundError):
                t.unlink()
    return frames, bad


def report_resampled(fbank_dir, nj: int, sample_rate: int, logger: Optional[logging.Logger] = None) -> List[str]:
    """Warn on the console (the stage driver's stderr; the jobs write only to their logs) how
    many utterances each lower sample rate brought, from the jobs' ``resampled.J`` lists.
    Returns the lines warned (none for jobs from before those lists were written)."""
    fbank_dir = Path(fbank_dir)
    counts: Dict[int, List[int]] = {}       # rate -> [utterances, first job]
    for j in range(1, nj + 1):
        path = job_files(fbank_dir, j)["resampled"]
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rate = int(line.split()[1])
                counts.setdefault(rate, [0, j])[0] += 1
    lines = [f"{n} utterance(s) were resampled from {rate} Hz to {sample_rate} Hz; their mel bins above "
             f"{rate // 2} Hz are empty, unlike the rest (see {fbank_dir / 'log' / f'fbank.{j}.log'})"
             for rate, (n, j) in sorted(counts.items())]
    for line in lines:
        (logger or log).warning("%s", line)
    return lines


def run_job(data_dir, fbank_dir, job: int, config: FbankConfig, skip_bad: bool = False) -> Dict[str, str]:
    """Compute features for split ``job``; return the skipped utterances {utt: reason}.

    Raises AudioError on the first bad utterance unless ``skip_bad``.
    """
    from pyspk.augment.apply import RecipeApplier, read_recipes
    from pyspk.features.malloc import keep_freed_memory

    keep_freed_memory()  # reuse freed buffers from the first utterance on (see the module)
    p = job_files(fbank_dir, job)
    entries, split_text = read_split(fbank_dir, job)
    # keys and ark paths an scp could not hold are refused before anything is written
    check_table_entries(p["scp"], [e[0] for e in entries], [p["ark"]] + ([p["vad_ark"]] if config.vad else []))
    recipes, recipes_text = read_recipes(Path(data_dir), [e[0] for e in entries])
    signature = job_signature(split_text, recipes_text, config)
    for old in ("done", "resampled", "novoice"):
        with contextlib.suppress(FileNotFoundError):
            p[old].unlink()
    for stale in p["ark"].parent.glob(f".*.{job}.*.tmp*"):  # left by a killed run of this job
        stale.unlink()
    applier = RecipeApplier(config.sample_rate)
    novoice: List[str] = []   # utterances kept with no voiced frame (a warning, not an error, here)

    upsampled: Dict[str, int] = {}   # utt -> the lower rate its audio was resampled up from

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

        for utt, source, start, end in tqdm(entries, desc=f"fbank job {job}", unit="utt",
                                             disable=not sys.stderr.isatty()):
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

    frames, bad = _write_stream(p, items(), config.vad)
    atomic_write_text(p["frames"], "".join(f"{u} {n}\n" for u, n in frames.items()))
    # for the stage driver's console summary (report_resampled): the log has only the first of each rate
    atomic_write_text(p["resampled"], "".join(f"{u} {r}\n" for u, r in upsampled.items() if u in frames))
    atomic_write_text(p["bad"], "".join(f"{u} {r}\n" for u, r in bad.items()))
    if novoice:
        log.warning("job %d: %d utterance(s) with no voiced frame (VAD kept none), e.g. '%s'; listed in %s",
                    job, len(novoice), novoice[0], p["novoice"])
    atomic_write_text(p["novoice"], "".join(f"{u}\n" for u in novoice))
    touch_done(p["done"], signature + "\n")
    log.info("job %d: %d utterances, %d skipped", job, len(frames), len(bad))
    return bad
