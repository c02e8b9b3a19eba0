#!/usr/bin/env python3
"""Look at SynthCeleb: spectrograms of two speakers (a male and a female voice when there
are both) each speaking English and Mandarin, in one PNG.

    local/plot_synth_spectrogram.py DATA_DIR [--out docs/synth_spectrogram.png] [--speakers A,B]

DATA_DIR is a SynthCeleb data dir (``synth_test`` or ``synth_train``: wav.scp, utt2spk,
utt2lang, spk2gender). Each panel is a log-power STFT (25 ms Hann window, 10 ms hop)
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


def pick_speakers(data_dir: Path) -> list:
    """First male and first female speaker (or the first two speakers)."""
    spk2gender = read_table(data_dir / "spk2gender")
    male = [s for s, g in spk2gender.items() if g == "m"]
    female = [s for s, g in spk2gender.items() if g == "f"]
    if male and female:
        return [male[0], female[0]]
    return list(spk2gender)[:2]


def voice_summary(wav_path: str) -> str:
    """'pitch 105-160 Hz, F1 x0.97' from the speaker's variant file (synth_audio/<spk>/voice)."""
    vfile = Path(wav_path).parent / "voice"
    if not vfile.is_file():
        return ""
    fields = {}
    for line in vfile.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("pitch", "formant") and (parts[0] != "formant" or parts[1] == "1"):
            fields[parts[0]] = parts[1:]
    pitch = fields.get("pitch", ["?", "?"])
    f1 = fields.get("formant", ["1", "100"])[1]
    return f"pitch {pitch[0]}-{pitch[1]} Hz, F1 x{int(f1) / 100:.2f}"


def plot(data_dir: Path, out: Path, speakers: list | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf
    from scipy import signal

    from pyspk.io import atomic_path

    validate_data_dir(data_dir)
    wav, utt2spk, utt2lang = (read_table(data_dir / n) for n in ("wav.scp", "utt2spk", "utt2lang"))
    gender = read_table(data_dir / "spk2gender")
    speakers = speakers or pick_speakers(data_dir)
    langs = sorted(set(utt2lang.values()), key=lambda l: (l != "en", l))
    fig, axes = plt.subplots(len(speakers), len(langs), figsize=(6 * len(langs), 2.8 * len(speakers)),
                             squeeze=False)
    for i, spk in enumerate(speakers):
        for j, lang in enumerate(langs):
            utt = next(u for u in utt2spk if utt2spk[u] == spk and utt2lang[u] == lang)
            x, sr = sf.read(wav[utt], dtype="float32")
            f, t, s = signal.spectrogram(x, sr, window="hann", nperseg=int(0.025 * sr),
                                         noverlap=int(0.015 * sr), nfft=512)
            ax = axes[i][j]
            ax.pcolormesh(t, f / 1000.0, 10 * np.log10(s + 1e-12), shading="auto", cmap="magma")
            ax.set_title(f"{utt} ({gender.get(spk, '?')}, {lang}) {voice_summary(wav[utt])}", fontsize=9)
            ax.set_ylabel("kHz")
            ax.set_xlabel("s")
    fig.suptitle("SynthCeleb: two speakers x two languages (noise, reverb and channel included)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/synth_spectrogram.png"))
    p.add_argument("--speakers", default=None, help="comma-separated speaker ids (default: a male and a female)")
    args = p.parse_args(argv)
    speakers = [s for s in args.speakers.split(",") if s] if args.speakers else None
    print(plot(args.data_dir, args.out, speakers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
