"""Make SynthCeleb: plan speakers and utterances, synthesise them in parallel, write Kaldi dirs.

Layout under ``out_dir``::

    synth_audio/babble_<hash>.npy   crowd speech for babble noise (voices not in the corpus)
    synth_audio/<spk>/<utt>.flac    16 kHz, 16-bit FLAC; <spk>/.done once the speaker is complete
    synth_audio/<spk>/voice         the speaker's espeak-ng voice variant file (for inspection)
    synth_audio/.done               written last, after both data dirs validated; a rerun
                                    with the same knobs and seed then only re-validates
    synth_train/  synth_test/       wav.scp utt2spk spk2utt utt2lang spk2gender (+ trials_* in test)

Utterance ids are ``<spk>-<lang>-<index>`` so sorting by utterance groups speakers.

Determinism: espeak-ng keeps internal state between calls (pitch flutter phase, noise
generators), so every speaker is made in a freshly forked worker that has never
synthesised anything (``maxtasksperchild=1``), and within a speaker all utterances are
synthesised in the same order on every run. A resumed run re-synthesises the (cheap)
espeak-ng part of a partly finished speaker but skips the signal processing and writing
of utterances whose FLAC already exists (every file is written atomically).
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile as sf

from pyspk.data.kaldi_dir import DataDir, DataDirError, validate_data_dir, write_trials
from pyspk.io import atomic_open, atomic_path, atomic_write_text, touch_done

from . import channel, espeak
from .config import SynthConfig
from .label_noise import NOISE_FILE, noisy_labels
from .seeding import stable_rng, stable_seed
from .trials import trial_lists
from .utterance import plan_utterance, render
from .voices import Voice, draw_voice

VERSION = "synthceleb-1"
log = logging.getLogger("synthceleb")


@dataclass
class SpeakerTask:
    spk: str
    voice: Voice
    utts: List[Tuple[str, str]]  # (utt id, language), in synthesis order
    digest: str


def speaker_ids(cfg: SynthConfig) -> Tuple[List[str], List[str]]:
    return (
        [f"tr{i:04d}" for i in range(1, cfg.num_train_spk + 1)],
        [f"te{i:04d}" for i in range(1, cfg.num_test_spk + 1)],
    )


def plan_speakers(cfg: SynthConfig, seed: int) -> List[SpeakerTask]:
    """Every speaker's voice and utterance ids (cheap: no audio)."""
    train, test = speaker_ids(cfg)
    tasks = []
    for spk in train + test:
        voice = draw_voice(seed, spk)
        utts = [(f"{spk}-{lang}-{k:03d}", lang) for lang in cfg.languages for k in range(cfg.utts_per_lang)]
        digest = f"{VERSION} {cfg.digest()} seed={seed} voice={stable_seed(0, voice.variant_text()):x}"
        tasks.append(SpeakerTask(spk, voice, utts, digest))
    return tasks


def _crowd_voices(cfg: SynthConfig, seed: int) -> List[Voice]:
    return [draw_voice(seed, f"crowd{i:02d}") for i in range(cfg.num_crowd)]


@contextlib.contextmanager
def _engine_for(voices: List[Voice], languages: List[str]):
    """An espeak-ng engine on a temporary data overlay holding these voices' variants."""
    with tempfile.TemporaryDirectory(prefix="synthceleb-espeak-") as tmp:
        data = espeak.make_data_overlay(
            Path(tmp) / "espeak-ng-data", {v.name: v.variant_text() for v in voices}, languages
        )
        yield espeak.get_engine(data)


def build_babble_bank(cfg: SynthConfig, seed: int, path: Path) -> None:
    """Crowd talkers' speech (both languages), each row RMS 1, ``max_dur + 1`` s long."""
    with _engine_for(_crowd_voices(cfg, seed), cfg.languages) as eng:
        rows = _crowd_rows(eng, cfg, seed)
    with atomic_open(path, "wb") as f:
        np.save(f, np.stack(rows).astype(np.float32))


