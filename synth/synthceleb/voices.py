"""Synthetic speakers: one espeak-ng voice variant per speaker.

A voice is drawn from the distributions below with a generator seeded by
(corpus seed, speaker id), so a speaker sounds the same in every run and in both
languages. Formant frequencies model vocal-tract length (a uniform scaling
alpha of every formant, as in VTLN) and shape (a small independent deviation per
formant); strengths/widths model voice quality. Values are percentages of
espeak-ng's defaults unless a unit is given.

=================  ================================================================
voice class        P(male) = 0.45, P(female) = 0.45, P(child-like) = 0.10
                   (child-like speakers get gender m/f with probability 1/2 each)
alpha (F1..F8 %)   100 * N(mu, 0.05), mu = 0.95 male, 1.12 female, 1.28 child
formant shape      freq_k = alpha * exp(N(0, 0.04)) for k = 1..8; F0 = 100 * exp(N(0, 0.10))
strength, width    100 * exp(N(0, 0.25)) each, per formant
pitch base (Hz)    lognormal, median 105 male / 190 female / 260 child, sigma_log 0.15/0.12/0.10
pitch top (Hz)     base * U(1.25, 1.9)
rate (wpm)         N(165, 20) clipped to [115, 230]; per-utterance jitter is added later
breath             with P = 0.35: U(0, 12) per formant 1..8, else none
roughness          integer U{0..4};  flutter: integer U{0..20}
tone (tilt)        (U(400,800) Hz, U(140,220)), (U(1000,1600), U(100,170)), (U(1800,3000), U(70,140))
voicing            U(80, 120);  consonants U(70, 130) unvoiced, U(70, 130) voiced
intonation         one of 1, 2, 3 (espeak's styles);  stressAdd: 8 x round(N(0, 8))
=================  ================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

from .seeding import stable_rng

CLASSES = ("male", "female", "child")
CLASS_PROBS = (0.45, 0.45, 0.10)
_ALPHA_MU = {"male": 0.95, "female": 1.12, "child": 1.28}
_PITCH_MEDIAN = {"male": 105.0, "female": 190.0, "child": 260.0}
_PITCH_SIGMA = {"male": 0.15, "female": 0.12, "child": 0.10}


@dataclass
class Voice:
    """One speaker's voice: everything written into its espeak-ng variant file."""

    name: str
    klass: str
    gender: str  # 'm' | 'f' (Kaldi spk2gender)
    alpha: float
    formants: List[Tuple[int, int, int]] = field(default_factory=list)  # 9 x (freq, strength, width) %
    pitch_base: int = 105
    pitch_top: int = 150
    rate_wpm: float = 165.0
    breath: List[int] = field(default_factory=lambda: [0] * 8)
    roughness: int = 0
    flutter: int = 0
    tone: List[Tuple[int, int]] = field(default_factory=list)
    voicing: int = 100
    consonants: Tuple[int, int] = (100, 100)
    intonation: int = 1
    stress_add: List[int] = field(default_factory=lambda: [0] * 8)

    def variant_text(self) -> str:
        """The espeak-ng voice variant file (voices/!v/<name>) for this voice."""
        lines = [
            "language variant",
            f"// synthceleb class {self.klass} alpha {self.alpha:.3f}",
            f"name {self.name}",
            f"gender {'male' if self.gender == 'm' else 'female'}",
            f"pitch {self.pitch_base} {self.pitch_top}",
        ]
        lines += [f"formant {k} {f} {s} {w}" for k, (f, s, w) in enumerate(self.formants)]
        if any(self.breath):
            lines.append("breath " + " ".join(str(b) for b in self.breath))
        lines += [
            f"roughness {self.roughness}",
            f"flutter {self.flutter}",
            "tone " + "  ".join(f"{f} {a}" for f, a in self.tone),
            f"voicing {self.voicing}",
            f"consonants {self.consonants[0]} {self.consonants[1]}",
            f"intonation {self.intonation}",
            "stressAdd " + " ".join(str(s) for s in self.stress_add),
        ]
        return "\n".join(lines) + "\n"


def draw_voice(seed: int, spk: str) -> Voice:
    """Draw speaker ``spk``'s voice from the distributions of the module docstring."""
    rng = stable_rng(seed, "voice", spk)
    klass = CLASSES[int(rng.choice(len(CLASSES), p=CLASS_PROBS))]
    gender = ("m" if klass == "male" else "f") if klass != "child" else ("m" if rng.random() < 0.5 else "f")
    alpha = float(rng.normal(_ALPHA_MU[klass], 0.05))
    freqs = [100.0 * np.exp(rng.normal(0.0, 0.10))]
    freqs += list(100.0 * alpha * np.exp(rng.normal(0.0, 0.04, size=8)))
    strengths = 100.0 * np.exp(rng.normal(0.0, 0.25, size=9))
    widths = 100.0 * np.exp(rng.normal(0.0, 0.25, size=9))
    formants = [(int(round(f)), int(round(s)), int(round(w))) for f, s, w in zip(freqs, strengths, widths)]
    base = _PITCH_MEDIAN[klass] * np.exp(rng.normal(0.0, _PITCH_SIGMA[klass]))
    top = base * rng.uniform(1.25, 1.9)
    breathy = rng.random() < 0.35
    breath = [int(round(b)) for b in rng.uniform(0, 12, size=8)] if breathy else [0] * 8
    tone = [
        (int(rng.uniform(400, 800)), int(rng.uniform(140, 220))),
        (int(rng.uniform(1000, 1600)), int(rng.uniform(100, 170))),
        (int(rng.uniform(1800, 3000)), int(rng.uniform(70, 140))),
    ]
    return Voice(
        name=spk,
        klass=klass,
        gender=gender,
        alpha=alpha,
        formants=formants,
        pitch_base=int(round(base)),
        pitch_top=int(round(top)),
        rate_wpm=float(np.clip(rng.normal(165.0, 20.0), 115.0, 230.0)),
        breath=breath,
        roughness=int(rng.integers(0, 5)),
        flutter=int(rng.integers(0, 21)),
        tone=tone,
        voicing=int(rng.uniform(80, 120)),
        consonants=(int(rng.uniform(70, 130)), int(rng.uniform(70, 130))),
        intonation=int(rng.integers(1, 4)),
        stress_add=[int(round(s)) for s in rng.normal(0.0, 8.0, size=8)],
    )
