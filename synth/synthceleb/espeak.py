"""A minimal ctypes driver for libespeak-ng from the ``espeakng-loader`` wheel.

The library and its data ship inside the wheel, so no system package is needed.
espeak-ng is a process-wide singleton: :func:`get_engine` initialises it once per
process (``espeak_Initialize`` with ``AUDIO_OUTPUT_SYNCHRONOUS``) and every call of
:meth:`Engine.synth` collects the int16 samples (22050 Hz) handed to the synth
callback.

Speaker voices are espeak-ng *voice variants* (files under ``voices/!v/``). The
wheel's data directory is never modified: :func:`make_data_overlay` builds a private
(temporary) data directory whose entries are symbolic links to the wheel's files and
whose ``voices/!v`` holds the variant files one process needs, and the engine is
initialised on that overlay.

Synthesis is deterministic given voice, text, parameters and the seed of espeak's
internal random generator (``espeak_ng_SetRandSeed``, used for breath noise), so the
same utterance is byte-identical whichever worker process makes it.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import List, Optional

import numpy as np

SAMPLE_RATE = 22050
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
# espeak_PARAMETER enum
RATE, VOLUME, PITCH, RANGE = 1, 2, 3, 4

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """libespeak-ng refused a call (bad voice name, data path, ...)."""


def wheel_paths() -> tuple[Path, Path]:
    """(shared library, data directory) of the installed espeakng-loader wheel."""
    import espeakng_loader

    return Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())


_CORE_DATA = ("phondata", "phonindex", "phontab", "intonations", "lang")


def make_data_overlay(dst: Path, variants: dict[str, str], languages=("en", "cmn"), src: Optional[Path] = None) -> Path:
    """Build a private espeak-ng data directory at ``dst`` holding ``variants``.

    The wheel's phoneme data, intonations, language definitions (``lang/``) and the
    dictionaries of ``languages`` are linked from ``src``; ``dst/voices/!v`` gets one
    file per entry of ``variants`` (name -> variant file text) and nothing else:
    espeak-ng lists every voice file at start-up and stops at 350, so an overlay holds
    only the few variants one process needs. Returns ``dst``.
    """
    src = Path(src) if src is not None else wheel_paths()[1]
    dst = Path(dst)
    vdir = dst / "voices" / "!v"
    vdir.mkdir(parents=True, exist_ok=True)
    for name in _CORE_DATA + tuple(f"{lang}_dict" for lang in languages):
        if not (src / name).exists():
            raise EspeakError(f"{src / name}: missing from the espeak-ng data of the wheel")
        if not (dst / name).is_symlink():
            (dst / name).symlink_to(src / name)
    for name, text in variants.items():
        (vdir / name).write_text(text)
    return dst


class Engine:
    """One initialised espeak-ng instance (per process)."""

    def __init__(self, data_path: Path):
        lib_path, _ = wheel_paths()
        self.data_path = Path(data_path)
        self._lib = ctypes.CDLL(str(lib_path))
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 1000, str(self.data_path).encode(), 0)
        if rate != SAMPLE_RATE:
            raise EspeakError(f"espeak_Initialize({self.data_path}) returned {rate}, expected {SAMPLE_RATE} Hz")
        self._chunks: List[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def synth(
        self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50, seed: int = 0
    ) -> np.ndarray:
        """Speak ``text`` with ``voice`` (e.g. ``"en+spk001"``); return int16 samples at 22050 Hz.

        ``rate`` is in words per minute (80..450); ``pitch``/``pitch_range`` are espeak's
        0..100 scalings of the voice's own pitch (50 = as the voice file says).
        """
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak_SetVoiceByName('{voice}') failed (data: {self.data_path})")
        for param, value in ((RATE, rate), (PITCH, pitch), (RANGE, pitch_range), (VOLUME, 100)):
            lib.espeak_SetParameter(param, int(value), 0)
        lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
        self._chunks = []
        data = text.encode("utf-8")
        err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise EspeakError(f"espeak_Synth failed with status {err} for voice '{voice}': {text[:60]!r}")
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks).astype(np.int16, copy=False)


_ENGINE: Optional[Engine] = None


def get_engine(data_path: Path) -> Engine:
    """The process' engine, initialised on ``data_path`` on first use.

    A forked worker inherits its parent's engine (synchronous mode keeps no thread),
    and every call sets voice, parameters and seed afresh, so that is safe.
    """
    global _ENGINE
    if _ENGINE is None or _ENGINE.data_path != Path(data_path):
        _ENGINE = Engine(Path(data_path))
    return _ENGINE
