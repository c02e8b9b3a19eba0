"""SynthCeleb: a multi-speaker English + Mandarin corpus synthesised on the spot.

Modules: ``espeak`` (ctypes driver of libespeak-ng from the espeakng-loader wheel),
``voices`` (one espeak-ng voice variant per speaker), ``text`` (random sentences from
built-in word lists and pinyin), ``utterance`` and ``channel`` (prosody jitter, reverb,
noise, channel, 16 kHz), ``trials`` (balanced trial lists), ``config`` (validated knobs),
``corpus`` (parallel, deterministic, resumable generation). Entry point:
``synth/make_synth.py``.
"""
