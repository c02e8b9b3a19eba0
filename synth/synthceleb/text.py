"""Random sentences from built-in word lists (English) and pinyin syllables (Mandarin).

No text corpus is used: English sentences follow a few fixed patterns
(determiner adjective noun verb ...) over common words written here; Mandarin
sentences are runs of tone-marked pinyin syllables (``ma3``), grouped into words of
1-3 syllables, which espeak-ng's ``cmn`` voice reads as Mandarin.

The length of a sentence is chosen for a target duration from the speaking rate:
about ``1.05 * rate / 60`` English words per second and ``4.0 * rate / 175``
Mandarin syllables per second (measured on espeak-ng 1.52 at the default voice).
"""

from __future__ import annotations

from typing import List

import numpy as np

DETERMINERS = "the a this that every some one my your our their another each".split()
ADJECTIVES = """big small red green blue quiet loud happy tired early late bright dark warm cold
soft hard quick slow young old fresh simple strange gentle heavy light clever busy empty
round sharp sweet bitter rich plain narrow wide distant nearby silver golden wooden""".split()
NOUNS = """dog cat river window garden teacher doctor market village mountain table letter
morning evening kitchen station bridge engine pencil basket ocean island forest valley
farmer painter student machine picture summer winter bottle ticket yellow candle mirror
orange lemon doorway harbor lantern pocket rabbit turtle violin jacket castle meadow planet
signal cottage wagon ladder blanket coffee rocket shadow thunder""".split()
VERBS = """sees finds carries paints opens closes follows watches builds cleans fixes moves
pushes pulls visits reaches answers covers lifts drops holds wants needs likes keeps brings
sells buys counts draws shows""".split()
ADVERBS = """slowly quickly today again often never always later softly loudly early
together outside inside quietly gladly rarely""".split()
PREPOSITIONS = "near behind under over beside across from into toward past".split()
CONJUNCTIONS = "and but while because so".split()

INITIALS = [
    "",
    "b",
    "p",
    "m",
    "f",
    "d",
    "t",
    "n",
    "l",
    "g",
    "k",
    "h",
    "j",
    "q",
    "x",
    "zh",
    "ch",
    "sh",
    "r",
    "z",
    "c",
    "s",
    "y",
    "w",
]
# finals allowed after each initial group (a simplified but valid subset of pinyin)
_FINALS_COMMON = ["a", "ai", "an", "ang", "ao", "e", "ei", "en", "eng", "ou", "u", "uo", "ong"]
_FINALS_J = ["i", "ia", "ian", "iang", "iao", "ie", "in", "ing", "iu", "iong", "u", "ue", "uan", "un"]
_FINALS_Y = ["a", "an", "ang", "ao", "e", "i", "in", "ing", "ong", "ou", "u", "ue", "uan", "un"]
_FINALS_W = ["a", "ai", "an", "ang", "ei", "en", "eng", "o", "u"]
_FINALS_LABIAL_EXTRA = ["i", "ian", "iao", "ie", "in", "ing"]


def pinyin_syllables() -> List[str]:
    """Toneless pinyin syllables built from initial/final combinations that exist in Mandarin."""
    out = []
    for ini in INITIALS:
        if ini in ("j", "q", "x"):
            finals = _FINALS_J
        elif ini == "y":
            finals = _FINALS_Y
        elif ini == "w":
            finals = _FINALS_W
        elif ini == "":
            finals = ["a", "ai", "an", "ang", "ao", "e", "ei", "en", "er", "ou"]
        else:
            finals = list(_FINALS_COMMON)
            if ini in ("b", "p", "m", "d", "t", "n", "l"):
                finals += _FINALS_LABIAL_EXTRA
            if ini in ("zh", "ch", "sh", "r", "z", "c", "s"):
                finals.append("i")
        if ini in ("b", "p", "m", "f"):
            finals = [f for f in finals if f not in ("uo", "ong", "ou")] + ["o"]
        out += [ini + f for f in finals]
    return sorted(set(out))


SYLLABLES = pinyin_syllables()


def english_sentence(rng: np.random.Generator, num_words: int) -> str:
    """About ``num_words`` words of clauses 'det adj noun verb det noun [adv|prep det noun]'."""
    words: List[str] = []
    while len(words) < num_words:
        if words:
            words[-1] += ","
            words.append(str(rng.choice(CONJUNCTIONS)))
        clause = [
            rng.choice(DETERMINERS),
            rng.choice(ADJECTIVES),
            rng.choice(NOUNS),
            rng.choice(VERBS),
            rng.choice(DETERMINERS),
            rng.choice(NOUNS),
        ]
        tail = rng.random()
        if tail < 0.4:
            clause.append(rng.choice(ADVERBS))
        elif tail < 0.7:
            clause += [rng.choice(PREPOSITIONS), rng.choice(DETERMINERS), rng.choice(NOUNS)]
        words += [str(w) for w in clause]
    return " ".join(words[: max(num_words, 3)]).rstrip(",") + "."


def mandarin_sentence(rng: np.random.Generator, num_syllables: int) -> str:
    """``num_syllables`` tone-numbered pinyin syllables, words of 1-3 syllables, a comma every ~8."""
    words: List[str] = []
    left = max(num_syllables, 2)
    since_comma = 0
    while left > 0:
        n = int(min(left, rng.choice([1, 2, 2, 2, 3])))
        syl = rng.choice(SYLLABLES, size=n)
        tones = rng.integers(1, 5, size=n)
        word = "".join(f"{s}{t}" for s, t in zip(syl, tones))
        since_comma += n
        left -= n
        if since_comma >= 8 and left > 2:
            word += ","
            since_comma = 0
        words.append(word)
    return " ".join(words) + "."


def sentence_for(lang: str, rng: np.random.Generator, duration_s: float, rate_wpm: float) -> str:
    """A random sentence of language ``lang`` that lasts about ``duration_s`` at ``rate_wpm``."""
    if lang == "en":
        return english_sentence(rng, int(round(duration_s * 1.05 * rate_wpm / 60.0)))
    if lang == "cmn":
        return mandarin_sentence(rng, int(round(duration_s * 4.0 * rate_wpm / 175.0)))
    raise ValueError(f"unknown language '{lang}' (known: en, cmn)")
