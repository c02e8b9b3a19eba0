"""The extraction stage (Kaldi ``extract_xvectors.sh``): split, run jobs via ``$cmd``, merge.

    extract(model_path, data_dir, out_dir, nj, cmd, chunk, device, force)

1. ``data_dir/feats.scp`` is split into ``nj`` contiguous parts
   (``out_dir/split/feats.J.scp``);
2. every job without a valid stamp runs through the queue script::

       CMD JOB=a:b OUT/log/extract.JOB.log python -m pyspk.bin.extract --job JOB ... MODEL DATA OUT

   writing ``out_dir/xvector.J.{ark,scp}`` and, last, ``out_dir/.done.extract.J``
   holding the job's signature (a sha-256 of the model file's sha-256, the chunking
   options and the split); a rerun reuses jobs whose stamp matches (resume; :mod:`pyspk.jobs`);
3. the job tables are merged into ``xvector.{ark,scp}``, ``spk_xvector.{ark,scp}``
   and ``num_utts.ark`` (see :mod:`pyspk.data.xvectors`).

With ``fbank_config`` the stage reads audio instead of features (the online recipe, whose
training set has no stored features): the split is of ``segments`` (or ``wav.scp``), and each job
decodes its utterances and computes fbank and VAD in memory exactly as the fbank stage would
(:func:`audio_features`), so the x-vectors equal those extracted from that stage's arks.

A failed job raises :class:`ExtractError` naming its log.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from pyspk.data.arkread import ArkReader
from pyspk.data.kaldi_dir import parse_segment, read_table, utt2spk_to_spk2utt
from pyspk.data.xvectors import read_vectors, write_vectors, write_xvector_dir
from pyspk.embed.extractor import ChunkConfig, Embedder
from pyspk.io import file_digest
from pyspk.jobs import JobSet, StageError, num_jobs, signature, split_lines, write_if_changed
from pyspk.malloc import keep_freed_memory

log = logging.getLogger(__name__)


class ExtractError(StageError):
    """Extraction failed; the message names the log file(s)."""


def jobs_of(out_dir) -> JobSet:
    """The extraction jobs writing into ``out_dir`` (stamps ``.done.extract.J``, logs ``log/extract.J.log``)."""
    return JobSet(Path(out_dir), "extraction", "pyspk.bin.extract", "extract", "extract", ExtractError)


def job_files(out_dir, job: int, audio: bool = False) -> Dict[str, Path]:
    d, jobs = Path(out_dir), jobs_of(out_dir)
    split = d / "split" / (f"audio.{job}.scp" if audio else f"feats.{job}.scp")
    return {
        "split": split,
        "ark": d / f"xvector.{job}.ark",
        "scp": d / f"xvector.{job}.scp",
        "done": jobs.stamp(job),
        "log": jobs.log(job),
    }


def job_signature(model_digest: str, split_text: str, chunk: ChunkConfig, fbank=None) -> str:
    """Hash of everything a job's output depends on: the model file's sha-256, the chunking
    options and the job's feats.scp lines (from audio: its segments/wav.scp lines and the fbank
    config)."""
    if fbank is None:
        return signature(model_digest, str(chunk), split_text)
    return signature(model_digest, str(chunk), split_text, repr(fbank))


def write_splits(data_dir, out_dir, nj: int, audio: bool = False) -> List[str]:
    """Contiguous split of feats.scp (from audio: segments or wav.scp) into nj parts (rewritten
    only when changed)."""
    data_dir = Path(data_dir)
    table = audio_table(data_dir) if audio else data_dir / "feats.scp"
    read_table(table)  # sorted, unique keys, or a clear error
    lines = [ln for ln in table.read_text().splitlines(keepends=True) if ln.strip()]
    texts = ["".join(part) for part in split_lines(lines, nj, first_longer=True)]
    for j, text in enumerate(texts, 1):
        write_if_changed(job_files(out_dir, j, audio)["split"], text)
    return texts


def audio_table(data_dir: Path) -> Path:
    return data_dir / "segments" if (data_dir / "segments").is_file() else data_dir / "wav.scp"


def audio_features(data_dir, split_path: Path, fbank):
    """(utt, feats, vad or None) of each utterance of a split of segments or wav.scp: decoded and
    featurised as the fbank stage's job does (no augmentation recipes: extraction sets are clean)."""
    from pyspk.features.audio import AudioError, read_audio_rate, slice_segment
    from pyspk.features.fbank import compute_fbank_energy
    from pyspk.features.vad import vad_from_config

    data_dir = Path(data_dir)
    segments = (data_dir / "segments").is_file()
    wav = read_table(data_dir / "wav.scp") if segments else None
    last: list = [None, None]
    for lineno, line in enumerate(split_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        utt, value = (line.split(None, 1) + [""])[:2]
        if segments:
            rec, start, end = parse_segment(value, f"{split_path}:{lineno}: segment '{utt}'")
            if rec not in wav:
                raise ValueError(f"{data_dir / 'segments'}: segment '{utt}': recording '{rec}' is not in wav.scp")
            if last[0] != rec:
                last[:] = [rec, read_audio_rate(utt, wav[rec], fbank.sample_rate, 0.0, fbank.stereo)[0]]
            wave = slice_segment(utt, wav[rec], last[1], fbank.sample_rate, start, end, fbank.min_duration_s)
        else:
            wave = read_audio_rate(utt, value.strip(), fbank.sample_rate, fbank.min_duration_s, fbank.stereo)[0]
        feats, energy = compute_fbank_energy(wave, fbank.sample_rate, fbank)
        if not np.isfinite(feats).all():
            raise AudioError(utt, value.strip(), "features contain NaN or inf")
        yield utt, feats, (vad_from_config(energy, fbank) if fbank.vad else None)


def verify_job(out_dir, job: int, signature: str) -> str:
    """'' when job ``job``'s stamp holds ``signature`` and its table is there; else why not."""
    p = job_files(out_dir, job)
    why = jobs_of(out_dir).stamp_check(job, signature)
    if not why and not (p["ark"].is_file() and p["scp"].is_file()):
        why = f"{p['ark'].name} or {p['scp'].name} missing"
    return why


WINDOW = 512  # utterances read, length-sorted and embedded together by one job


def length_order(data_dir, utts: List[str]) -> List[str]:
    """``utts`` sorted by their utt2num_frames (stable; unknown lengths last): neighbours then
    have equal or close lengths, so equal-length batches form and per-shape kernels are reused."""
    path = Path(data_dir) / "utt2num_frames"
    if not path.is_file():
        return list(utts)
    lengths = read_table(path)
    big = float("inf")

    def frames(u):
        v = lengths.get(u, "")
        return int(v) if v.isdigit() else big

    return sorted(utts, key=frames)


def run_job(
    model_path,
    data_dir,
    out_dir,
    job: int,
    chunk: ChunkConfig,
    device: str = "auto",
    fbank_config: Optional[str] = None,
) -> int:
    """Embed the utterances of split ``job``; writes ark/scp then the stamp. Returns #utts."""
    from tqdm import tqdm

    keep_freed_memory()
    fbank = None
    if fbank_config is not None:
        from pyspk.features.fbank import load_config

        fbank = load_config(fbank_config)
    p = job_files(out_dir, job, fbank is not None)
    split_text = p["split"].read_text()
    sig = job_signature(file_digest(model_path), split_text, chunk, fbank)
    jobs = jobs_of(out_dir)
    jobs.begin(job)
    embedder = Embedder.from_checkpoint(model_path, chunk, device)
    if fbank is not None:
        return _run_audio_job(embedder, data_dir, p, job, fbank, jobs, sig)
    vad_scp = Path(data_dir) / "vad.scp"
    vad = read_table(vad_scp) if embedder.use_vad and vad_scp.is_file() else None
    if embedder.use_vad and vad is None:
        raise ValueError(f"the encoder was trained with VAD but {vad_scp} does not exist")
    feats = read_table(p["split"])
    if vad is not None:
        missing = [u for u in feats if u not in vad]
        if missing:
            raise ValueError(f"{vad_scp}: no VAD for utterance '{missing[0]}' ({len(missing)} missing)")
    out: Dict[str, np.ndarray] = {}
    reader = ArkReader()
    order = length_order(data_dir, list(feats))
    bar = tqdm(total=len(order), desc=f"extract job {job}", disable=not sys.stderr.isatty())
    for w in range(0, len(order), WINDOW):
        items = []
        for utt in order[w : w + WINDOW]:
            try:
                x = embedder.prepare(reader(feats[utt]), None if vad is None else reader(vad[utt]))
            except (ValueError, OSError) as e:
                raise ValueError(f"utterance '{utt}' ({feats[utt]}): {e}") from None
            items.append((utt, x))
        for (utt, _), e in zip(items, embedder.embed_prepared(items)):
            out[utt] = e
        bar.update(len(items))
    bar.close()
    reader.close()
    out = {utt: out[utt] for utt in feats}  # the split's order, as before
    write_vectors(p["ark"], p["scp"], out)
    jobs.finish(job, sig)
    log.info("extract job %d: %d utterances on %s", job, len(out), embedder.device)
    return len(out)


def _run_audio_job(embedder, data_dir, p, job: int, fbank, jobs, sig) -> int:
    """run_job from audio: features made in memory, one window of utterances at a time."""
    if embedder.use_vad and not fbank.vad:
        raise ValueError("the encoder was trained with VAD but the fbank config computes none (vad: false)")
    out: Dict[str, np.ndarray] = {}
    items = []

    def flush():
        for (utt, _), e in zip(items, embedder.embed_prepared(items)):
            out[utt] = e
        items.clear()

    for utt, feats, vad in audio_features(data_dir, p["split"], fbank):
        try:
            items.append((utt, embedder.prepare(feats, vad if embedder.use_vad else None)))
        except ValueError as e:
            raise ValueError(f"utterance '{utt}': {e}") from None
        if len(items) == WINDOW:
            flush()
    flush()
    write_vectors(p["ark"], p["scp"], out)
    jobs.finish(job, sig)
    log.info("extract job %d: %d utterances from audio on %s", job, len(out), embedder.device)
    return len(out)


def _job_argv(
    model_path, data_dir, out_dir, chunk: ChunkConfig, device: str, fbank_config: Optional[str] = None
) -> List[str]:
    fb = ["--fbank-config", str(Path(fbank_config).resolve())] if fbank_config else []
    return [
        "--max-frames",
        str(chunk.max_frames),
        "--chunk-frames",
        str(chunk.chunk_frames),
        "--chunk-hop",
        str(chunk.chunk_hop),
        "--device",
        device,
        *fb,
        str(Path(model_path).resolve()),
        str(Path(data_dir).resolve()),
        str(Path(out_dir).resolve()),
    ]


def extract(
    model_path,
    data_dir,
    out_dir,
    nj: int = 1,
    cmd: str = "",
    chunk: Optional[ChunkConfig] = None,
    device: str = "auto",
    force: bool = False,
    fbank_config: Optional[str] = None,
) -> Dict[str, object]:
    """Run the whole stage; returns {"jobs_run": [...], "jobs_reused": [...], "num_utts": n}.
    ``fbank_config``: read audio and make the features in memory instead of reading feats.scp."""
    chunk = chunk or ChunkConfig()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    audio = fbank_config is not None
    fbank = None
    if audio:
        from pyspk.features.fbank import load_config

        fbank = load_config(fbank_config)
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"model {model_path} not found")
    for name in ("wav.scp" if audio else "feats.scp", "utt2spk"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"{data_dir}/{name} not found" + ("" if audio else " (run the fbank stage first)"))
    table = audio_table(data_dir) if audio else data_dir / "feats.scp"
    n_utts = len(read_table(table))
    if n_utts == 0:
        raise ValueError(f"{table} is empty")
    nj = num_jobs(nj, n_utts)
    texts = write_splits(data_dir, out_dir, nj, audio)
    model_digest = file_digest(model_path)
    jobs = jobs_of(out_dir)
    pending = jobs.pending(
        [job_signature(model_digest, t, chunk, fbank) for t in texts], force, lambda j, sig: verify_job(out_dir, j, sig)
    )
    reused = [j for j in range(1, nj + 1) if j not in pending]
    log.info("extraction: %d job(s) to run, %d reused", len(pending), len(reused))
    if pending:
        jobs.run(cmd, pending, _job_argv(model_path, data_dir, out_dir, chunk, device, fbank_config))
    merge(data_dir, out_dir, nj)
    return {"jobs_run": pending, "jobs_reused": reused, "num_utts": n_utts}


def merge(data_dir, out_dir, nj: int) -> None:
    """Job tables -> xvector.{ark,scp}, spk_xvector.{ark,scp}, num_utts.ark."""
    xvectors = {}
    for j in range(1, nj + 1):
        xvectors.update(read_vectors(job_files(out_dir, j)["scp"]))
    utt2spk = read_table(Path(data_dir) / "utt2spk")
    unknown = [u for u in xvectors if u not in utt2spk]
    if unknown:
        raise ValueError(f"{data_dir}/utt2spk: utterance '{unknown[0]}' of feats.scp has no speaker")
    spk2utt = utt2spk_to_spk2utt({u: s for u, s in utt2spk.items() if u in xvectors})
    write_xvector_dir(out_dir, xvectors, spk2utt)
