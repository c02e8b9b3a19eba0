"""Write the augmented copies of a data directory (tables + ``aug.scp`` recipes).

Ids (Kaldi v2 style, speaker prefix kept so the tables stay sorted per speaker):
``<utt>-reverb``, ``<utt>-noise``, ``<utt>-music``, ``<utt>-babble``; speed copies
``sp0.9-<utt>`` with speaker ``sp0.9-<spk>`` (new speakers) or ``<utt>-sp0.9`` with
the same speaker.  Every copy has ``utt2orig`` (copy -> original utterance).
Random choices come from ``numpy.random.default_rng([seed, k])`` with ``k`` fixed per
copy kind, over the sorted utterances, so a seed fixes every recipe.
"""

from __future__ import annotations

import functools
import json
import zlib
from pathlib import Path
from typing import Collection, Dict, List, Optional, Tuple

import numpy as np

from pyspk.augment.config import AugmentConfig
from pyspk.data.kaldi_dir import DataDirError, read_table, utt2spk_to_spk2utt, write_table
from pyspk.io import atomic_write_text

COPY_TABLES = ("utt2lang", "utt2genre", "utt2gender", "utt2dur")


def copy_ids(kind: str, utt: str, spk: str, new_speakers: bool) -> Tuple[str, str]:
    """(augmented utt id, its speaker) for one copy kind."""
    if kind.startswith("sp") and new_speakers:
        return f"{kind}-{utt}", f"{kind}-{spk}"
    return f"{utt}-{kind}", spk


def _noise_events(utt: str, rng: np.random.Generator, cfg: AugmentConfig, ctx: dict) -> List[dict]:
    """Foreground noises one after another from t = 0, ``noise_interval_s`` apart, each at
    its own SNR, until the utterance ends (Kaldi augment_data_dir.py ``--fg-interval``)."""
    duration = ctx["utt_dur"](utt)
    musan = ctx.get("musan", {}).get("noise")
    events, t = [], 0.0
    while t < duration:
        ev: dict = {"start_s": round(t, 3), "snr": float(rng.choice(cfg.noise_snrs))}
        if musan:
            path, dur = musan[int(rng.integers(len(musan)))]
            ev["path"] = path
        else:
            dur = round(float(rng.uniform(*cfg.noise_event_s)), 3)
            ev["synth"] = {"beta": float(rng.choice(cfg.noise_betas)), "seed": int(rng.integers(2**31)), "dur_s": dur}
        events.append(ev)
        t += dur + cfg.noise_interval_s
    return events


def _recipe(kind: str, utt: str, rng: np.random.Generator, cfg: AugmentConfig, ctx: dict) -> dict:
    if kind == "reverb":
        if ctx.get("rirs"):
            return {"kind": "reverb", "rir": ctx["rirs"][int(rng.integers(len(ctx["rirs"])))]}
        return {"kind": "reverb", "rir_pool": ctx["rir_pool"], "index": int(rng.integers(cfg.num_rooms))}
    if kind == "noise":
        return {"kind": "noise", "events": _noise_events(utt, rng, cfg, ctx)}
    if kind == "music":
        snr = float(rng.choice(cfg.music_snrs))
        musan = ctx.get("musan", {}).get("music")
        if musan:
            path, dur = musan[int(rng.integers(len(musan)))]
            return {
                "kind": "music",
                "snr": snr,
                "files": [{"path": path, "offset_s": round(float(rng.uniform(0, dur)), 3)}],
            }
        return {"kind": "music", "snr": snr, "synth": {"seed": int(rng.integers(2**31))}}
    if kind == "babble":  # background speakers, each at its own SNR (Kaldi --num-bg-noises / --bg-snrs)
        n = int(rng.integers(cfg.babble_min_speakers, cfg.babble_max_speakers + 1))
        speech = ctx.get("musan", {}).get("speech")
        if speech:
            picks = rng.choice(len(speech), size=min(n, len(speech)), replace=False)
            bg = [{"path": speech[i][0], "offset_s": 0.0} for i in picks]
        else:
            pool = ctx["babble_pool"](utt)
            if not pool:
                raise ValueError(f"babble for '{utt}': no other speaker's utterance to mix")
            picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
            bg = [{"source": pool[i]} for i in sorted(picks)]
        for b in bg:
            b["snr"] = float(rng.choice(cfg.babble_snrs))
        return {"kind": "babble", "background": bg}
    if kind.startswith("sp"):
        return {"kind": "speed", "factor": float(kind[2:])}
    raise ValueError(f"unknown augmentation kind '{kind}'")


def utt_durations(data_dir: Path, frame_shift_s: float = 0.01):
    """utt -> duration in seconds, from ``utt2dur`` or else ``utt2num_frames`` (written by the
    fbank stage, which the augmentation stage requires), read on first use; errors name the file."""
    data_dir = Path(data_dir)

    @functools.lru_cache(maxsize=1)
    def load() -> Tuple[Path, Dict[str, float]]:
        for name, scale in (("utt2dur", 1.0), ("utt2num_frames", frame_shift_s)):
            if (data_dir / name).is_file():
                return data_dir / name, {u: float(v) * scale for u, v in read_table(data_dir / name).items()}
        raise DataDirError(f"{data_dir}: neither utt2dur nor utt2num_frames; run the fbank stage on it first")

    def lookup(utt: str) -> float:
        path, table = load()
        if utt not in table:
            raise DataDirError(f"{path}: no entry for utterance '{utt}'")
        return table[utt]

    return lookup


