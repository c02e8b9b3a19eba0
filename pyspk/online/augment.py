"""Stage 2's augmentation drawn and applied per view, on the crop.

A view draws one kind (``clean``, ``reverb``, ``noise``, ``music``, ``babble``, or ``sp<f>``
when speed copies keep their speaker) with the probabilities of
:func:`pyspk.online.config.check_online_config`, then the kind's recipe with stage 2's own
:func:`pyspk.augment.recipes._recipe` (the same AugmentConfig, the same draws: SNR lists, noise
event lengths and gaps, 3-7 babble speakers, RIR index), and applies it as stage 2's
:class:`~pyspk.augment.apply.RecipeApplier` does (Kaldi's SNR rules: every added signal scaled
on its own against the power of the clean signal; MUSAN files read as offline). What changes
online, for speed and because a view is a crop:

* the recipe is drawn for the *decoded region* (the crop and its frame context): noise events
  are planned over its duration, signal powers are its powers, and a background signal is cut
  to its length;
* synthesised noise and music (no MUSAN) are cut from a **bank** made once per seed with
  stage 2's own generators (:func:`~pyspk.augment.signals.coloured_noise` per ``noise_betas``
  value, :func:`~pyspk.augment.signals.synth_music`) and kept beside the RIR pool as ``.npy``
  files that every loader worker maps read-only: a synthesised event takes the bank's noise
  of its beta at an offset given by its recipe's seed (a piece of a longer stationary noise:
  the same spectrum, as ``coloured_noise`` itself says), a music recipe a piece of one of the
  bank's melodies. Generating them per view was most of the online time;
* babble speakers are other speakers' audio cut to the region's length from a random point:
  the regions already decoded for the batch's other speakers (audio source; the data dir's
  utterances when the batch holds one speaker) or for the last utterances out of the shard
  stream (:attr:`OnlineAugmenter.babble_source` resolves the recipe's tokens), so babble costs
  no extra decoding; MUSAN speech as offline;
* reverberation is an FFT convolution in float32 with the RIR's spectrum cached per FFT size;
  the region is decoded with the RIR's length before it and its direct-path delay after it, so
  the reverberant crop equals the crop of the reverberant utterance (the tail of earlier speech
  included) up to float32 rounding and the power rescaling, done over the crop;
* mixing is in float32 (offline: float64).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import fft as sfft

from pyspk.augment.apply import RecipeApplier
from pyspk.augment.recipes import _recipe
from pyspk.augment.signals import fit_length, snr_gain

SPEED_MARGIN = 256  # input samples decoded beyond a speed-perturbed region (the resampler's support)
_SPECTRA_MAX = 256  # cached RIR spectra per process (RIRs x FFT sizes)
BANK_NOISE_S = 60.0  # seconds of synthesised noise per beta
BANK_MUSIC = (16, 30.0)  # synthesised melodies x seconds


def bank_paths(where, sample_rate: int, seed: int) -> Tuple[Path, Path]:
    where = Path(where).resolve()
    return (
        where / f"synth_noise.sr{sample_rate}.seed{seed}.npy",
        where / f"synth_music.sr{sample_rate}.seed{seed}.npy",
    )


def make_bank(where, cfg, sample_rate: int, seed: int) -> dict:
    """Write (once; atomically) the synthesised noise and music bank; return its context entry."""
    from pyspk.augment.signals import coloured_noise, synth_music
    from pyspk.io import atomic_path

    noise_path, music_path = bank_paths(where, sample_rate, seed)
    betas = [float(b) for b in cfg.noise_betas]
    noise_path = noise_path.with_name(noise_path.stem + ".b" + "_".join(f"{b:g}" for b in betas) + ".npy")
    if not noise_path.is_file():
        n = int(BANK_NOISE_S * sample_rate)
        bank = np.stack([coloured_noise(n, b, np.random.default_rng([seed, 1, i])) for i, b in enumerate(betas)])
        with atomic_path(noise_path) as tmp, open(tmp, "wb") as f:
            np.save(f, bank.astype(np.float32))
    if not music_path.is_file():
        k, sec = BANK_MUSIC
        bank = np.stack(
            [synth_music(int(sec * sample_rate), sample_rate, np.random.default_rng([seed, 2, i])) for i in range(k)]
        )
        with atomic_path(music_path) as tmp, open(tmp, "wb") as f:
            np.save(f, bank.astype(np.float32))
    return {"noise": str(noise_path), "betas": betas, "music": str(music_path)}


def fft_size(n: int) -> int:
    """An FFT length >= ``n`` for ``scipy.fft``'s real transforms: the least multiple of 256 whose
    quotient has no prime factor above 5 (beyond small sizes, where ``next_fast_len``'s least
    5-smooth length is kept). Among the 5-smooth lengths, pocketfft's are fastest with a large
    power of two; ``next_fast_len`` picks the least one, 3^4 5^4 say, often slower than a
    slightly longer 2^11 5^2."""
    if n <= 4096:
        return sfft.next_fast_len(n, real=True)
    m = -(-n // 256)
    while True:
        q = m
        for p in (2, 3, 5):
            while q % p == 0:
                q //= p
        if q == 1:
            return 256 * m
        m += 1


def _piece(bank: np.ndarray, seed: int, n: int) -> np.ndarray:
    """``n`` samples of ``bank`` (1-D) from an offset given by ``seed`` (looped past its end)."""
    length = bank.shape[0]
    if n >= length:
        return fit_length(np.asarray(bank), n, seed % length)
    off = seed % (length - n + 1)
    return bank[off : off + n]


class OnlineAugmenter(RecipeApplier):
    """Draws a view's kind and recipe; applies it (see the module docstring)."""

    def __init__(self, cfg, kinds: Sequence[str], probs: Sequence[float], sample_rate: int, context: dict):
        super().__init__(sample_rate)
        self.cfg, self.kinds = cfg, list(kinds)
        self.cum = np.cumsum(np.asarray(probs, dtype=np.float64))
        self.context = dict(context)
        self._spectra: Dict[Tuple[str, int], np.ndarray] = {}
        self._unit: Dict[str, Tuple[np.ndarray, int]] = {}
        self._bank: Optional[dict] = None
        # (token, n samples, at) -> float32 samples of a babble source; set by the dataset
        self.babble_source: Optional[Callable[[str, int, float], np.ndarray]] = None

    # ------------------------------------------------------------------ drawing
    def draw_kind(self, rng: np.random.Generator) -> str:
        if len(self.kinds) == 1:
            return self.kinds[0]
        return self.kinds[
            min(int(np.searchsorted(self.cum, rng.random() * self.cum[-1], side="right")), len(self.kinds) - 1)
        ]

    def recipe(
        self,
        kind: str,
        utt: str,
        rng: np.random.Generator,
        duration_s: float,
        babble_pool: Optional[Callable[[np.random.Generator], List[str]]] = None,
    ) -> Optional[dict]:
        """Stage 2's recipe of ``kind`` for a region of ``duration_s``; None for ``clean`` (and for
        babble without MUSAN speech when ``babble_pool`` is None: nobody to mix)."""
        if kind == "clean":
            return None
        if kind.startswith("sp"):
            return {"kind": "speed", "factor": float(kind[2:])}
        if kind == "babble" and babble_pool is None and not self.context.get("musan", {}).get("speech"):
            return None  # no other speaker within reach (a shard stream of one speaker): clean
        ctx = dict(
            self.context,
            utt_dur=lambda _u: duration_s,
            babble_pool=lambda _u: babble_pool(rng) if babble_pool is not None else [],
        )
        r = _recipe(kind, utt, rng, self.cfg, ctx)
        if kind == "babble":
            for b in r["background"]:
                if "source" in b:
                    b["at"] = float(rng.random())  # where in the other utterance its piece starts
        return r

    # ------------------------------------------------------------------ speed
    def _speed(self, utt, wave, r):
        """Lhotse's ``Speed`` (:meth:`RecipeApplier._speed`): its cached resampler's polyphase
        kernel applied as one matrix product of the strided input (rows ``orig`` samples apart)
        instead of a strided ``conv1d``: the same products, equal up to float32 summation order."""
        from lhotse.augmentation.torchaudio import get_or_create_resampler

        rs = get_or_create_resampler(round(self.sample_rate * float(r["factor"])), self.sample_rate)
        kernel = getattr(rs, "kernel", None)
        if kernel is None or kernel.dim() != 3 or kernel.shape[1] != 1 or wave.ndim != 1:
            return super()._speed(utt, wave, r)
        orig, new, width, taps = rs.orig_freq // rs.gcd, rs.new_freq // rs.gcd, rs.width, kernel.shape[2]
        n = wave.shape[0]
        with torch.inference_mode():
            x = torch.nn.functional.pad(
                torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), (width, width + orig)
            )
            rows = (x.shape[0] - taps) // orig + 1
            y = torch.matmul(x.as_strided((rows, taps), (orig, 1)), kernel[:, 0, :].t()).reshape(-1)
            return y[: math.ceil(new * n / orig)].numpy()

    # ------------------------------------------------------------------ reverb
    def unit_rir(self, r: dict) -> Tuple[str, np.ndarray, int]:
        """(key, RIR scaled to unit energy as float32, index of its direct path)."""
        key = f"{r['rir_pool']}#{int(r['index'])}" if "rir_pool" in r else r["rir"]
        got = self._unit.get(key)
        if got is None:
            if "rir_pool" in r:
                if r["rir_pool"] not in self._pools:
                    from pyspk.augment.rir import load_pool

                    self._pools[r["rir_pool"]] = load_pool(r["rir_pool"])
                h = self._pools[r["rir_pool"]][int(r["index"])]
            else:
                if r["rir"] not in self._rirs:
                    from pyspk.features.audio import read_audio

                    self._rirs[r["rir"]] = read_audio("rir", r["rir"], self.sample_rate, 0.0)
                h = self._rirs[r["rir"]]
            h = np.asarray(h, dtype=np.float64)
            h = h / max(np.sqrt(np.sum(h**2)), 1e-12)
            got = (h.astype(np.float32), int(np.argmax(np.abs(h))))
            self._unit[key] = got
        return key, got[0], got[1]

    def convolve(self, x: np.ndarray, key: str, h: np.ndarray, lo: int = 0, hi: Optional[int] = None) -> np.ndarray:
        """Samples ``[lo, hi)`` (default: all, ``len(x) + len(h) - 1``) of the linear convolution
        ``x * h`` in float32, the RIR's spectrum cached. Computed as a circular convolution of
        :func:`fft_size` ``(N)`` points, ``N`` the least for which ``[lo, hi)`` does not wrap: at
        least ``hi`` and ``len(x)``, and at least ``len(x) + len(h) - 1 - lo`` (a wrapped product
        ``h[k] x[t - k + N]`` must land in the zero padding). For a region decoded with the RIR's
        length before it, that is about ``len(x)``, not ``len(x) + len(h) - 1``."""
        full = x.shape[0] + h.shape[0] - 1
        hi = full if hi is None else min(hi, full)
        nfft = fft_size(max(hi, full - lo, x.shape[0]))
        spec = self._spectra.get((key, nfft))
        if spec is None:
            if len(self._spectra) >= _SPECTRA_MAX:
                self._spectra.clear()
            spec = self._spectra[(key, nfft)] = sfft.rfft(h, nfft)
        xs = sfft.rfft(x, nfft)
        xs *= spec
        return sfft.irfft(xs, nfft)[lo:hi]

    def reverb_region(self, x: np.ndarray, base: int, a: int, b: int, r: dict) -> np.ndarray:
        """Samples ``[a, b)`` of the reverberant signal, from ``x`` = samples ``[base, base + len(x))``
        of the dry one (which must reach ``len(h) - 1 - delay`` before ``a`` and ``delay`` past
        ``b`` where the signal has them): ``y[t] = sum_k h[k] x[t + delay - k]``, rescaled to the
        power of the dry ``x[a:b]`` (:func:`pyspk.augment.rir.reverberate`, on the region)."""
        key, h, delay = self.unit_rir(r)
        y = self.convolve(np.ascontiguousarray(x, dtype=np.float32), key, h, a + delay - base, b + delay - base)
        dry = x[a - base : b - base]
        py = _power(y)
        if py > 0:
            y *= np.float32(np.sqrt(_power(dry) / py))
        return y.astype(np.float32, copy=False)

    def margins(self, r: Optional[dict]) -> Tuple[int, int]:
        """Samples a region needs decoded before and after it for ``r`` (reverb only)."""
        if r is None or r.get("kind") != "reverb":
            return 0, 0
        _, h, delay = self.unit_rir(r)
        return h.shape[0] - 1 - delay, delay

    # ------------------------------------------------------------------ additive kinds
    def bank(self) -> dict:
        if self._bank is None:
            spec = self.context.get("synth_bank")
            if spec is None:
                raise ValueError("synthesised noise or music needs the bank of pyspk.online.augment.make_bank")
            self._bank = {
                "noise": np.load(spec["noise"], mmap_mode="r"),
                "betas": list(spec["betas"]),
                "music": np.load(spec["music"], mmap_mode="r"),
            }
        return self._bank

    def _noise(self, utt, wave, r):
        n, ps = wave.shape[0], _power(wave)
        out = np.array(wave, dtype=np.float32)
        for ev in r["events"]:
            start = int(round(float(ev["start_s"]) * self.sample_rate))
            if start >= n:
                continue
            if "synth" in ev:
                s = ev["synth"]
                length = min(max(1, int(round(float(s["dur_s"]) * self.sample_rate))), n - start)
                bank = self.bank()
                beta = float(s["beta"])
                if beta in bank["betas"]:
                    part = _piece(bank["noise"][bank["betas"].index(beta)], int(s["seed"]), length)
                else:  # a beta outside the bank's (another config): generate it, as offline
                    from pyspk.augment.signals import coloured_noise

                    part = coloured_noise(length, beta, np.random.default_rng(int(s["seed"])))
            else:  # only the part that fits (a MUSAN noise may be minutes long); its power sets the gain
                part = self._read_segment(utt, ev["path"], 0.0, n - start, loop=False)[: n - start]
            out[start : start + part.shape[0]] += np.float32(snr_gain(ps, _power(part), float(ev["snr"]))) * part
        return out

    def _music(self, utt, wave, r):
        n = wave.shape[0]
        if "synth" in r:
            bank = self.bank()["music"]
            seed = int(r["synth"]["seed"])
            music = _piece(bank[seed % bank.shape[0]], seed // bank.shape[0], n)
        else:
            f = r["files"][0]
            music = self._read_segment(utt, f["path"], float(f.get("offset_s", 0.0)), n)
        return (wave + np.float32(snr_gain(_power(wave), _power(music), float(r["snr"]))) * music).astype(np.float32)

    def _babble(self, utt, wave, r):
        """Each background speaker at its own SNR; ``source`` tokens of the online pools are read
        through :attr:`babble_source` as a piece of the region's length from point ``at``."""
        n, ps = wave.shape[0], _power(wave)
        out = np.array(wave, dtype=np.float32)
        for i, b in enumerate(r["background"]):
            if "source" in b and self.babble_source is not None:
                other = fit_length(self.babble_source(b["source"], n, float(b.get("at", 0.0))), n)
            elif "source" in b:
                from pyspk.features.audio import read_audio

                other = fit_length(read_audio(f"{utt}[babble {i}]", b["source"], self.sample_rate), n)
            else:
                other = self._read_segment(utt, b["path"], float(b.get("offset_s", 0.0)), n)
            out += np.float32(snr_gain(ps, _power(other), float(b["snr"]))) * other
        return out


def _power(x: np.ndarray) -> float:
    """Mean square in float32 (:func:`pyspk.augment.signals.power` without its float64 copy)."""
    x = np.asarray(x, dtype=np.float32)
    return float(np.dot(x, x)) / x.shape[0] if x.shape[0] else 0.0
