"""Training shards: a Kaldi data dir's audio as Lhotse Shar, written atomically, read sequentially.

Format: **Lhotse Shar** (``OUT/shar/cuts.NNNNNN.jsonl.gz`` + ``OUT/shar/recording.NNNNNN.tar``
per shard), so ``OUT/shar`` is also a Lhotse ``CutSet.from_shar(in_dir=...)`` with loadable
audio (our index, ``OUT/shards.json``, stays outside it: Lhotse takes every file of that
directory for a field). Checked to work here without torchaudio: the audio is FLAC (or WAV)
written and read by soundfile (libsndfile), which is Lhotse's own backend when torchaudio is
absent (``tests/test_online.py`` reads our shards back through Lhotse). Chosen over
WeSpeaker-style tars because it is a documented format that another toolkit reads, with the
same property that matters on a network filesystem: one sequential read per shard. Lhotse's
``SharWriter`` itself is not used: it opens its shards under their final names (a killed run
leaves a truncated shard that looks finished) and cannot skip finished ones, so each shard is
written here under a temporary name and renamed, in the layout ``SharWriter`` produces (tar
members ``<id>.flac`` or ``<id>.wav`` then ``<id>.json``, the recording's Shar placeholder; a
cuts line per member pair).

Audio format (``fmt`` of :func:`write_shards`): **FLAC** (the default) or **WAV**, both 16-bit
PCM unless ``subtype`` says otherwise. The trade is disk against loader CPU: on speech FLAC takes
roughly half of WAV's bytes (16-bit WAV is 32,000 bytes per second of 16 kHz audio), but every
view the loader makes from a FLAC member pays libFLAC's decoding of its region (and a seek into
the member), on every epoch; a 16-bit mono WAV member is read in place, its samples an int16 view
of the shard's bytes (:func:`pyspk.online.audio.wav_pcm16`), the same values libsndfile gives.
Lhotse reads both (tar members ``<id>.wav``).

A cut is the utterance whole: its id, ``supervisions[0].speaker``, ``recording.num_samples``
at the fbank config's sample rate, and ``custom``: ``source`` (the wav.scp entry), ``segment``
([recording, start, end] or null) and ``flac`` or ``wav`` (the format, holding the subtype), from
which a rerun knows a shard is still what the data dir asks for.

Order: the utterances are shuffled once with ``default_rng(seed)`` and cut into shards of
``shard_size`` (the last one shorter), so every shard mixes speakers. ``shards.json`` (the
index: each shard's files, utterances, samples and bytes; the speakers and their counts) is
written last: a directory without it is unfinished, and readers refuse it. A rerun skips every
shard whose two files exist and whose cuts are the planned ones, and rewrites the rest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from pyspk.data.kaldi_dir import DataDirError, read_table
from pyspk.io import atomic_path, atomic_write_text
from pyspk.online.audio import AudioTable

log = logging.getLogger(__name__)

INDEX = "shards.json"
FORMAT = "lhotse-shar"
AUDIO_FORMATS = ("flac", "wav")


SHAR = "shar"


def shard_files(k: int) -> Tuple[str, str]:
    """Paths of shard ``k``'s cuts and recordings, relative to the output directory."""
    return f"{SHAR}/cuts.{k:06d}.jsonl.gz", f"{SHAR}/recording.{k:06d}.tar"


@dataclass
class Planned:
    utt: str
    spk: str
    source: str
    segment: Optional[list]

    def key(self) -> tuple:
        return (self.utt, self.spk, self.source, None if self.segment is None else tuple(self.segment))


