"""Balanced verification trials over the test speakers.

A list pairs an enrolment utterance in language ``enroll_lang`` with a test utterance in
``test_lang``. Targets are drawn without replacement from every same-speaker pair
(unordered when both languages are equal, so ``a b`` and ``b a`` never both appear);
non-targets are drawn uniformly from different-speaker pairs, as many as targets.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

Trial = Tuple[str, str, bool]


def make_trials(
    utts: Mapping[str, Mapping[str, Sequence[str]]],
    enroll_lang: str,
    test_lang: str,
    num_trials: int,
    rng: np.random.Generator,
) -> List[Trial]:
    """``utts[spk][lang]`` -> up to ``num_trials`` trials, half target, sorted by (enroll, test)."""
    speakers = sorted(utts)
    same = enroll_lang == test_lang
    targets: List[Tuple[str, str]] = []
    for spk in speakers:
        enr, tst = list(utts[spk].get(enroll_lang, [])), list(utts[spk].get(test_lang, []))
        targets += [(e, t) for e in enr for t in tst if e != t and (not same or e < t)]
    n = min(num_trials // 2, len(targets))
    if n == 0:
        return []
    pick = rng.choice(len(targets), size=n, replace=False)
    chosen = [targets[i] for i in sorted(pick)]

    enroll = [(u, s) for s in speakers for u in utts[s].get(enroll_lang, [])]
    test = [(u, s) for s in speakers for u in utts[s].get(test_lang, [])]
    seen = set()
    nontargets: List[Tuple[str, str]] = []
    max_draws = 50 * n + 1000
    draws = 0
    while len(nontargets) < n and draws < max_draws:
        batch = 2 * (n - len(nontargets)) + 16
        ei, ti = rng.integers(0, len(enroll), batch), rng.integers(0, len(test), batch)
        draws += batch
        for a, b in zip(ei, ti):
            (e, se), (t, st) = enroll[a], test[b]
            if se == st:
                continue
            key = (min(e, t), max(e, t)) if same else (e, t)
            if key in seen:
                continue
            seen.add(key)
            nontargets.append(key)
            if len(nontargets) == n:
                break
    if len(nontargets) < n:
        raise ValueError(f"could not draw {n} distinct non-target trials ({enroll_lang} vs {test_lang})")
    trials = [(e, t, True) for e, t in chosen] + [(e, t, False) for e, t in nontargets]
    return sorted(trials, key=lambda x: (x[0].encode(), x[1].encode()))


def trial_lists(
    utts: Mapping[str, Mapping[str, Sequence[str]]], languages: Sequence[str], num_trials: int, rng: np.random.Generator
) -> Dict[str, List[Trial]]:
    """``trials_en``, ``trials_cmn`` (same language) and ``trials_cross`` (en enrol, cmn test)."""
    lists: Dict[str, List[Trial]] = {}
    for lang in languages:
        lists[f"trials_{lang}"] = make_trials(utts, lang, lang, num_trials, rng)
    if "en" in languages and "cmn" in languages:
        lists["trials_cross"] = make_trials(utts, "en", "cmn", num_trials, rng)
    return {k: v for k, v in lists.items() if v}
