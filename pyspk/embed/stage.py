"""The extraction stage (Kaldi ``extract_xvectors.sh``): split, run jobs via ``$cmd``, merge.

    extract(model_path, data_dir, out_dir, nj, cmd, chunk, device, force)

1. ``data_dir/feats.scp`` is split into ``nj`` contiguous parts
   (``out_dir/split/feats.J.scp``);
2. every job without a valid stamp runs through the queue script::

       CMD JOB=a:b OUT/log/extract.JOB.log python -m pyspk.bin.extract --job JOB ... MODEL DATA OUT

   writing ``out_dir/xvector.J.{ark,scp}`` and, last, ``out_dir/.done.extract.J``
   holding the job's signature (sha1 of the model file, the split and the
   chunking options); a rerun reuses jobs whose stamp matches (resume);
3. the job tables are merged into ``xvector.{ark,scp}``, ``spk_xvector.{ark,scp}``
   and ``num_utts.ark`` (see :mod:`pyspk.embed.store`).

A failed job raises :class:`ExtractError` naming its log.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from pyspk.data.kaldi_dir import read_table, utt2spk_to_spk2utt
from pyspk.embed.extractor import ChunkConfig, Embedder
from pyspk.features.arkread import ArkReader
from pyspk.embed.store import read_vectors, write_vectors, write_xvector_dir
from pyspk.io import atomic_write_text, file_digest, touch_done
from pyspk.malloc import keep_freed_memory
from pyspk.queue import JOB, failure_reason, queue_argv, run_queue

log = logging.getLogger(__name__)


class ExtractError(RuntimeError):
    """Extraction failed; the message names the log file(s)."""


def job_files(out_dir, job: int) -> Dict[str, Path]:
    d = Path(out_dir)
    return {"split": d / "split" / f"feats.{job}.scp", "ark": d / f"xvector.{job}.ark",
            "scp": d / f"xvector.{job}.scp", "done": d / f".done.extract.{job}",
            "log": d / "log" / f"extract.{job}.log"}


def file_sha1(path) -> str:
    return file_digest(path, "sha1")


def job_signature(model_sha1: str, split_text: str, chunk: ChunkConfig) -> str:
    h = hashlib.sha1(f"{model_sha1}\n{chunk}\n".encode())
    h.update(split_text.encode())
    return h.hexdigest()


def write_splits(data_dir, out_dir, nj: int) -> List[str]:
    """Contiguous split of feats.scp into nj parts (rewritten only when changed)."""
    read_table(Path(data_dir) / "feats.scp")  # sorted, unique keys, or a clear error
    lines = [ln for ln in (Path(data_dir) / "feats.scp").read_text().splitlines(keepends=True) if ln.strip()]
    size, rem = divmod(len(lines), nj)
    texts, start = [], 0
    for j in range(nj):
        end = start + size + (1 if j < rem else 0)
        texts.append("".join(lines[start:end]))
        start = end
    for j, text in enumerate(texts, 1):
        p = job_files(out_dir, j)["split"]
        if not p.is_file() or p.read_text() != text:
            atomic_write_text(p, text)
    return texts


def job_is_done(out_dir, job: int, signature: str) -> bool:
    p = job_files(out_dir, job)
    return (p["done"].is_file() and p["done"].read_text().strip() == signature
            and p["ark"].is_file() and p["scp"].is_file())


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
    signature = job_signature(file_sha1(model_path), split_text, chunk)
    with contextlib.suppress(FileNotFoundError):
        p["done"].unlink()
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
    touch_done(p["done"], signature + "\n")
    log.info("extract job %d: %d utterances on %s", job, len(out), embedder.device)
    return len(out)


def _job_argv(model_path, data_dir, out_dir, chunk: ChunkConfig, device: str) -> List[str]:
    return ["--max-frames", str(chunk.max_frames), "--chunk-frames", str(chunk.chunk_frames),
            "--chunk-hop", str(chunk.chunk_hop), "--device", device,
            str(Path(model_path).resolve()), str(Path(data_dir).resolve()), str(Path(out_dir).resolve())]


def run_jobs(cmd: str, out_dir: Path, jobs: List[int], argv: List[str]) -> None:
    """``CMD JOB=a:b LOG python -m pyspk.bin.extract --job JOB ...`` per contiguous range."""
    (out_dir / "log").mkdir(parents=True, exist_ok=True)
    pattern = out_dir / "log" / "extract.JOB.log"
    ranges: List[list] = []
    for j in jobs:
        if ranges and ranges[-1][1] == j - 1:
            ranges[-1][1] = j
        else:
            ranges.append([j, j])
    said = []
    for a, b in ranges:
        qargv = queue_argv(cmd, a, b, pattern, [sys.executable, "-m", "pyspk.bin.extract", "--job", JOB, *argv])
        line = shlex.join(qargv)
        log.info("running %s", line)
        rc, err = run_queue(qargv)
        said.append((rc, err, line))
    failed = [j for j in jobs if not job_files(out_dir, j)["done"].is_file()]
    if failed:
        rc, err, line = next((x for x in said if x[0] != 0), said[-1])
        why = failure_reason([job_files(out_dir, j)["log"] for j in failed], rc, err, line)
        raise ExtractError(f"{len(failed)} of {len(jobs)} extraction job(s) failed; {why}")


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
    nj = max(1, min(nj, n_utts))
    texts = write_splits(data_dir, out_dir, nj)
    model_sha1 = file_sha1(model_path)
    pending = [j for j, t in enumerate(texts, 1)
               if force or not job_is_done(out_dir, j, job_signature(model_sha1, t, chunk))]
    for j in pending:
        with contextlib.suppress(FileNotFoundError):
            job_files(out_dir, j)["done"].unlink()
    reused = [j for j in range(1, nj + 1) if j not in pending]
    log.info("extraction: %d job(s) to run, %d reused", len(pending), len(reused))
    if pending:
        run_jobs(cmd, out_dir, pending, _job_argv(model_path, data_dir, out_dir, chunk, device))
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
