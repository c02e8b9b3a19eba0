#!/usr/bin/env python3
"""Tiny trained systems for the export and Kaldi-reader checks (tests and bench_export.py).

    python bench/tiny_systems.py --out DIR [--size test|recipe] [--encoders tdnn,ecapa_tdnn,resnet34]

Runs the recipe's own tools on a tiny SynthCeleb (8 training, 4 test speakers):
``synth/make_synth.py --size tiny`` -> ``pyspk fbank`` (conf/fbank.yaml, with VAD) for
synth_train and synth_test -> ``pyspk.bin.train`` of conf/synth/aam.yaml shrunk to a short
run (no augmented copies), once per encoder -> for the first encoder also ``pyspk extract``
of both sets and ``pyspk backend`` (conf/backend.yaml), so DIR/exp/<first>/ has xvector.scp,
spk_xvector.scp, num_utts.ark and backend/plda.{npz,kaldi}.

``--size test`` uses narrow, shallow encoders (seconds); ``recipe`` the default recipe's TDNN
(128 channels) and the registry's default ECAPA-TDNN (512) and ResNet34 (32). Reruns skip
what DIR already holds (each step's last output is its stamp).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyspk.train.config import config_to_dict, load_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZES = {
    # every layer type of each encoder, fewer repeats: training and export time grow with depth
    "test": {
        "tdnn": {"channels": 32, "stats_channels": 64, "embed_dim": 32},
        "ecapa_tdnn": {
            "channels": 32,
            "embed_dim": 32,
            "attention_channels": 16,
            "se_channels": 16,
            "scale": 4,
            "dilations": [2, 3],
        },
        "resnet34": {"base_channels": 8, "embed_dim": 32, "num_blocks": [1, 2, 1, 1]},
    },
    "recipe": {
        "tdnn": {"channels": 128, "stats_channels": 384, "embed_dim": 128},
        "ecapa_tdnn": {"channels": 512},
        "resnet34": {},
    },
}


def run(*cmd: str) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    p = subprocess.run(list(cmd), cwd=REPO, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"tiny_systems: failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def system_config(path: Path, encoder: str, kwargs: dict, steps: int) -> Path:
    """conf/synth/aam.yaml (resolved) with another encoder and a run of ``steps`` steps on 8 speakers."""
    cfg = config_to_dict(load_config(REPO / "conf/synth/aam.yaml"))
    cfg["encoder"] = {"name": encoder, "kwargs": kwargs}
    cfg["features"]["crop_frames"] = 100
    cfg["sampler"].update(speakers_per_batch=8, utts_per_speaker=2)
    cfg["optim"]["warmup_steps"] = 2
    cfg["train"].update(epochs=2, steps_per_epoch=steps // 2, average_last=1, log_interval=5, compile=False)
    path.write_text(yaml.safe_dump(cfg))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", default="test", choices=sorted(SIZES))
    ap.add_argument("--encoders", default="tdnn,ecapa_tdnn,resnet34")
    ap.add_argument("--steps", type=int, default=20, help="training steps per system")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    data, fbank, exp = out / "data", out / "fbank", out / "exp"
    py = sys.executable
    if not (data / "synth_test" / "trials_en").is_file():
        run(py, "synth/make_synth.py", "--out-dir", str(data), "--size", "tiny", "--nj", "2")
    for s in ("synth_train", "synth_test"):
        if not (data / s / "feats.scp").is_file():
            run(
                py,
                "-m",
                "pyspk.bin.main",
                "fbank",
                "--config",
                "conf/fbank.yaml",
                "--nj",
                "1",
                "--cmd",
                "utils/run.pl",
                str(data / s),
                str(fbank / s),
            )
    encoders = [e for e in args.encoders.split(",") if e]
    for enc in encoders:
        if not (exp / enc / "final.pt").is_file():
            (exp / enc).mkdir(parents=True, exist_ok=True)
            cfg = system_config(exp / enc / "system.yaml", enc, SIZES[args.size][enc], args.steps)
            run(
                py,
                "-m",
                "pyspk.bin.train",
                "--config",
                str(cfg),
                "--seed",
                "777",
                "--train-dir",
                str(data / "synth_train"),
                "--exp-dir",
                str(exp / enc),
            )
    first = exp / encoders[0]
    for s in ("synth_train", "synth_test"):
        if not (first / f"xvectors_{s}" / "num_utts.ark").is_file():
            run(
                py,
                "-m",
                "pyspk.bin.main",
                "extract",
                "--nj",
                "1",
                "--cmd",
                "utils/run.pl",
                str(first / "final.pt"),
                str(data / s),
                str(first / f"xvectors_{s}"),
            )
    if not (first / "backend" / "plda.kaldi").is_file():
        run(
            py,
            "-m",
            "pyspk.bin.main",
            "backend",
            "--config",
            "conf/backend.yaml",
            str(first / "xvectors_synth_train"),
            str(data / "synth_train"),
            str(first / "backend"),
        )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