def plan_shards(data_dir, shard_size: int, seed: int, fbank=None) -> Tuple[AudioTable, List[List[Planned]]]:
    """The table of ``data_dir`` and the utterances of each shard (module docstring, Order)."""
    from pyspk.features.fbank import FbankConfig

    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    fbank = fbank or FbankConfig()
    data_dir = Path(data_dir)
    table = AudioTable(data_dir, fbank.sample_rate, fbank.stereo, fbank.min_duration_s)
    utt2spk = read_table(data_dir / "utt2spk")
    missing = [u for u in utt2spk if u not in table.index]
    if missing:
        raise DataDirError(
            f"{data_dir}: {len(missing)} utterance(s) of utt2spk have no audio "
            f"(wav.scp/segments), e.g. '{missing[0]}'; run utils/fix_data_dir"
        )
    utts = sorted(utt2spk, key=str.encode)
    order = np.random.default_rng(seed).permutation(len(utts))
    rows = []
    for i in order:
        u = utts[int(i)]
        r = table.index[u]
        seg = table.segment(r)
        rows.append(
            Planned(u, utt2spk[u], table.source(r), None if seg is None else [table.recording(r), seg[0], seg[1]])
        )
    return table, [rows[i : i + shard_size] for i in range(0, len(rows), shard_size)]


def _cut_dict(p: Planned, num_samples: int, sample_rate: int, subtype: str, fmt: str = "flac") -> dict:
    """The Lhotse MonoCut (Shar placeholder recording) of one utterance, as a dict."""
    from lhotse import AudioSource, MonoCut, Recording, SupervisionSegment

    dur = num_samples / sample_rate
    rec = Recording(
        id=p.utt,
        sources=[AudioSource(type="shar", channels=[0], source="")],
        sampling_rate=sample_rate,
        num_samples=num_samples,
        duration=dur,
    )
    sup = SupervisionSegment(id=p.utt, recording_id=p.utt, start=0.0, duration=dur, channel=0, speaker=p.spk)
    cut = MonoCut(
        id=p.utt,
        start=0.0,
        duration=dur,
        channel=0,
        recording=rec,
        supervisions=[sup],
        custom={"source": p.source, "segment": p.segment, fmt: subtype},
    )
    return cut.to_dict()


def _planned_of(d: dict) -> tuple:
    c = d.get("custom") or {}
    seg = c.get("segment")
    return (d["id"], d["supervisions"][0]["speaker"], c.get("source"), None if seg is None else tuple(seg))


