"""The feature directory the fbank stage writes: its files, their checks, their writer.

Files of job J under FBANK_DIR (final names appear only when complete):

    feats.J.ark, feats.J.scp        log-mel features, scp points at the absolute ark path (float32
                                    matrices, or Kaldi compressed ones with ``compress: true``)
    vad.J.ark, vad.J.scp            0/1 per frame (only when VAD is configured)
    utt2num_frames.J                frames per utterance
    bad.J                           ``utt reason`` of skipped utterances (--skip-bad)
    novoice.J                       utterances in which VAD found no voiced frame (with VAD)
    resampled.J                     ``utt rate`` of utterances resampled up from a lower sample rate
    .done.feats.J                   written last: the job's input/config hash
    split/wav.J.scp [segments.J]    the job's part of the input

The stage and its jobs (which apply the augmentation recipes of ``aug.scp`` before
computing features) are :mod:`pyspk.stages.fbank`; training reads the layout through
:func:`job_stamp`, :func:`scp_entries` and :func:`novoice_utts`.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import kaldiio

from pyspk.data.arkread import EXTENT_BYTES, ArkReader, object_extent
from pyspk.data.compressed import compress
from pyspk.data.kaldi_dir import DataDirError, parse_segment, read_table
from pyspk.io import atomic_write_text


def job_files(fbank_dir, job: int) -> Dict[str, Path]:
    d = Path(fbank_dir).resolve()
    return {
        "ark": d / f"feats.{job}.ark",
        "scp": d / f"feats.{job}.scp",
        "vad_ark": d / f"vad.{job}.ark",
        "vad_scp": d / f"vad.{job}.scp",
        "frames": d / f"utt2num_frames.{job}",
        "bad": d / f"bad.{job}",
        "novoice": d / f"novoice.{job}",
        "resampled": d / f"resampled.{job}",
        "done": d / f".done.feats.{job}",
        "split": d / "split" / f"wav.{job}.scp",
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


# the objects a job writes: float32 matrices (or Kaldi's compressed ones) and float32 vectors
FEATS_KINDS, VAD_KINDS = ("FM", "CM", "CM2"), ("FV",)


def _check_entries(scp: Path, ark: Path, kinds, frames: Optional[Dict[str, int]]) -> str:
    """'' when every scp entry of ``ark`` is a complete binary object of one of ``kinds``
    (:func:`pyspk.data.arkread.object_extent`), else a reason."""
    if not scp.is_file() or not ark.is_file():
        return f"{scp.name} or {ark.name} missing"
    size = ark.stat().st_size
    end = 0
    with open(ark, "rb") as f:
        for utt, path, off in _read_scp(scp):
            if Path(path) != ark:
                return f"{scp.name}: '{utt}' points at {path}, not {ark}"
            f.seek(off)
            ext = object_extent(f.read(EXTENT_BYTES))
            if isinstance(ext, str) or ext[0] not in kinds:
                return f"{ark.name}: entry '{utt}' at {off} is not a binary {'/'.join(kinds)} object"
            _, shape, nbytes = ext
            rows = shape[0]
            if frames is not None and frames.get(utt) != rows:
                return f"{ark.name}: '{utt}' has {rows} frames, utt2num_frames says {frames.get(utt)}"
            end = off + nbytes
            if end > size:
                return f"{ark.name}: entry '{utt}' is truncated"
    if end != size:
        return f"{ark.name}: {size - end} bytes after the last scp entry"
    return ""


def check_outputs(fbank_dir, job: int, vad: bool) -> str:
    """'' when the arks and tables of job ``job`` are complete and agree with each other (every
    scp entry a whole matrix or vector of its ark, as many frames as utt2num_frames says, no
    bytes after the last); else why not."""
    p = job_files(fbank_dir, job)
    if not p["frames"].is_file():
        return f"{p['frames'].name} missing"
    frames = {u: int(n) for u, n in (ln.split() for ln in p["frames"].read_text().splitlines())}
    why = _check_entries(p["scp"], p["ark"], FEATS_KINDS, frames)
    if not why and vad:
        why = _check_entries(p["vad_scp"], p["vad_ark"], VAD_KINDS, frames)
    if not why and len(frames) != len(_read_scp(p["scp"])):
        why = "utt2num_frames and feats.scp disagree"
    return why


class CompressedArkWriter:
    """``writer(key, matrix)``: what ``kaldiio.WriteHelper("ark,scp:ARK,SCP")`` writes, with each
    matrix as a Kaldi compressed matrix (:func:`pyspk.data.compressed.compress`, Kaldi's
    automatic method as ``copy-feats --compress=true``; about four times faster than kaldiio's)."""

    def __init__(self, ark: Path, scp: Path):
        self.path = str(ark)
        self.ark, self.scp = open(ark, "wb"), open(scp, "w", encoding="utf-8")

    def __call__(self, key: str, mat) -> None:
        self.ark.write(key.encode("utf-8") + b" ")
        self.scp.write(f"{key} {self.path}:{self.ark.tell()}\n")
        self.ark.write(compress(mat))

    def __enter__(self) -> "CompressedArkWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.ark.close()
        self.scp.close()


def write_arks(p: Dict[str, Path], items, vad: bool, compress: bool = False) -> Tuple[Dict[str, int], Dict[str, str]]:
    """Write ``(utt, feats, vad, reason)`` items (``p``: :func:`job_files`) to temporary arks and
    scps, then rename them onto the final names; an item with a reason is skipped. Returns the
    frames of every utterance written and the reasons of those skipped. ``compress``: the
    features as Kaldi compressed matrices (:class:`CompressedArkWriter`), a quarter of the
    bytes; the VAD vectors stay as they are."""
    tmp = {k: p[k].with_name(f".{p[k].name}.tmp{os.getpid()}") for k in ("ark", "scp", "vad_ark", "vad_scp")}
    frames: Dict[str, int] = {}
    bad: Dict[str, str] = {}
    try:
        with contextlib.ExitStack() as stack:
            feats_w = stack.enter_context(
                CompressedArkWriter(tmp["ark"], tmp["scp"])
                if compress
                else kaldiio.WriteHelper(f"ark,scp:{tmp['ark']},{tmp['scp']}")
            )
            vad_w = (
                stack.enter_context(kaldiio.WriteHelper(f"ark,scp:{tmp['vad_ark']},{tmp['vad_scp']}")) if vad else None
            )
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
