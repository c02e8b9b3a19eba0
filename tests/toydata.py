"""A tiny, linearly separable training data dir of random features: a fixture of the tests
and of bench/ (which put tests/ on sys.path), not part of the package.

Speaker s has a random mean vector mu_s (feat_dim); each frame of each of its
utterances is ``mu_s * separation + N(0, 1)`` with a per-utterance offset (which
CMN removes... and so would the speaker mean, so the mean is modulated over time:
frame t gets ``mu_s * sin(2 pi t / period_s)``, a per-speaker temporal pattern that
survives mean normalisation). Written as a Kaldi dir with kaldiio:
feats.scp/ark, utt2spk, spk2utt, utt2num_frames, optionally vad.scp and utt2orig
(``copies`` noisy copies of every utterance, as the augmentation stage writes).
"""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np

from pyspk.data.kaldi_dir import utt2spk_to_spk2utt, write_table


def make_toy_train_dir(
    path,
    num_speakers: int = 8,
    utts_per_speaker: int = 6,
    num_frames: int = 120,
    feat_dim: int = 20,
    seed: int = 0,
    separation: float = 1.5,
    copies: int = 0,
    vad: bool = False,
    frame_jitter: int = 0,
    compress: bool = False,
) -> Path:
    """Write the toy dir to ``path``; returns it. ``frame_jitter`` varies utterance lengths;
    ``compress`` writes the features as Kaldi compressed matrices (as ``--compress-feats true``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mus = rng.standard_normal((num_speakers, feat_dim)).astype(np.float32)
    periods = rng.uniform(8, 40, size=num_speakers)
    utt2spk, u2nf, mats, vads, utt2orig = {}, {}, {}, {}, {}
    for s in range(num_speakers):
        spk = f"spk{s:03d}"
        for u in range(utts_per_speaker):
            n = num_frames + (int(rng.integers(0, frame_jitter + 1)) if frame_jitter else 0)
            t = np.arange(n)[:, None]
            base = mus[s] * separation * np.sin(2 * np.pi * t / periods[s] + rng.uniform(0, 2 * np.pi))
            orig = f"{spk}-u{u:03d}"
            for c in range(copies + 1):
                utt = orig if c == 0 else f"{orig}-aug{c}"
                noise = rng.standard_normal((n, feat_dim)) * (1.0 + 0.3 * c)
                mats[utt] = (base + noise + rng.standard_normal(feat_dim)).astype(np.float32)
                utt2spk[utt], u2nf[utt] = spk, n
                if c > 0:
                    utt2orig[utt] = orig
                if vad:
                    v = np.ones(n, dtype=np.float32)
                    v[rng.integers(0, n, size=n // 10)] = 0.0
                    vads[utt] = v
    keys = sorted(mats)
    with kaldiio.WriteHelper(
        f"ark,scp:{path / 'feats.ark'},{path / 'feats.scp'}", compression_method=1 if compress else None
    ) as w:
        for k in keys:
            w(k, mats[k])
    if vad:
        with kaldiio.WriteHelper(f"ark,scp:{path / 'vad.ark'},{path / 'vad.scp'}") as w:
            for k in keys:
                w(k, vads[k])
    write_table(path / "utt2spk", utt2spk)
    write_table(path / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_table(path / "utt2num_frames", u2nf)
    if utt2orig:
        write_table(path / "utt2orig", utt2orig)
    return path


def toy_config(encoder: str = "tdnn", **sections) -> dict:
    """A small config dict for the toy dir (tiny encoder, 2 epochs of 4 steps)."""
    base = {
        "encoder": {"name": encoder, "kwargs": _TINY[encoder]},
        "features": {"crop_frames": 50, "spec_augment": {"enabled": True, "time_width": 5, "freq_width": 2}},
        "head": {"name": "aam"},  # the objective: AAM (a config says what it trains)
        "sampler": {"speakers_per_batch": 4, "utts_per_speaker": 2},
        "optim": {"name": "adam", "lr": 0.005, "final_lr": 0.001, "warmup_steps": 2},
        "train": {
            "epochs": 2,
            "steps_per_epoch": 4,
            "log_interval": 2,
            "average_last": 1,
            "device": "cpu",
            "amp": False,
        },
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return base


_TINY = {
    "tdnn": {"channels": 32, "stats_channels": 64, "embed_dim": 32},
    "ecapa_tdnn": {"channels": 32, "embed_dim": 32, "scale": 4, "attention_channels": 16, "se_channels": 16},
    "resnet34": {"base_channels": 4, "embed_dim": 32, "num_blocks": [1, 1, 1, 1]},
}
