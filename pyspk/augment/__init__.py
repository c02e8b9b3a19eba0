"""Kaldi v2-style data augmentation (reverb, noise, music, babble, speed).

Augmented copies of a data directory hold the original wav.scp entries under
suffixed utterance ids plus ``aug.scp`` (utt -> JSON recipe); the fbank job applies
each recipe on the fly (:mod:`pyspk.augment.apply`), so no augmented audio is
written and the copies are resumable exactly like clean sets.
"""
