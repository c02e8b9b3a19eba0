"""Apply one augmentation recipe (a JSON object from ``aug.scp``) to a waveform.

Recipe kinds (every random choice is made when the recipe is written, from the seed,
so applying it is deterministic):

    {"kind": "reverb", "rir_pool": "rirs.npz", "index": k}  or  {"kind": "reverb", "rir": "x.wav"}
    {"kind": "noise", "events": [{"start_s": t, "snr": dB, "synth": {"beta": b, "seed": s, "dur_s": d}}
                                  or {"start_s": t, "snr": dB, "path": MUSAN noise file}, ...]}
    {"kind": "music", "snr": dB, "synth": {"seed": s}}  or  "files": [{"path", "offset_s"}]
    {"kind": "babble", "background": [{"snr": dB, "source": wav.scp value of another speaker's utterance}
                                      or {"snr": dB, "path": MUSAN speech file, "offset_s": 0}, ...]}
    {"kind": "speed", "factor": 0.9}                    (Lhotse ``Speed``, i.e. perturb_speed)

As Kaldi's ``wav-reverberate --additive-signals``: every added signal is scaled on its
own so that (power of the clean utterance) / (power of the scaled signal) is its SNR
(for a foreground noise cut at the end of the utterance: the power of the part added).
Foreground noises (``noise``) start at their ``start_s`` and keep their own length,
cut at the end of the utterance; background signals (``music``, each babble speaker)
are looped or cropped to the utterance's length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from pyspk.augment.rir import load_pool, reverberate
from pyspk.augment.signals import coloured_noise, fit_length, mix_at_snr, power, snr_gain, synth_music
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


def read_recipes(
    data_dir: Path, utts: List[str], lines: Dict[str, Tuple[int, str]] | None = None
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

    def _read_segment(self, utt, path, offset_s, n, loop: bool = True):
        """``n`` samples (at our rate) of ``path`` from ``offset_s``, looping past its end;
        with ``loop=False`` at most ``n``, stopping at the end."""
        import soundfile as sf

        try:
            info = sf.info(path)
            start = int(offset_s * info.samplerate) % max(info.frames, 1)
            need = int(np.ceil(n * info.samplerate / self.sample_rate)) + 1
            data, sr = sf.read(path, start=start, frames=need, dtype="float32", always_2d=True)
            if loop and data.shape[0] < need:  # wrap around: the whole file, looped from ``start``
                whole, sr = sf.read(path, dtype="float32", always_2d=True)
                data = fit_length(whole, need, start)
        except Exception as e:
            raise AudioError(utt, path, f"cannot read augmentation audio: {e}") from None
        if data.shape[0] == 0:
            raise AudioError(utt, path, "empty augmentation audio")
        out = resample(np.ascontiguousarray(data[:, 0]), sr, self.sample_rate)
        return fit_length(out, n) if loop else out[:n]

    def _noise(self, utt, wave, r):
        n, ps = wave.shape[0], power(wave)
        out = wave.astype(np.float64)
        for ev in r["events"]:
            start = int(round(float(ev["start_s"]) * self.sample_rate))
            if start >= n:
                continue
            if "synth" in ev:
                s = ev["synth"]
                length = max(1, int(round(float(s["dur_s"]) * self.sample_rate)))
                sig = coloured_noise(length, float(s["beta"]), np.random.default_rng(int(s["seed"])))
            else:  # only the part that fits (a MUSAN noise may be minutes long); its power sets the gain
                sig = self._read_segment(utt, ev["path"], 0.0, n - start, loop=False)
            part = sig[: n - start]
            out[start : start + part.shape[0]] += snr_gain(ps, power(part), float(ev["snr"])) * part
        return out.astype(np.float32)

    def _music(self, utt, wave, r):
        n = wave.shape[0]
        if "synth" in r:
            music = synth_music(n, self.sample_rate, np.random.default_rng(int(r["synth"]["seed"])))
        else:
            f = r["files"][0]
            music = self._read_segment(utt, f["path"], float(f.get("offset_s", 0.0)), n)
        return mix_at_snr(wave, music, float(r["snr"]))

    def _babble(self, utt, wave, r):
        n, ps = wave.shape[0], power(wave)
        out = wave.astype(np.float64)
        for i, b in enumerate(r["background"]):
            if "source" in b:
                other = fit_length(read_audio(f"{utt}[babble {i}]", b["source"], self.sample_rate), n)
            else:
                other = self._read_segment(utt, b["path"], float(b.get("offset_s", 0.0)), n)
            out += snr_gain(ps, power(other), float(b["snr"])) * other
        return out.astype(np.float32)

    def _speed(self, utt, wave, r):
        from lhotse.augmentation import Speed

        return Speed(factor=float(r["factor"]))(wave[None, :], self.sample_rate)[0].astype(np.float32)
