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

A failed job raises :class:`ExtractError` naming its log.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from pyspk.data.arkread import ArkReader
from pyspk.data.kaldi_dir import read_table, utt2spk_to_spk2utt
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


def job_files(out_dir, job: int) -> Dict[str, Path]:
    d, jobs = Path(out_dir), jobs_of(out_dir)
    return {"split": d / "split" / f"feats.{job}.scp", "ark": d / f"xvector.{job}.ark",
            "scp": d / f"xvector.{job}.scp", "done": jobs.stamp(job), "log": jobs.log(job)}


def job_signature(model_digest: str, split_text: str, chunk: ChunkConfig) -> str:
    """Hash of everything a job's output depends on: the model file's sha-256, the chunking
    options and the job's feats.scp lines."""
    return signature(model_digest, str(chunk), split_text)


def write_splits(data_dir, out_dir, nj: int) -> List[str]:
    """Contiguous split of feats.scp into nj parts (rewritten only when changed)."""
    read_table(Path(data_dir) / "feats.scp")  # sorted, unique keys, or a clear error
    lines = [ln for ln in (Path(data_dir) / "feats.scp").read_text().splitlines(keepends=True) if ln.strip()]
    texts = ["".join(part) for part in split_lines(lines, nj, first_longer=True)]
    for j, text in enumerate(texts, 1):
        write_if_changed(job_files(out_dir, j)["split"], text)
    return texts


def verify_job(out_dir, job: int, signature: str) -> str:
    """'' when job ``job``'s stamp holds ``signature`` and its table is there; else why not."""
    p = job_files(out_dir, job)
    why = jobs_of(out_dir).stamp_check(job, signature)
    if not why and not (p["ark"].is_file() and p["scp"].is_file()):
        why = f"{p['ark'].name} or {p['scp'].name} missing"
    return why


WINDOW = 512   # utterances read, length-sorted and embedded together by one job


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


def run_job(model_path, data_dir, out_dir, job: int, chunk: ChunkConfig, device: str = "auto") -> int:
    """Embed the utterances of split ``job``; writes ark/scp then the stamp. Returns #utts."""
    from tqdm import tqdm

    keep_freed_memory()
    p = job_files(out_dir, job)
    split_text = p["split"].read_text()
    sig = job_signature(file_digest(model_path), split_text, chunk)
    jobs = jobs_of(out_dir)
    jobs.begin(job)
    embedder = Embedder.from_checkpoint(model_path, chunk, device)
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
        for utt in order[w:w + WINDOW]:
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
    out = {utt: out[utt] for utt in feats}           # the split's order, as before
    write_vectors(p["ark"], p["scp"], out)
    jobs.finish(job, sig)
    log.info("extract job %d: %d utterances on %s", job, len(out), embedder.device)
    return len(out)


def _job_argv(model_path, data_dir, out_dir, chunk: ChunkConfig, device: str) -> List[str]:
    return ["--max-frames", str(chunk.max_frames), "--chunk-frames", str(chunk.chunk_frames),
            "--chunk-hop", str(chunk.chunk_hop), "--device", device,
            str(Path(model_path).resolve()), str(Path(data_dir).resolve()), str(Path(out_dir).resolve())]


def extract(model_path, data_dir, out_dir, nj: int = 1, cmd: str = "",
            chunk: Optional[ChunkConfig] = None, device: str = "auto", force: bool = False) -> Dict[str, object]:
    """Run the whole stage; returns {"jobs_run": [...], "jobs_reused": [...], "num_utts": n}."""
    chunk = chunk or ChunkConfig()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"model {model_path} not found")
    for name in ("feats.scp", "utt2spk"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"{data_dir}/{name} not found (run the fbank stage first)")
    n_utts = len(read_table(data_dir / "feats.scp"))
    if n_utts == 0:
        raise ValueError(f"{data_dir}/feats.scp is empty")
    nj = num_jobs(nj, n_utts)
    texts = write_splits(data_dir, out_dir, nj)
    model_digest = file_digest(model_path)
    jobs = jobs_of(out_dir)
    pending = jobs.pending([job_signature(model_digest, t, chunk) for t in texts], force,
                           lambda j, sig: verify_job(out_dir, j, sig))
    reused = [j for j in range(1, nj + 1) if j not in pending]
    log.info("extraction: %d job(s) to run, %d reused", len(pending), len(reused))
    if pending:
        jobs.run(cmd, pending, _job_argv(model_path, data_dir, out_dir, chunk, device))
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