def _crowd_rows(eng, cfg: SynthConfig, seed: int) -> List[np.ndarray]:
    from .text import sentence_for

    width = int((cfg.max_dur + 1.0) * channel.SAMPLE_RATE)
    rows = []
    for voice in _crowd_voices(cfg, seed):
        rng = stable_rng(seed, "crowd", voice.name)
        parts = []
        for lang in cfg.languages:
            text = sentence_for(lang, rng, (cfg.max_dur + 1.0) / len(cfg.languages) + 1.0, voice.rate_wpm)
            x = eng.synth(
                text,
                f"{lang}+{voice.name}",
                rate=int(voice.rate_wpm),
                seed=stable_seed(seed, "crowd-espeak", voice.name, lang) & 0x7FFFFFFF,
            )
            parts.append(channel.trim_silence(channel.to_16k(x), rng, pad_s=(0.0, 0.05)))
        row = np.concatenate(parts)
        row = np.tile(row, int(np.ceil(width / max(len(row), 1))))[:width]
        rows.append(row / max(float(np.sqrt(np.mean(row.astype(np.float64) ** 2))), 1e-9))
    return rows


def generate_speaker(
    task: SpeakerTask, cfg: SynthConfig, seed: int, audio_dir: Path, bank: Optional[np.ndarray]
) -> str:
    """Make every utterance of one speaker (run in a fresh process; see module docstring)."""
    spk_dir = audio_dir / task.spk
    spk_dir.mkdir(parents=True, exist_ok=True)
    for stale in spk_dir.glob(".*.tmp*"):  # temp files of a killed run
        stale.unlink()
    plan_file = spk_dir / ".plan"
    if not plan_file.is_file() or plan_file.read_text() != task.digest:
        for old in spk_dir.glob("*.flac"):  # made with other knobs: start the speaker afresh
            old.unlink()
        (spk_dir / ".done").unlink(missing_ok=True)
        atomic_write_text(plan_file, task.digest)
        atomic_write_text(spk_dir / "voice", task.voice.variant_text())
    with _engine_for([task.voice], cfg.languages) as eng:
        _speak_all(eng, task, cfg, seed, spk_dir, bank)
    touch_done(spk_dir / ".done", task.digest)
    return task.spk


def _speak_all(eng, task: SpeakerTask, cfg: SynthConfig, seed: int, spk_dir: Path, bank: Optional[np.ndarray]) -> None:
    for utt, lang in task.utts:
        p = plan_utterance(cfg, seed, task.voice, utt, lang)
        clean = eng.synth(
            p.text, f"{lang}+{task.spk}", rate=p.rate, pitch=p.pitch, pitch_range=p.pitch_range, seed=p.espeak_seed
        )
        out = spk_dir / f"{utt}.flac"
        if out.is_file():
            continue
        if clean.size == 0:
            raise RuntimeError(f"espeak-ng produced no audio for {utt} ({lang}): {p.text!r}")
        wave = render(clean, cfg, seed, utt, bank)
        buf = io.BytesIO()  # encode in memory, then temp file + rename (no fsync: a killed
        sf.write(buf, wave, channel.SAMPLE_RATE, format="FLAC", subtype="PCM_16")  # process
        with atomic_path(out) as tmp:  # never leaves a partial file, and 10k fsyncs are slow)
            tmp.write_bytes(buf.getvalue())


# -- worker plumbing: state handed to forked workers through module globals ---------------
_JOB: Dict[str, object] = {}


def _run_speaker(task: SpeakerTask) -> str:
    return generate_speaker(task, _JOB["cfg"], _JOB["seed"], _JOB["audio_dir"], _JOB["bank"])


def _run_bank(args) -> None:
    build_babble_bank(*args)


def _pool(nj: int):
    """Workers forked from this (never-synthesising) process, one task each."""
    return multiprocessing.get_context("fork").Pool(nj, maxtasksperchild=1)


def _is_done(path: Path, digest: str) -> bool:
    return path.is_file() and path.read_text() == digest


