"""Signals made in the tool when MUSAN is not given, and additive mixing at an SNR.

Coloured noise: white Gaussian noise shaped in the frequency domain by
``|H(f)| = f^(-beta/2)`` (power spectrum ``1/f^beta``; beta 0 white, 1 pink,
2 brown), normalised to unit power.
Music: a sequence of notes, each a sum of harmonics ``sum_k a^k sin(2 pi k f0 t)``
of a random equal-tempered pitch ``f0 = 440 * 2^(n/12)`` with an attack/decay
envelope, so the signal is tonal and non-stationary like MUSAN music.
Mixing: ``y = x + g n`` with ``g = sqrt(P_x / (P_n 10^(SNR/10)))`` so that
``10 log10(P_x / P(g n)) = SNR`` exactly (powers over the whole utterance).
"""

from __future__ import annotations

import numpy as np


def coloured_noise(num_samples: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise with power spectrum proportional to 1/f^beta.

    Shaped at the next FFT-friendly length (``scipy.fft.next_fast_len``) and cut to
    ``num_samples``: a piece of a longer stationary noise, the same spectrum. An FFT of an
    arbitrary length (an utterance's, often with large prime factors) is much slower and was
    most of the noise augmentation's time (docs/speed.md)."""
    from scipy import fft as sfft

    m = sfft.next_fast_len(max(num_samples, 2), real=True)
    white = rng.standard_normal(m)
    spec = sfft.rfft(white)
    f = np.fft.rfftfreq(m)
    f[0] = f[1]
    spec *= f ** (-beta / 2.0)
    noise = sfft.irfft(spec, n=m)[:num_samples]
    noise -= noise.mean()
    return (noise / max(np.sqrt(np.mean(noise**2)), 1e-12)).astype(np.float32)


def synth_music(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power random harmonic melody (notes of 0.15-0.6 s, 1-3 voices).

    A note is ``sum_k a^k sin((k+1) w t + phi_k)`` over the harmonics below Nyquist, computed
    as ``Im(sum_k a^k e^{i phi_k} z^(k+1))`` with ``z = e^{i w t}``: one complex exponential per
    note and a complex product per harmonic instead of a sine per harmonic (faster; equal to
    the sine sum to ~1e-12). The random draws are those of the sine sum, in its order."""
    out = np.zeros(num_samples, dtype=np.float64)
    for _ in range(int(rng.integers(1, 4))):
        pos = 0
        while pos < num_samples:
            dur = int(rng.uniform(0.15, 0.6) * sample_rate)
            n = min(dur, num_samples - pos)
            t = np.arange(n) / sample_rate
            f0 = 440.0 * 2.0 ** (rng.integers(-24, 13) / 12.0)
            decay = rng.uniform(0.3, 0.8)
            harmonics = [k for k in range(int(rng.integers(3, 9))) if (k + 1) * f0 < sample_rate / 2]
            phases = [rng.uniform(0, 2 * np.pi) for _ in harmonics]
            note = np.zeros(n)
            if harmonics:
                z = np.exp(1j * (2 * np.pi * f0 * t))
                power_k, acc = np.ones(n, dtype=np.complex128), np.zeros(n, dtype=np.complex128)
                for k, phi in zip(harmonics, phases):  # harmonics are 0, 1, ..., K: z^(k+1) in turn
                    power_k *= z
                    acc += (decay**k * np.exp(1j * phi)) * power_k
                note = acc.imag
            env = np.minimum(1.0, t / 0.01) * np.exp(-t * rng.uniform(1.0, 6.0))
            out[pos : pos + n] += env * note
            pos += dur
    out -= out.mean()
    return (out / max(np.sqrt(np.mean(out**2)), 1e-12)).astype(np.float32)


def fit_length(noise: np.ndarray, num_samples: int, offset: int = 0) -> np.ndarray:
    """Crop (from ``offset``) or loop ``noise`` to exactly ``num_samples`` samples."""
    if noise.shape[0] == 0:
        raise ValueError("empty noise signal")
    reps = int(np.ceil((offset % noise.shape[0] + num_samples) / noise.shape[0]))
    return np.tile(noise, reps)[offset % noise.shape[0] : offset % noise.shape[0] + num_samples]


def power(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64) ** 2))


def snr_gain(signal_power: float, noise_power: float, snr_db: float) -> float:
    """g with ``signal_power / (g^2 noise_power) = 10^(snr_db / 10)``; 0 for a silent signal or noise."""
    if noise_power <= 0.0 or signal_power <= 0.0:
        return 0.0
    return float(np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0))))


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal + g * noise`` with g chosen so that the SNR is ``snr_db`` (same lengths)."""
    return (signal + snr_gain(power(signal), power(noise), snr_db) * noise).astype(np.float32)
