"""Random access to one utterance's audio: decode only the samples a crop needs.

:class:`Audio` opens a wav.scp entry (a file or a ``command |`` pipe), a ``segments`` slice of
one, or the FLAC or WAV bytes of a shard member, and reads samples ``[start, start + n)`` at the
training sample rate. A WAV or FLAC file at that rate is read with a soundfile seek (libsndfile
seeks FLAC by its seek table or a bisection of its frames, WAV by arithmetic), so a 2 s crop of a
20 s recording decodes 2 s; the bytes of a 16-bit mono WAV member are read in place, with no
decoder (:func:`wav_pcm16`); pipes, other formats and files at another sample rate are decoded
whole (and resampled) by :func:`pyspk.features.audio.read_audio`, then sliced. Either way the
samples equal those of the offline path's full decode (``tests/test_online.py``). Nested ``with``
blocks keep one opened file: the views of an utterance in a batch share it.

The length of an utterance comes from the audio itself when it is opened for its crop: the
header of a seekable file (exact, no extra I/O since the crop read uses the same handle), the
segment's times clipped by that header, or the decoded samples of a whole decode. Nothing is
read up front, so a data dir of any size costs its tables only (:class:`AudioTable`).

Errors are :class:`EntryError` (an :class:`~pyspk.features.audio.AudioError`) naming the table
file and line, the utterance, the source and the reason.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile as sf

from pyspk.data.kaldi_dir import DataDirError, _read_keyed, parse_segment
from pyspk.features.audio import SUPPORTED_RATES, AudioError, read_audio, slice_segment

log = logging.getLogger(__name__)

# libsndfile formats whose seek is exact and cheap (frame-accurate; FLAC via its seek table)
SEEKABLE = frozenset({"WAV", "WAVEX", "W64", "RF64", "FLAC", "AIFF"})
_WARNED_STEREO: set = set()


class EntryError(AudioError):
    """An unusable entry: names ``where`` (table file:line), the utterance, the source, the reason."""

    def __init__(self, where: str, utt: str, source: str, reason: str):
        AudioError.__init__(self, utt, source, reason)
        self.where = where
        self.args = (f"{where}: utterance '{utt}' ({source}): {reason}",)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):  # picklable across processes (shard writer pools)
        return (EntryError, (self.where, self.utt, self.source, self.reason))


class _Span:
    """Stands in for a waveform of ``n`` samples in :func:`slice_segment`: its slice is returned
    as a ``slice``, so the segment rules (and errors) are the offline path's, without samples."""

    def __init__(self, n: int):
        self.shape = (n,)

    def __getitem__(self, s: slice) -> slice:
        return s