def write_data_dirs(out_dir: Path, cfg: SynthConfig, seed: int, tasks: List[SpeakerTask]) -> Dict[str, dict]:
    """synth_train and synth_test (with trials_*), validated; returns their counts."""
    train, test = speaker_ids(cfg)
    test_set = set(test)
    summary = {}
    for name, spks in (("synth_train", set(train)), ("synth_test", test_set)):
        d = DataDir(extra={"utt2lang": {}, "spk2gender": {}})
        for t in tasks:
            if t.spk not in spks:
                continue
            d.extra["spk2gender"][t.spk] = t.voice.gender
            for utt, lang in t.utts:
                d.wav_scp[utt] = str(out_dir / "synth_audio" / t.spk / f"{utt}.flac")
                d.utt2spk[utt] = t.spk
                d.extra["utt2lang"][utt] = lang
        path = out_dir / name
        (path / NOISE_FILE).unlink(missing_ok=True)
        if name == "synth_train" and cfg.label_noise > 0:
            new, flips = noisy_labels(d.utt2spk, None, cfg.label_noise, seed)
            d.utt2spk = type(d.utt2spk)(sorted(new.items()))
            path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path / NOISE_FILE, "".join(f"{u} {t} {a}\n" for u, (t, a) in sorted(flips.items())))
        for old in path.glob("trials*"):
            old.unlink()
        d.save(path)
        if name == "synth_test":
            by_spk: Dict[str, Dict[str, List[str]]] = {}
            for t in tasks:
                if t.spk in test_set:
                    for utt, lang in t.utts:
                        by_spk.setdefault(t.spk, {}).setdefault(lang, []).append(utt)
            for tname, trials in trial_lists(
                by_spk, cfg.languages, cfg.trials_per_list, stable_rng(seed, "trials")
            ).items():
                write_trials(path / tname, trials)
        summary[name] = validate_data_dir(path)
    return summary


def make_corpus(out_dir, cfg: SynthConfig, seed: int, nj: int = 1) -> Dict[str, dict]:
    """Generate (or finish) the corpus under ``out_dir``; ``cfg`` must be validated already."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    audio_dir = out_dir / "synth_audio"
    stamp = f"{VERSION} {cfg.digest()} seed={seed} label_noise={cfg.label_noise:g}\n"
    if _is_done(audio_dir / ".done", stamp):
        try:  # up to date: leave every file (and its time stamp) alone
            summary = {name: validate_data_dir(out_dir / name) for name in ("synth_train", "synth_test")}
            log.info("SynthCeleb in %s is up to date (%s)", out_dir, stamp.strip())
            return summary
        except DataDirError as e:
            log.warning("SynthCeleb stamp present but %s; remaking what is missing", e)
    (audio_dir / ".done").unlink(missing_ok=True)
    audio_dir.mkdir(parents=True, exist_ok=True)
    tasks = plan_speakers(cfg, seed)
    bank_path = audio_dir / f"babble_{stable_seed(seed, VERSION, cfg.digest()):016x}.npy"
    for old in audio_dir.glob("babble_*.npy"):  # banks of other knobs
        if old != bank_path:
            old.unlink()
    if not bank_path.is_file():
        with _pool(1) as pool:
            pool.apply(_run_bank, ((cfg, seed, bank_path),))
    pending = [t for t in tasks if not _is_done(audio_dir / t.spk / ".done", t.digest)]
    log.info(
        "SynthCeleb: %d speakers (%d to make), %d utterances each, nj=%d, out %s",
        len(tasks),
        len(pending),
        len(tasks[0].utts),
        nj,
        out_dir,
    )
    if pending:
        _JOB.update(cfg=cfg, seed=seed, audio_dir=audio_dir, bank=np.load(bank_path))
        try:
            with _pool(max(1, nj)) as pool:
                it = pool.imap_unordered(_run_speaker, pending)
                for _ in tqdm(it, total=len(pending), desc="synth speakers", disable=not sys.stderr.isatty()):
                    pass
        finally:
            _JOB.clear()
    summary = write_data_dirs(out_dir, cfg, seed, tasks)
    touch_done(audio_dir / ".done", stamp)
    return summary
