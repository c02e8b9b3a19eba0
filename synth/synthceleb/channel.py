"""Session variability applied to clean espeak-ng speech (all vectorised numpy/scipy).

Chain, at 16 kHz after :func:`to_16k` (polyphase resampling 22050 -> 16000 = 320/441):

1. reverberation ``y = x * h`` with a synthetic room impulse response (:func:`synthetic_rir`);
2. additive noise ``y + g n`` with ``g`` set for the drawn SNR,
   ``SNR = 10 log10(P_speech / (g^2 P_noise))``, and
3. a session channel ``Y(f) H(f)``: band-limiting plus a random spectral tilt and peaking
   EQ bands (:func:`channel_response`); 2 and 3 share one rfft/irfft pair
   (:func:`noise_and_channel`);
4. a gain to a random RMS level (dBFS), then 16-bit quantisation.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import fft as sfft
from scipy import signal

SAMPLE_RATE = 16000


@functools.lru_cache(maxsize=4)
def _resample_filter(up: int, down: int) -> np.ndarray:
    """resample_poly's own default anti-aliasing FIR (Kaiser beta 5, 10 zero crossings), made once."""
    max_rate = max(up, down)
    return signal.firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def to_16k(x_int16: np.ndarray, sr: int = 22050) -> np.ndarray:
    """int16 samples at ``sr`` -> float32 at 16 kHz in [-1, 1] (scipy.signal.resample_poly)."""
    x = x_int16.astype(np.float32) * np.float32(1.0 / 32768.0)
    if sr == SAMPLE_RATE:
        return x
    g = int(np.gcd(sr, SAMPLE_RATE))
    up, down = SAMPLE_RATE // g, sr // g
    return signal.resample_poly(x, up, down, window=_resample_filter(up, down)).astype(np.float32, copy=False)


def trim_silence(
    x: np.ndarray, rng: np.random.Generator, threshold: float = 1e-3, pad_s: tuple[float, float] = (0.05, 0.25)
) -> np.ndarray:
    """Cut leading/trailing samples below ``threshold``, keeping a random pad of silence each side."""
    idx = np.flatnonzero(np.abs(x) > threshold)
    if idx.size == 0:
        return x
    lo = max(0, idx[0] - int(rng.uniform(*pad_s) * SAMPLE_RATE))
    hi = min(len(x), idx[-1] + 1 + int(rng.uniform(*pad_s) * SAMPLE_RATE))
    return x[lo:hi]