class Audio:
    """One utterance: ``open()`` gives its exact length in samples, ``read(start, n)`` the samples."""

    def __init__(
        self,
        utt: str,
        source,
        where: str,
        sample_rate: int,
        segment: Optional[Tuple[float, float]] = None,
        stereo: str = "first",
        min_duration_s: float = 0.025,
        data: Optional[bytes] = None,
    ):
        self.utt, self.source, self.where = utt, source, where
        self.sample_rate, self.segment, self.stereo = sample_rate, segment, stereo
        self.min_duration_s, self.data = min_duration_s, data
        self._file: Optional[sf.SoundFile] = None
        self._wave: Optional[np.ndarray] = None
        self._pcm: Optional[np.ndarray] = None  # 16-bit samples of WAV bytes, read in place
        self._offset, self.num_samples = 0, None
        self._depth = 0  # nested ``with`` blocks: the file closes when the outermost one ends

    def _fail(self, reason: str) -> EntryError:
        return EntryError(self.where, self.utt, str(self.source), reason)

    # ------------------------------------------------------------------ open
    def open(self) -> int:
        """Open (once) and return the number of samples at the training rate."""
        if self.num_samples is not None and (self._file is not None or self._wave is not None or self._pcm is not None):
            return self.num_samples
        src = str(self.source)
        if self.data is None and src.rstrip().endswith("|"):
            return self._open_whole()
        if self.data is not None and self.segment is None:
            pcm = wav_pcm16(self.data, self.sample_rate)
            if pcm is not None and pcm.shape[0] >= max(1, math.ceil(self.min_duration_s * self.sample_rate)):
                self._pcm, self.num_samples = pcm, int(pcm.shape[0])
                return self.num_samples
        try:
            f = sf.SoundFile(io.BytesIO(self.data) if self.data is not None else src)
        except Exception as e:
            raise self._fail(f"cannot read audio: {e}") from None
        if f.format not in SEEKABLE or f.samplerate != self.sample_rate:
            f.close()
            if self.data is not None:
                raise self._fail(
                    f"shard audio is {f.format} at {f.samplerate} Hz, not seekable audio at "
                    f"{self.sample_rate} Hz; rewrite the shards with this fbank config"
                )
            return self._open_whole()
        if f.samplerate not in SUPPORTED_RATES:
            f.close()
            raise self._fail(f"unsupported sample rate {f.samplerate} Hz (supported: {SUPPORTED_RATES})")
        if f.channels > 1:
            if self.stereo == "error":
                f.close()
                raise self._fail(f"{f.channels} channels; only mono is accepted (stereo: error)")
            if src not in _WARNED_STEREO:
                _WARNED_STEREO.add(src)
                log.warning("utterance '%s' (%s): %d channels, taking channel 0", self.utt, src, f.channels)
        n = f.frames
        if n == 0:
            f.close()
            if self.data is None:
                return self._open_whole()  # a header without a length (a streamed FLAC): decode it
            raise self._fail("zero-length recording")
        lo, hi = 0, n
        if self.segment is not None:
            try:
                s = slice_segment(self.utt, src, _Span(n), self.sample_rate, *self.segment, self.min_duration_s)
            except AudioError as e:
                f.close()
                raise self._fail(e.reason) from None
            lo, hi = s.start, s.stop
        elif n < math.ceil(self.min_duration_s * self.sample_rate):
            f.close()
            raise self._fail(
                f"too short: {n} samples = {1000.0 * n / self.sample_rate:.1f} ms < "
                f"{1000.0 * self.min_duration_s:.0f} ms"
            )
        self._file, self._offset, self.num_samples = f, lo, hi - lo
        return self.num_samples

    def _open_whole(self) -> int:
        src = str(self.source)
        try:
            if self.segment is None:
                wave = read_audio(self.utt, src, self.sample_rate, self.min_duration_s, self.stereo)
            else:
                rec = read_audio(self.utt, src, self.sample_rate, 0.0, self.stereo)
                wave = slice_segment(self.utt, src, rec, self.sample_rate, *self.segment, self.min_duration_s)
        except AudioError as e:
            raise self._fail(e.reason) from None
        self._wave = np.ascontiguousarray(wave, dtype=np.float32)
        self.num_samples = int(self._wave.shape[0])
        return self.num_samples

    # ------------------------------------------------------------------ read
    def read(self, start: int, n: int) -> np.ndarray:
        """Samples ``[start, start + n)`` clipped to the utterance, float32 mono."""
        total = self.open()
        start = max(0, int(start))
        stop = min(total, start + max(0, int(n)))
        if stop <= start:
            return np.zeros(0, np.float32)
        if self._wave is not None:
            return self._wave[start:stop]
        if self._pcm is not None:  # libsndfile's conversion: int16 x 2^-15, exact in float32
            return np.multiply(self._pcm[start:stop], np.float32(1.0 / 32768.0), dtype=np.float32)
        try:
            self._file.seek(self._offset + start)
            # into an array of the right size: soundfile then skips its length check (two more seeks)
            data = self._file.read(out=np.empty((stop - start, self._file.channels), np.float32))
        except Exception as e:
            raise self._fail(f"cannot read samples {start}-{stop}: {e}") from None
        return np.ascontiguousarray(data[:, 0])

    def whole(self) -> np.ndarray:
        return self.read(0, self.open())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Audio":
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth <= 0:
            self._depth = 0
            self.close()