def copy_utts(data_dir: Path, kind: str, cfg: AugmentConfig) -> List[str]:
    """The utterance ids of ``data_dir``'s copy ``kind``, in the order of its utt2spk."""
    utt2spk = read_table(Path(data_dir) / "utt2spk")
    return [copy_ids(kind, u, s, cfg.speed_new_speakers)[0] for u, s in utt2spk.items()]


def write_copy(
    data_dir: Path,
    out_dir: Path,
    kind: str,
    cfg: AugmentConfig,
    seed: int,
    ctx: dict,
    keep: Optional[Collection[str]] = None,
) -> Path:
    """Write one augmented copy ``out_dir`` of ``data_dir`` (tables, utt2orig, aug.scp).

    ``keep``: write only these copy utterances (``pyspk augment --subset``); every recipe is
    still drawn, so a kept utterance has the recipe it has in the whole copy."""
    wav = read_table(data_dir / "wav.scp")
    segments = read_table(data_dir / "segments") if (data_dir / "segments").is_file() else None
    utt2spk = read_table(data_dir / "utt2spk")
    rng = np.random.default_rng([seed, zlib.crc32(kind.encode())])
    new_wav, new_u2s, utt2orig, recipes = {}, {}, {}, {}
    for utt in utt2spk:
        new_utt, new_spk = copy_ids(kind, utt, utt2spk[utt], cfg.speed_new_speakers)
        recipe = _recipe(kind, utt, rng, cfg, ctx)
        if keep is not None and new_utt not in keep:
            continue
        # with segments the recordings stay as they are; the copies' segments point at them
        new_wav[new_utt] = segments[utt] if segments is not None else wav[utt]
        new_u2s[new_utt], utt2orig[new_utt] = new_spk, utt
        recipes[new_utt] = recipe
    out_dir.mkdir(parents=True, exist_ok=True)
    if segments is not None:
        write_table(out_dir / "segments", new_wav)
        if keep is not None:  # only the recordings of the kept segments
            used = {v.split()[0] for v in new_wav.values()}
            wav = {r: v for r, v in wav.items() if r in used}
        write_table(out_dir / "wav.scp", wav)
    else:
        write_table(out_dir / "wav.scp", new_wav)
    write_table(out_dir / "utt2spk", new_u2s)
    write_table(out_dir / "spk2utt", utt2spk_to_spk2utt(new_u2s))
    write_table(out_dir / "utt2orig", utt2orig)
    for name in COPY_TABLES:
        if (data_dir / name).is_file():
            t = read_table(data_dir / name)
            write_table(out_dir / name, {u: t[o] for u, o in utt2orig.items() if o in t})
    text = "".join(f"{u} {json.dumps(recipes[u], sort_keys=True)}\n" for u in sorted(recipes, key=str.encode))
    if not (out_dir / "aug.scp").is_file() or (out_dir / "aug.scp").read_text(encoding="utf-8") != text:
        atomic_write_text(out_dir / "aug.scp", text)
    return out_dir


def babble_pool_fn(data_dir: Path, max_sources: int = 7, seed: int = 0):
    """utt -> candidate babble sources: wav.scp values of up to ``4 * max_sources`` utterances
    of other speakers, drawn by rejection from the whole set (O(1) memory per call)."""
    wav = read_table(data_dir / "wav.scp")
    utt2spk = read_table(data_dir / "utt2spk")
    if (data_dir / "segments").is_file():  # babble from whole recordings of the other segments
        seg = read_table(data_dir / "segments")
        wav = {u: wav[seg[u].split()[0]] for u in utt2spk}
    utts = list(utt2spk)
    n_other = {s: len(utts) - c for s, c in _counts(utt2spk.values()).items()}
    rng = np.random.default_rng([seed, len(utts)])

    def pool(utt: str) -> List[str]:
        spk = utt2spk[utt]
        want = min(4 * max_sources, n_other[spk])
        picked: Dict[str, None] = {}
        while len(picked) < want:
            other = utts[int(rng.integers(len(utts)))]
            if utt2spk[other] != spk:
                picked[other] = None
        return [wav[u] for u in sorted(picked, key=str.encode)]

    return pool


def _counts(values) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def make_context(
    data_dir: Path,
    cfg: AugmentConfig,
    seed: int,
    rir_dir: Path,
    sample_rate: int,
    musan_root: Optional[str] = None,
    rirs_root: Optional[str] = None,
) -> dict:
    """Noise sources shared by every copy: RIR list or simulated pool, MUSAN, babble pool."""
    from pyspk.augment import rir

    ctx: dict = {"babble_pool": babble_pool_fn(data_dir, cfg.babble_max_speakers, seed)}
    ctx["utt_dur"] = utt_durations(data_dir)  # plans the foreground noises
    if cfg.reverb:
        if rirs_root:
            ctx["rirs"] = rir.list_rirs(rirs_root)
        else:
            pool = Path(rir_dir).resolve() / f"rir_pool.n{cfg.num_rooms}.sr{sample_rate}.seed{seed}.npz"
            if not pool.is_file():
                rir.simulate_pool(pool, cfg.num_rooms, sample_rate, seed)
            ctx["rir_pool"] = str(pool)
    if musan_root:
        from pyspk.augment.musan import musan_sources

        ctx["musan"] = musan_sources(musan_root)
    return ctx
