"""One utterance: its random draws (text, prosody, session) and its rendering.

Per-utterance draws come from a generator keyed by (corpus seed, utterance id), so
an utterance is the same whichever worker makes it. With difficulty d:

- target duration: log-uniform on [min_dur, max_dur];
- prosody jitter: rate x exp(N(0, 0.08 d)), espeak pitch 50 + N(0, 8 d), range 50 + N(0, 12 d);
- reverberation with probability min(1, reverb_prob d): RT60 ~ U(rt60), DRR ~ U(-3, 12) dB;
- noise kind uniform over ``noise_kinds`` at SNR ~ U(snr_db) dB;
- channel: low edge U(20, 20 + 280 d) Hz, high edge U(max(3400, 7900 - 4500 d), 7900) Hz,
  tilt N(0, eq_tilt_db d) dB/octave, 3 peaking bands at log-uniform 150..6000 Hz with
  gain N(0, eq_peak_db d) dB and width U(0.3, 1.5) octaves;
- level: RMS ~ U(level_dbfs) dBFS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import channel
from .config import SynthConfig
from .seeding import stable_rng, stable_seed
from .text import sentence_for
from .voices import Voice


@dataclass
class UttPlan:
    utt: str
    lang: str
    text: str
    duration: float
    rate: int
    pitch: int
    pitch_range: int
    espeak_seed: int


def plan_utterance(cfg: SynthConfig, seed: int, voice: Voice, utt: str, lang: str) -> UttPlan:
    """Draw text and prosody of ``utt`` (spoken by ``voice`` in ``lang``)."""
    rng = stable_rng(seed, "text", utt)
    d = cfg.difficulty
    duration = float(np.exp(rng.uniform(np.log(cfg.min_dur), np.log(cfg.max_dur))))
    rate = float(np.clip(voice.rate_wpm * np.exp(rng.normal(0.0, 0.08 * d)), 80, 450))
    return UttPlan(
        utt=utt,
        lang=lang,
        text=sentence_for(lang, rng, duration, rate),
        duration=duration,
        rate=int(round(rate)),
        pitch=int(np.clip(round(50 + rng.normal(0.0, 8.0 * d)), 0, 100)),
        pitch_range=int(np.clip(round(50 + rng.normal(0.0, 12.0 * d)), 0, 100)),
        espeak_seed=stable_seed(seed, "espeak", utt) & 0x7FFFFFFF,
    )


def fit_duration(x: np.ndarray, rng: np.random.Generator, min_dur: float, max_dur: float) -> np.ndarray:
    """Cut to ``max_dur`` (20 ms fade-out) or zero-pad (split at random) to ``min_dur`` seconds."""
    sr = channel.SAMPLE_RATE
    hi, lo = int(max_dur * sr), int(np.ceil(min_dur * sr))
    if len(x) > hi:
        x = x[:hi].copy()
        fade = int(0.02 * sr)
        x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    elif len(x) < lo:
        left = int(rng.integers(0, lo - len(x) + 1))
        x = np.concatenate([np.zeros(left, np.float32), x, np.zeros(lo - len(x) - left, np.float32)])
    return x


def render(
    clean_22k: np.ndarray, cfg: SynthConfig, seed: int, utt: str, babble_bank: Optional[np.ndarray]
) -> np.ndarray:
    """Clean espeak-ng int16 samples (22050 Hz) -> the corpus' int16 samples at 16 kHz."""
    rng = stable_rng(seed, "session", utt)
    d = cfg.difficulty
    x = channel.to_16k(clean_22k)
    x = fit_duration(channel.trim_silence(x, rng), rng, cfg.min_dur, cfg.max_dur)
    if rng.random() < min(1.0, cfg.reverb_prob * d):
        rir = channel.synthetic_rir(rng, rt60=rng.uniform(*cfg.rt60), drr_db=rng.uniform(-3.0, 12.0))
        x = channel.reverberate(x, rir)
    kind, snr = str(rng.choice(cfg.noise_kinds)), rng.uniform(*cfg.snr_db)
    low = rng.uniform(20.0, 20.0 + 280.0 * d)
    high = rng.uniform(max(3400.0, 7900.0 - 4500.0 * d), 7900.0)
    tilt = rng.normal(0.0, cfg.eq_tilt_db * d)
    peaks = np.stack(
        [
            np.exp(rng.uniform(np.log(150.0), np.log(6000.0), 3)),
            rng.normal(0.0, cfg.eq_peak_db * d, 3) if d > 0 else np.zeros(3),
            rng.uniform(0.3, 1.5, 3),
        ],
        axis=1,
    )
    x = channel.noise_and_channel(
        x,
        kind,
        snr,
        rng,
        babble_bank,
        tuple(cfg.babble_talkers),
        lambda f: channel.channel_response(f, low, high, tilt, peaks),
    )
    return channel.to_int16(x, rng.uniform(*cfg.level_dbfs))