def wav_pcm16(data: bytes, sample_rate: int) -> Optional[np.ndarray]:
    """The samples of ``data``, a RIFF/WAVE file in memory, as an int16 view of its bytes when it
    is mono 16-bit PCM at ``sample_rate`` (what ``write_shards(fmt="wav")`` writes); else None
    (then libsndfile reads it). Walks the chunks once: no copy, no decoder."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, fmt_ok = 12, False
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if cid == b"fmt ":
            if size < 16:
                return None
            tag, channels, rate = (
                int.from_bytes(data[body + i : body + j], "little") for i, j in ((0, 2), (2, 4), (4, 8))
            )
            bits = int.from_bytes(data[body + 14 : body + 16], "little")
            fmt_ok = tag == 1 and channels == 1 and rate == sample_rate and bits == 16
            if not fmt_ok:
                return None
        elif cid == b"data":
            if not fmt_ok:
                return None
            n = min(size, len(data) - body) // 2
            return np.frombuffer(data, dtype="<i2", count=n, offset=body)
        pos = body + size + (size & 1)
    return None


class AudioTable:
    """The audio of a Kaldi data dir: ``wav.scp`` (+ ``segments``), with line numbers for errors.

    Holds the tables only (a few hundred bytes per utterance); :meth:`audio` makes the
    :class:`Audio` of one utterance, opened lazily.
    """

    def __init__(self, data_dir, sample_rate: int, stereo: str = "first", min_duration_s: float = 0.025):
        self.data_dir = Path(data_dir)
        self.sample_rate, self.stereo, self.min_duration_s = sample_rate, stereo, min_duration_s
        wav_path = self.data_dir / "wav.scp"
        if not wav_path.is_file():
            raise DataDirError(f"{wav_path}: missing (online training reads audio from wav.scp)")
        wav = {key: (lineno, value) for lineno, key, value in _read_keyed(wav_path)}
        self._where: Dict[str, str] = {}
        seg_path = self.data_dir / "segments"
        entries: Dict[str, Tuple[str, Optional[Tuple[float, float]], str, Optional[str]]] = {}
        if seg_path.is_file():
            for lineno, utt, value in _read_keyed(seg_path):
                where = f"{seg_path}:{lineno}"
                rec, start, end = parse_segment(value, f"{where}: segment '{utt}'")
                if rec not in wav:
                    raise DataDirError(f"{where}: segment '{utt}': recording '{rec}' is not in {wav_path}")
                where = f"{where} (recording '{rec}', {wav_path}:{wav[rec][0]})"
                entries[utt] = (wav[rec][1], (start, end), where, rec)
        else:
            entries = {utt: (value, None, f"{wav_path}:{lineno}", None) for utt, (lineno, value) in wav.items()}
        self.utts: List[str] = sorted(entries, key=str.encode)
        self.index = {u: i for i, u in enumerate(self.utts)}
        self._sources = [entries[u][0] for u in self.utts]
        self._segments = [entries[u][1] for u in self.utts]
        self._wheres = [entries[u][2] for u in self.utts]
        self._recs = [entries[u][3] for u in self.utts]

    def __len__(self) -> int:
        return len(self.utts)

    def source(self, row: int) -> str:
        return self._sources[row]

    def segment(self, row: int) -> Optional[Tuple[float, float]]:
        return self._segments[row]

    def recording(self, row: int) -> Optional[str]:
        """The recording id of a ``segments`` entry, else None."""
        return self._recs[row]

    def where(self, row: int) -> str:
        """``file:line`` of the row's entry (segments and wav.scp lines for a segment)."""
        return self._wheres[row]

    def audio(self, row: int) -> Audio:
        return Audio(
            self.utts[row],
            self._sources[row],
            self._wheres[row],
            self.sample_rate,
            self._segments[row],
            self.stereo,
            self.min_duration_s,
        )
