"""Apply one augmentation recipe (a JSON object from ``aug.scp``) to a waveform.

Recipe kinds (every random choice is made when the recipe is written, from the seed,
so applying it is deterministic):

    {"kind": "reverb", "rir_pool": "rirs.npz", "index": k}  or  {"kind": "reverb", "rir": "x.wav"}
    {"kind": "noise",  "snr": dB, "synth": {"beta": b, "seed": s}}  or  "files": [{"path", "offset"}]
    {"kind": "music",  "snr": dB, "synth": {"seed": s}}             or  "files": [...]
    {"kind": "babble", "snr": dB, "sources": [wav.scp values of 3-7 other utterances]}
    {"kind": "speed",  "factor": 0.9}                       (Lhotse ``Speed``, i.e. perturb_speed)

Additive noise is mixed over the whole utterance at the recipe's SNR
(:func:`pyspk.augment.signals.mix_at_snr`); the babble sources are each scaled to
unit power and summed before mixing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from pyspk.augment.rir import load_pool, reverberate
from pyspk.augment.signals import coloured_noise, fit_length, mix_at_snr, synth_music
from pyspk.features.audio import AudioError, read_audio, resample


def recipe_lines(data_dir: Path) -> Dict[str, Tuple[int, str]]:
    """utt -> (line number, JSON text) of ``data_dir/aug.scp``; empty when absent."""
    path = Path(data_dir) / "aug.scp"
    if not path.is_file():
        return {}
    out = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        utt, _, js = line.partition(" ")
        out[utt] = (lineno, js)
    return out


def read_recipes(data_dir: Path, utts: List[str], lines: Dict[str, Tuple[int, str]] | None = None
                 ) -> Tuple[Dict[str, dict], str]:
    """Recipes of ``utts`` (from ``lines`` or ``data_dir/aug.scp``) and their raw text."""
    lines = recipe_lines(data_dir) if lines is None else lines
    recipes, text = {}, []
    for utt in utts:
        if utt in lines:
            lineno, js = lines[utt]
            try:
                recipes[utt] = json.loads(js)
            except json.JSONDecodeError as e:
                raise ValueError(f"{Path(data_dir) / 'aug.scp'}:{lineno}: bad recipe for '{utt}': {e}") from None
            text.append(f"{utt} {js}")
    return recipes, "\n".join(text)


class RecipeApplier:
    """Applies recipes at ``sample_rate``; caches RIR pools and files across utterances."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self._pools: Dict[str, List[np.ndarray]] = {}
        self._rirs: Dict[str, np.ndarray] = {}

    def __call__(self, utt: str, wave: np.ndarray, recipe: dict) -> np.ndarray:
        kind = recipe.get("kind")
        fn = getattr(self, f"_{kind}", None)
        if fn is None:
            raise ValueError(f"utterance '{utt}': unknown augmentation kind '{kind}'")
        return fn(utt, wave, recipe)

    def _reverb(self, utt, wave, r):
        if "rir_pool" in r:
            if r["rir_pool"] not in self._pools:
                self._pools[r["rir_pool"]] = load_pool(r["rir_pool"])
            rir = self._pools[r["rir_pool"]][int(r["index"])]
        else:
            if r["rir"] not in self._rirs:
                self._rirs[r["rir"]] = read_audio(utt, r["rir"], self.sample_rate, 0.0)
            rir = self._rirs[r["rir"]]
        return reverberate(wave, rir)

    def _noise_signal(self, utt, n, r, synth_fn):
        if "synth" in r:
            return synth_fn(n, r["synth"])
        parts = [self._read_segment(utt, f["path"], float(f.get("offset_s", 0.0)), n) for f in r["files"]]
        return np.sum([p / max(np.sqrt(np.mean(p.astype(np.float64) ** 2)), 1e-12) for p in parts], axis=0)

    def _read_segment(self, utt, path, offset_s, n):
        """``n`` samples (at our rate) of ``path`` from ``offset_s``, looping past its end."""
        import soundfile as sf

        try:
            info = sf.info(path)
            start = int(offset_s * info.samplerate) % max(info.frames, 1)
            need = int(np.ceil(n * info.samplerate / self.sample_rate)) + 1
            data, sr = sf.read(path, start=start, frames=need, dtype="float32", always_2d=True)
            if data.shape[0] < need:  # wrap around: the whole file, looped from ``start``
                whole, sr = sf.read(path, dtype="float32", always_2d=True)
                data = fit_length(whole, need, start)
        except Exception as e:
            raise AudioError(utt, path, f"cannot read augmentation audio: {e}") from None
        return fit_length(resample(np.ascontiguousarray(data[:, 0]), sr, self.sample_rate), n)

    def _noise(self, utt, wave, r):
        synth = lambda n, s: coloured_noise(n, float(s["beta"]), np.random.default_rng(int(s["seed"])))  # noqa: E731
        return mix_at_snr(wave, self._noise_signal(utt, wave.shape[0], r, synth), float(r["snr"]))

    def _music(self, utt, wave, r):
        synth = lambda n, s: synth_music(n, self.sample_rate, np.random.default_rng(int(s["seed"])))  # noqa: E731
        return mix_at_snr(wave, self._noise_signal(utt, wave.shape[0], r, synth), float(r["snr"]))

    def _babble(self, utt, wave, r):
        n = wave.shape[0]
        total = np.zeros(n, dtype=np.float64)
        for i, src in enumerate(r["sources"]):
            other = read_audio(f"{utt}[babble {i}]", src, self.sample_rate)
            other = fit_length(other, n)
            total += other / max(np.sqrt(np.mean(other.astype(np.float64) ** 2)), 1e-12)
        return mix_at_snr(wave, total, float(r["snr"]))

    def _speed(self, utt, wave, r):
        from lhotse.augmentation import Speed

        return Speed(factor=float(r["factor"]))(wave[None, :], self.sample_rate)[0].astype(np.float32)
