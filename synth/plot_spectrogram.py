#!/usr/bin/env python3
"""Look at SynthCeleb: spectrograms of two speakers (an adult male and an adult female
voice when there are both) each speaking English and Mandarin, in one PNG.

    synth/plot_spectrogram.py DATA_DIR [--out docs/synth_spectrogram.png] [--speakers A,B]

DATA_DIR is a SynthCeleb data dir (``synth_test`` or ``synth_train``: wav.scp, utt2spk,
utt2lang). Each panel is a log-power STFT (25 ms Hann window, 10 ms hop)
of the speaker's first utterance in that language, titled with the speaker's voice
(base pitch, formant scaling from its espeak-ng variant file next to the audio).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

from pyspk.data.kaldi_dir import read_table, validate_data_dir  # noqa: E402


def voice_fields(wav_path: str) -> dict:
    """class, pitch and F1 scaling from the speaker's variant file (synth_audio/<spk>/voice)."""
    vfile = Path(wav_path).parent / "voice"
    fields = {"class": "?", "pitch": ["?", "?"], "f1": "100"}
    if vfile.is_file():
        for line in vfile.read_text().splitlines():
            parts = line.split()
            if parts[:3] == ["//", "synthceleb", "class"]:
                fields["class"] = parts[3]
            elif parts and parts[0] == "pitch":
                fields["pitch"] = parts[1:3]
            elif parts[:2] == ["formant", "1"]:
                fields["f1"] = parts[2]
    return fields


def pick_speakers(data_dir: Path, wav: dict, utt2spk: dict) -> list:
    """First adult male and first adult female voice (else the first two speakers)."""
    first = {}
    for utt, spk in utt2spk.items():
        first.setdefault(spk, utt)
    klass = {spk: voice_fields(wav[utt])["class"] for spk, utt in first.items()}
    male = [s for s in first if klass[s] == "male"]
    female = [s for s in first if klass[s] == "female"]
    return [male[0], female[0]] if male and female else list(first)[:2]


def voice_summary(wav_path: str) -> str:
    """'female, pitch 190-300 Hz, F1 x1.12'."""
    f = voice_fields(wav_path)
    return f"{f['class']}, pitch {f['pitch'][0]}-{f['pitch'][1]} Hz, F1 x{int(f['f1']) / 100:.2f}"


def plot(data_dir: Path, out: Path, speakers: list | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf
    from scipy import signal

    from pyspk.io import atomic_path

    validate_data_dir(data_dir)
    wav, utt2spk, utt2lang = (read_table(data_dir / n) for n in ("wav.scp", "utt2spk", "utt2lang"))
    speakers = speakers or pick_speakers(data_dir, wav, utt2spk)
    langs = sorted(set(utt2lang.values()), key=lambda l: (l != "en", l))
    fig, axes = plt.subplots(len(speakers), len(langs), figsize=(6 * len(langs), 2.8 * len(speakers)), squeeze=False)
    for i, spk in enumerate(speakers):
        for j, lang in enumerate(langs):
            utt = next(u for u in utt2spk if utt2spk[u] == spk and utt2lang[u] == lang)
            x, sr = sf.read(wav[utt], dtype="float32")
            f, t, s = signal.spectrogram(
                x, sr, window="hann", nperseg=int(0.025 * sr), noverlap=int(0.015 * sr), nfft=512
            )
            ax = axes[i][j]
            ax.pcolormesh(t, f / 1000.0, 10 * np.log10(s + 1e-12), shading="auto", cmap="magma")
            ax.set_title(f"{utt} ({lang}): {voice_summary(wav[utt])}", fontsize=9)
            ax.set_ylabel("kHz")
            ax.set_xlabel("s")
    fig.suptitle("SynthCeleb: two speakers x two languages (noise, reverb and channel included)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=72, format="png")
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/synth_spectrogram.png"))
    p.add_argument(
        "--speakers", default=None, help="comma-separated speaker ids (default: an adult male and an adult female)"
    )
    args = p.parse_args(argv)
    speakers = [s for s in args.speakers.split(",") if s] if args.speakers else None
    print(plot(args.data_dir, args.out, speakers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