def read_cuts(path) -> List[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def shard_is_done(
    out_dir: Path, k: int, planned: Sequence[Planned], sample_rate: int, subtype: str, fmt: str = "flac"
) -> bool:
    """Both files of shard ``k`` exist and its cuts are ``planned`` at this rate, format and subtype."""
    cuts, rec = (out_dir / n for n in shard_files(k))
    if not (cuts.is_file() and rec.is_file()):
        return False
    try:
        have = read_cuts(cuts)
    except (OSError, ValueError, EOFError):
        return False
    return len(have) == len(planned) and all(
        _planned_of(d) == p.key()
        and d["recording"]["sampling_rate"] == sample_rate
        and (d.get("custom") or {}).get(fmt) == subtype
        for d, p in zip(have, planned)
    )


def write_shard(
    out_dir: Path, k: int, planned: Sequence[Planned], table: AudioTable, subtype: str, fmt: str = "flac"
) -> dict:
    """Write shard ``k`` (temporary names, renamed: the recording tar first, its cuts last)."""
    cuts_name, rec_name = shard_files(k)
    sample_rate = table.sample_rate
    lines, samples = [], 0
    with atomic_path(out_dir / rec_name) as tmp:
        with tarfile.open(tmp, "w") as tar:
            for p in planned:
                with table.audio(table.index[p.utt]) as audio:
                    wave = audio.whole()
                buf = io.BytesIO()
                sf.write(buf, wave, sample_rate, format=fmt.upper(), subtype=subtype)
                d = _cut_dict(p, int(wave.shape[0]), sample_rate, subtype, fmt)
                _add(tar, f"{p.utt}.{fmt}", buf.getvalue())
                _add(tar, f"{p.utt}.json", (json.dumps(d["recording"]) + "\n").encode())
                lines.append(json.dumps(d))
                samples += int(wave.shape[0])
    with atomic_path(out_dir / cuts_name) as tmp:
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
    return shard_entry(out_dir, k, len(planned), samples)


def shard_entry(out_dir: Path, k: int, num_utts: int, samples: int) -> dict:
    cuts, rec = shard_files(k)
    return {
        "cuts": cuts,
        "recording": rec,
        "num_utts": num_utts,
        "num_samples": samples,
        "bytes": (out_dir / rec).stat().st_size + (out_dir / cuts).stat().st_size,
    }


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def plan_digest(shards: Sequence[Sequence[Planned]], sample_rate: int, subtype: str, fmt: str = "flac") -> str:
    fmt_tag = "" if fmt == "flac" else f"{fmt}\0"  # FLAC's digest is that of the indexes written before WAV
    h = hashlib.sha256(f"{sample_rate}\0{subtype}\0{fmt_tag}".encode())
    for k, s in enumerate(shards):
        h.update(f"#{k}\n".encode())
        for p in s:
            h.update((json.dumps(p.key()) + "\n").encode())
    return h.hexdigest()


_JOB: dict = {}


def _job(k: int) -> dict:
    j = _JOB
    out_dir = j["out_dir"]
    if shard_is_done(out_dir, k, j["shards"][k], j["sample_rate"], j["subtype"], j["fmt"]):
        s = sum(d["recording"]["num_samples"] for d in read_cuts(out_dir / shard_files(k)[0]))
        return dict(shard_entry(out_dir, k, len(j["shards"][k]), s), reused=True)
    return write_shard(out_dir, k, j["shards"][k], j["table"], j["subtype"], j["fmt"])


def write_shards(
    data_dir,
    out_dir,
    shard_size: int = 1000,
    seed: int = 777,
    fbank=None,
    nj: int = 1,
    subtype: str = "PCM_16",
    fmt: str = "flac",
) -> dict:
    """Write (or complete) the shards of ``data_dir`` in ``out_dir``; return the index written.

    ``fbank`` (a FbankConfig) gives the sample rate, the stereo policy and the minimum length;
    ``nj`` shards are written at once (processes of this machine); ``fmt`` is the members' audio
    format, ``flac`` or ``wav`` (module docstring), ``subtype`` its sample format.
    """
    from pyspk.features.fbank import FbankConfig

    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"shard audio format '{fmt}' is not one of {', '.join(AUDIO_FORMATS)}")

    fbank = fbank or FbankConfig()
    out_dir = Path(out_dir)
    (out_dir / SHAR).mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / SHAR).glob(".*.tmp*"):
        stale.unlink()  # left by a killed run (Lhotse would read it as a field)
    table, shards = plan_shards(data_dir, shard_size, seed, fbank)
    digest = plan_digest(shards, fbank.sample_rate, subtype, fmt)
    index_path = out_dir / INDEX
    if index_path.is_file():
        old = json.loads(index_path.read_text(encoding="utf-8"))
        if old.get("plan") == digest and all(
            (out_dir / s[n]).is_file() for s in old["shards"] for n in ("cuts", "recording")
        ):
            log.info("%s: %d shards up to date", out_dir, len(shards))
            return old
        index_path.unlink()  # the directory is unfinished until the new index is written
    _JOB.update(out_dir=out_dir, shards=shards, table=table, sample_rate=fbank.sample_rate, subtype=subtype, fmt=fmt)
    try:
        if nj > 1 and len(shards) > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(min(nj, len(shards))) as pool:
                entries = pool.map(_job, range(len(shards)), chunksize=1)
        else:
            entries = [_job(k) for k in range(len(shards))]
    finally:
        _JOB.clear()
    reused = sum(1 for e in entries if e.pop("reused", False))
    keep = {e[n] for e in entries for n in ("cuts", "recording")}
    for stale in sorted((out_dir / SHAR).glob("cuts.*.jsonl.gz")) + sorted((out_dir / SHAR).glob("recording.*.tar")):
        if f"{SHAR}/{stale.name}" not in keep:
            stale.unlink()  # a shard of an earlier, longer plan
    counts: Dict[str, int] = {}
    for s in shards:
        for p in s:
            counts[p.spk] = counts.get(p.spk, 0) + 1
    index = {
        "format": FORMAT,
        "writer": "pyspk shards",
        "data_dir": str(Path(data_dir).resolve()),
        "seed": seed,
        "shard_size": shard_size,
        "sample_rate": fbank.sample_rate,
        "audio_format": fmt,
        fmt: subtype,
        "plan": digest,
        "num_utts": sum(e["num_utts"] for e in entries),
        "num_samples": sum(e["num_samples"] for e in entries),
        "speakers": dict(sorted(counts.items(), key=lambda kv: kv[0].encode())),
        "shards": entries,
    }
    atomic_write_text(index_path, json.dumps(index, indent=1) + "\n")
    log.info(
        "%s: %d shards (%d written, %d reused), %d utterances, %.1f h",
        out_dir,
        len(entries),
        len(entries) - reused,
        reused,
        index["num_utts"],
        index["num_samples"] / fbank.sample_rate / 3600,
    )
    return index