def synthetic_rir(rng: np.random.Generator, rt60: float, drr_db: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Exponentially decaying Gaussian noise tail after a unit direct path.

    h[0] = 1; h[n] = a * w[n] * exp(-3 ln(10) n / (sr * rt60)) for n >= d (pre-delay d of 2-10 ms),
    i.e. energy falls by 60 dB after ``rt60`` seconds (Sabine's definition), and ``a`` is
    set so the direct-to-reverberant energy ratio is ``drr_db``. The tail is smoothed by a
    one-pole low-pass (air and wall absorption damp high frequencies).
    """
    n = max(int(rt60 * sr), 8)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-3.0 * np.log(10.0) * t / rt60)
    tail = signal.lfilter([0.4], [1.0, -0.6], tail)
    delay = int(rng.uniform(0.002, 0.010) * sr)
    tail[:delay] = 0.0
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / max(np.sum(tail**2), 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with ``rir`` (FFT), keep the input length, preserve the input RMS."""
    y = signal.fftconvolve(x, rir)[: len(x)]
    return (y * (_rms(x) / max(_rms(y), 1e-9))).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def _parseval_power(spec: np.ndarray, nfft: int) -> float:
    """Mean power of the length-``nfft`` signal whose rfft is ``spec`` (Parseval)."""
    p = np.abs(spec) ** 2
    total = p[0] + 2.0 * np.sum(p[1:]) - (p[-1] if nfft % 2 == 0 else 0.0)
    return float(total) / nfft**2


def noise_spectrum(
    kind: str, rng: np.random.Generator, nfft: int, babble_bank: np.ndarray | None, talkers: tuple[int, int] = (3, 7)
) -> np.ndarray:
    """rfft (length ``nfft``) of ``white`` | ``pink`` | ``babble`` noise.

    White: i.i.d. complex Gaussian bins; pink: the same with amplitude 1/sqrt(f) (power 1/f),
    both drawn directly in the frequency domain. Babble: the sum of k ~ U{talkers} random
    excerpts of ``babble_bank`` (rows = crowd talkers' speech, voices not in the corpus).
    """
    bins = nfft // 2 + 1
    if kind == "babble" and babble_bank is not None and babble_bank.shape[1] >= nfft:
        k = int(rng.integers(talkers[0], talkers[1] + 1))
        rows = rng.choice(babble_bank.shape[0], size=k, replace=k > babble_bank.shape[0])
        starts = rng.integers(0, babble_bank.shape[1] - nfft + 1, size=k)
        mix = np.zeros(nfft, np.float32)
        for r, s0 in zip(rows, starts):
            mix += babble_bank[r, s0 : s0 + nfft]
        return sfft.rfft(mix)
    if kind not in ("white", "pink", "babble"):
        raise ValueError(f"unknown noise kind '{kind}' (white, pink, babble)")
    spec = rng.standard_normal(bins) + 1j * rng.standard_normal(bins)
    if kind != "white":  # pink (and babble when no bank is long enough)
        f = np.arange(bins, dtype=np.float64)
        f[0] = 1.0
        spec /= np.sqrt(f)
    return spec


def speech_power(x: np.ndarray, frame: int = 320) -> float:
    """Mean power over the louder half of 20 ms frames (speech, not the pauses)."""
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    if frames.shape[0] < 2:
        return _rms(x) ** 2
    p = np.mean(np.square(frames, dtype=np.float64), axis=1)
    return float(np.mean(np.sort(p)[p.size // 2 :]))


def noise_and_channel(
    x: np.ndarray,
    noise_kind: str,
    snr_db: float,
    rng: np.random.Generator,
    babble_bank: np.ndarray | None,
    talkers: tuple[int, int],
    response_fn,
) -> np.ndarray:
    """y = IRFFT( (X + g N) H ), with g^2 = P_speech / (P_noise 10^(snr/10)), in one FFT pass.

    ``response_fn(freqs_hz)`` gives the channel magnitude |H(f)| (zero phase).
    """
    n = len(x)
    nfft = sfft.next_fast_len(n + 512, real=True)
    spec = sfft.rfft(x, nfft)
    noise = noise_spectrum(noise_kind, rng, nfft, babble_bank, talkers)
    g = np.sqrt(speech_power(x) / (_parseval_power(noise, nfft) * 10.0 ** (snr_db / 10.0)))
    freqs = np.arange(spec.size) * (SAMPLE_RATE / nfft)
    grid = np.linspace(0.0, SAMPLE_RATE / 2, 1025)  # |H| is smooth: evaluate on 7.8 Hz steps
    response = np.interp(freqs, grid, response_fn(grid))
    return sfft.irfft((spec + g * noise) * response, nfft)[:n].astype(np.float32)


def channel_response(
    freqs: np.ndarray, low_hz: float, high_hz: float, tilt_db_per_oct: float, peaks: np.ndarray
) -> np.ndarray:
    """Magnitude response H(f) of a session channel.

    Band-limiting: 4th-order Butterworth-like edges |H|^2 = 1 / (1 + (low/f)^8) / (1 + (f/high)^8).
    EQ in dB: ``tilt * log2(f / 1 kHz)`` plus peaking bands ``g * exp(-0.5 (log2(f/fc)/bw)^2)``
    for each row (fc Hz, g dB, bw octaves) of ``peaks``.
    """
    f = np.maximum(freqs, 1.0)
    band = 1.0 / np.sqrt((1.0 + (low_hz / f) ** 8) * (1.0 + (f / high_hz) ** 8))
    oct_ = np.log2(f / 1000.0)
    eq_db = tilt_db_per_oct * oct_
    if len(peaks):
        fc, g, bw = peaks[:, 0:1], peaks[:, 1:2], peaks[:, 2:3]
        eq_db = eq_db + np.sum(g * np.exp(-0.5 * (np.log2(f[None, :] / fc) / bw) ** 2), axis=0)
    return band * 10.0 ** (eq_db / 20.0)


def to_int16(x: np.ndarray, rms_dbfs: float) -> np.ndarray:
    """Scale to ``rms_dbfs`` (limited so the peak stays below full scale) and quantise to int16."""
    gain = 10.0 ** (rms_dbfs / 20.0) / _rms(x)
    peak = float(np.max(np.abs(x))) * gain
    if peak > 0.99:
        gain *= 0.99 / peak
    return np.round(x * gain * 32767.0).astype(np.int16)
