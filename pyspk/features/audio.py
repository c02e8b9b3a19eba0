"""Audio reading for wav.scp entries (file paths and ``command |`` pipes).

Every failure is an :class:`AudioError` naming the utterance and the source, so
the fbank stage can stop (or, with ``--skip-bad``, skip and list the reason).
:func:`slice_segment` cuts a ``segments`` entry out of its recording, checked against
the recording's real length (Kaldi's rules: see :func:`pyspk.data.kaldi_dir.segment_end`).
Stereo policy: channel 0 is taken with a warning (``stereo: first``, default),
or the file is refused (``stereo: error``).  Sample rates outside
:data:`SUPPORTED_RATES` are refused; the others are resampled to the configured rate.

Entries are decoded here with soundfile (pipes: the command's stdout bytes) rather than
through Lhotse's Kaldi import: ``lhotse.kaldi.load_kaldi_data_dir`` opens every
recording up front to get its duration (a second pass over every pipe) and refuses
``cmd |`` entries without kaldi_native_io; ``tests/test_fbank.py`` checks that both
read plain files identically.
"""

from __future__ import annotations

import io
import logging
import math
import subprocess
from fractions import Fraction
from typing import Tuple

import numpy as np
import soundfile as sf

from pyspk.data.kaldi_dir import segment_end

log = logging.getLogger(__name__)

SUPPORTED_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


class AudioError(Exception):
    """Unreadable or unusable audio; ``utt`` and ``source`` name the culprit."""

    def __init__(self, utt: str, source: str, reason: str):
        super().__init__(f"utterance '{utt}' ({source}): {reason}")
        self.utt, self.source, self.reason = utt, source, reason


def resample(wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly, Kaiser-windowed FIR)."""
    if orig_sr == new_sr:
        return wave
    from scipy.signal import resample_poly

    ratio = Fraction(int(new_sr), int(orig_sr))
    out = resample_poly(wave.astype(np.float64), ratio.numerator, ratio.denominator)
    return out.astype(np.float32)


def _read_source(source: str) -> tuple[np.ndarray, int, str]:
    """Decode a path or a ``cmd |`` pipe: (samples float32, (N,) mono or (N, C), rate, subtype)."""
    if source.endswith("|"):
        proc = subprocess.run(source[:-1], shell=True, capture_output=True)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"pipe exited with status {proc.returncode}: {err[0]}")
        handle = sf.SoundFile(io.BytesIO(proc.stdout))
    else:
        handle = sf.SoundFile(source)
    with handle as f:
        return f.read(dtype="float32"), f.samplerate, f.subtype


def read_audio(
    utt: str, source: str, target_sr: int, min_duration_s: float = 0.025, stereo: str = "first"
) -> np.ndarray:
    """Mono float32 samples of one wav.scp entry at ``target_sr``; AudioError on bad input."""
    return read_audio_rate(utt, source, target_sr, min_duration_s, stereo)[0]


def read_audio_rate(
    utt: str, source: str, target_sr: int, min_duration_s: float = 0.025, stereo: str = "first"
) -> Tuple[np.ndarray, int]:
    """:func:`read_audio`'s samples and the source's own sample rate, for a caller that
    counts what was resampled (the fbank jobs' ``resampled.J``)."""
    try:
        data, sr, subtype = _read_source(source)
    except Exception as e:  # soundfile / OS / pipe errors all become one clear message
        raise AudioError(utt, source, f"cannot read audio: {e}") from None
    if sr not in SUPPORTED_RATES:
        raise AudioError(utt, source, f"unsupported sample rate {sr} Hz (supported: {SUPPORTED_RATES})")
    if data.ndim == 2:
        if stereo == "error":
            raise AudioError(utt, source, f"{data.shape[1]} channels; only mono is accepted (stereo: error)")
        log.warning("utterance '%s' (%s): %d channels, taking channel 0", utt, source, data.shape[1])
        data = np.ascontiguousarray(data[:, 0])
    if data.shape[0] == 0:
        raise AudioError(utt, source, "zero-length recording")
    if data.shape[0] < math.ceil(min_duration_s * sr):
        raise AudioError(
            utt,
            source,
            f"too short: {data.shape[0]} samples = "
            f"{1000.0 * data.shape[0] / sr:.1f} ms < {1000.0 * min_duration_s:.0f} ms",
        )
    # integer PCM (wav, flac: subtype PCM_*) cannot hold NaN/inf; every other encoding is scanned
    if not subtype.startswith("PCM") and not np.isfinite(data).all():
        raise AudioError(utt, source, "NaN or inf samples")
    if sr < target_sr and sr not in _UPSAMPLED:
        # Upsampled audio has no energy above sr/2: its upper mel bins are empty, a
        # mismatch with the rest of the corpus worth a line in the job log (once per rate).
        _UPSAMPLED.add(sr)
        log.warning(
            "utterance '%s' (%s): %d Hz audio resampled up to %d Hz; mel bins above %d Hz are empty "
            "(further %d Hz utterances of this job are not reported)",
            utt,
            source,
            sr,
            target_sr,
            sr // 2,
            sr,
        )
    return resample(data, sr, target_sr), sr


_UPSAMPLED: set = set()


def slice_segment(
    utt: str, source: str, wave: np.ndarray, sr: int, start: float, end: float, min_duration_s: float = 0.0
) -> np.ndarray:
    """Samples of segment [start, end) s of the recording ``wave`` (``sr`` Hz).

    ``end = -1``: to the end of the recording. An AudioError (naming the utterance, the
    recording's source and the times) for a negative start, an end before or at the
    start, a start at or past the end of the recording, an end more than Kaldi's 0.5 s
    past it (less is clipped), or a slice shorter than ``min_duration_s``: a bad segment
    never becomes a silent slice of the wrong audio.
    """
    n = wave.shape[0]
    what = f"segment {start:g}-{end:g} s"
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or (end != -1 and end <= start):
        raise AudioError(utt, source, f"{what}: invalid times (start >= 0 and end > start, or end = -1)")
    try:
        stop = segment_end(start, end, n / sr)
    except ValueError as e:
        raise AudioError(utt, source, f"{what}: {e}") from None
    a = int(round(start * sr))
    b = n if stop >= n / sr else min(int(round(stop * sr)), n)
    if b - a < max(1, int(math.ceil(min_duration_s * sr))):
        raise AudioError(
            utt,
            source,
            f"{what} has {max(b - a, 0)} samples (recording: {n}), shorter than {1000 * min_duration_s:.0f} ms",
        )
    return wave[a:b]