# ---------------------------------------------------------------------- reading
@dataclass
class ShardItem:
    utt: str
    spk: str
    num_samples: int
    data: bytes  # the member's audio file (FLAC or WAV), as stored
    shard: str
    ext: str = "flac"  # the member's extension, its format


def read_index(shards_dir) -> dict:
    """``shards.json`` of a finished shard directory; errors name the directory and what is wrong."""
    path = Path(shards_dir) / INDEX
    if not path.is_file():
        raise DataDirError(
            f"{path}: missing; {shards_dir} is not a finished shard directory "
            f"(write it with 'pyspk shards DATA_DIR {shards_dir}')"
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataDirError(f"{path}: not valid json: {e}") from None
    if index.get("format") != FORMAT or not index.get("shards"):
        raise DataDirError(f"{path}: not a {FORMAT} index with shards")
    return index


def iter_shard(shards_dir, entry: dict) -> Iterator[ShardItem]:
    """The utterances of one shard, in order, read sequentially (one pass over each file)."""
    shards_dir = Path(shards_dir)
    cuts_path, rec_path = shards_dir / entry["cuts"], shards_dir / entry["recording"]
    try:
        cuts = read_cuts(cuts_path)
    except (OSError, ValueError, EOFError) as e:
        raise DataDirError(f"{cuts_path}: cannot read: {e}") from None
    n = 0
    # tarfile parses the headers; each audio member is then one read of its bytes from the file
    # (the stream mode's copies through its record buffer cost more than the rest of the read),
    # and the recordings' JSON placeholders are skipped over, not read
    with open(rec_path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
        pending: Optional[Tuple[str, bytes, str]] = None
        for member in tar:
            if member.name.endswith(".json"):
                if pending is None or n >= len(cuts) or pending[0] != cuts[n]["id"]:
                    want = cuts[n]["id"] if n < len(cuts) else "(none: the cuts are exhausted)"
                    raise DataDirError(
                        f"{rec_path}: member '{member.name}' does not follow the audio of cut "
                        f"{n + 1} of {cuts_path} ('{want}')"
                    )
                d = cuts[n]
                yield ShardItem(
                    d["id"],
                    d["supervisions"][0]["speaker"],
                    int(d["recording"]["num_samples"]),
                    pending[1],
                    entry["recording"],
                    pending[2],
                )
                n, pending = n + 1, None
            else:
                data = b""
                if member.isfile():
                    raw.seek(member.offset_data)
                    data = raw.read(member.size)
                stem, _, ext = member.name.rpartition(".")
                pending = (stem, data, ext)
    if n != len(cuts):
        raise DataDirError(f"{rec_path}: {n} utterances, {cuts_path} lists {len(cuts)}")
