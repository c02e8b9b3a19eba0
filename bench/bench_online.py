"""Online loader throughput (pyspk.online): output frames per second per loader worker core.

Training batches of 8 speakers x 2 utterances x 2 views of 200-frame crops (VAD, CMN and
SpecAugment as conf/synth configs; conf/fbank.yaml; conf/augment.yaml's kinds with a 10-room
simulated RIR pool) from a data dir of 16-bit FLAC speech-like recordings of 8 s (VoxCeleb2's
mean), through pyspk.online.load_online_data and the DataLoader the trainer uses, at 1 and 2
workers: decode + fbank only, each augmentation kind alone, and all of them (a uniform draw of
clean, reverb, noise, music, babble, as views: 1 draws over the offline combined set; + speed
0.9/1.1 kept as the same speaker). The shards row reads the same utterances written by
``pyspk shards``. Two figures per cell:

* **wall**: frames/s of the loader divided by its workers (what a trainer sees; on a shared or
  oversubscribed machine it understates a worker's speed);
* **cpu**: frames per CPU-second of the worker processes (user + system time from
  /proc/PID/stat), which another job on the machine does not dilute.

The first batch (worker start-up, the RIR pool and noise bank made or mapped) is not timed.
Prints one markdown table headed by commit, date and CPU.

    python bench/bench_online.py [--quick]      (--quick: fewer batches and recordings)
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace as NS

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_fbank import speechlike  # noqa: E402

SR = 16000
KINDS = ["clean", "reverb", "noise", "music", "babble", "sp0.9", "sp1.1"]
ROWS = [
    ("decode + fbank (no augmentation)", None, {}),
    ("reverb", "reverb", {}),
    ("noise", "noise", {}),
    ("music", "music", {}),
    ("babble", "babble", {}),
    ("speed 0.9 / 1.1", "speed", {}),
    ("all: clean, reverb, noise, music, babble", "all", {}),
    ("all + speed", "all+speed", {}),
    ("shards, all + speed", "all+speed", {"source": "shards"}),
]


def make_data(root: Path, speakers: int, per_spk: int, seconds: float, files: int) -> Path:
    """``speakers x per_spk`` utterances over ``files`` distinct FLAC recordings."""
    d = root / "data"
    (root / "wav").mkdir(parents=True, exist_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(files):
        paths.append(root / "wav" / f"f{k:03d}.flac")
        sf.write(paths[-1], speechlike(seconds, k), SR, subtype="PCM_16")
    wav, u2s = [], []
    for s in range(speakers):
        for u in range(per_spk):
            wav.append(f"s{s:02d}-u{u:02d} {paths[(s * per_spk + u) % files]}\n")
            u2s.append(f"s{s:02d}-u{u:02d} s{s:02d}\n")
    (d / "wav.scp").write_text("".join(wav))
    (d / "utt2spk").write_text("".join(u2s))
    return d


def weights(which):
    if which is None:
        return {k: (1.0 if k == "clean" else 0.0) for k in KINDS}
    if which == "speed":
        return {k: (1.0 if k.startswith("sp") else 0.0) for k in KINDS}
    if which == "all":
        return {k: (0.0 if k.startswith("sp") else 1.0) for k in KINDS}
    if which == "all+speed":
        return {}
    return {k: (1.0 if k == which else 0.0) for k in KINDS}


def cpu_seconds(pids) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / tick


def measure(train_dir: Path, root: Path, which, workers: int, steps: int):
    from pyspk.online import OnlineConfig, load_online_data

    cfg = NS(
        data=OnlineConfig(
            source="audio",
            fbank_config=str(REPO / "conf/fbank.yaml"),
            augment_config=str(root / "augment.yaml"),
            rir_dir=str(root / "rirs"),
            kind_weights=weights(which),
            streams=2,
            shuffle_buffer=16,
        ),
        features=NS(
            cmn=True,
            cmn_window=None,
            vad=True,
            crop_frames=200,
            short_utts="pad",
            spec_augment=NS(enabled=True, time_masks=1, time_width=20, freq_masks=1, freq_width=8),
        ),
        sampler=NS(kind="pk", speakers_per_batch=8, utts_per_speaker=2, views=2, batch_size=None),
        train=NS(num_workers=workers, steps_per_epoch=steps + 1),
    )
    td = load_online_data(train_dir, cfg, seed=1)
    td.sampler.set_epoch(0)
    it = iter(td.loader())
    pids = [w.pid for w in it._workers]
    first = next(it)
    frames_per_batch = first[0].shape[0] * first[0].shape[1]
    c0, t0 = cpu_seconds(pids), time.perf_counter()
    n = sum(1 for _ in range(steps) if next(it) is not None)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pids) - c0
    del it
    return n * frames_per_batch / wall / workers, n * frames_per_batch / max(cpu, 1e-9)


def _child_pids():
    me = os.getpid()
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == me:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def measure_shards(train_dir: Path, root: Path, which, workers: int, steps: int):
    from pyspk.online import OnlineConfig, load_online_data

    cfg = NS(
        data=OnlineConfig(
            source="shards",
            fbank_config=str(REPO / "conf/fbank.yaml"),
            augment_config=str(root / "augment.yaml"),
            rir_dir=str(root / "rirs"),
            kind_weights=weights(which),
            streams=2,
            shuffle_buffer=16,
        ),
        features=NS(
            cmn=True,
            cmn_window=None,
            vad=True,
            crop_frames=200,
            short_utts="pad",
            spec_augment=NS(enabled=True, time_masks=1, time_width=20, freq_masks=1, freq_width=8),
        ),
        sampler=NS(kind="shuffle", speakers_per_batch=8, utts_per_speaker=2, views=2, batch_size=16),
        train=NS(num_workers=workers, steps_per_epoch=None),
    )
    td = load_online_data(train_dir, cfg, seed=1)
    td.sampler.set_epoch(0)
    it = iter(td.loader())
    first = next(it)
    pids = _child_pids()
    frames_per_batch = first[0].shape[0] * first[0].shape[1]
    c0, t0 = cpu_seconds(pids), time.perf_counter()
    n = 0
    for _ in range(min(steps, len(td.sampler) - 1)):
        next(it)
        n += 1
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pids) - c0
    it.close()
    return n * frames_per_batch / wall / workers, n * frames_per_batch / max(cpu, 1e-9)


def cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        return next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer recordings and batches")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    speakers, per_spk, files, steps = (12, 8, 32, 5) if args.quick else (24, 16, 128, 20)
    with tempfile.TemporaryDirectory(prefix="bench_online.") as tmp:
        root = Path(tmp)
        data = make_data(root, speakers, per_spk, 8.0, files)
        (root / "augment.yaml").write_text("num_rooms: 10\nspeed: true\nspeed_new_speakers: false\n")
        from pyspk.online.shards import write_shards

        write_shards(data, root / "shards", shard_size=8, seed=1)
        rev = (
            subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
            ).stdout.strip()
            or "?"
        )
        print(
            f"pyspk.online loader, commit {rev} (+ working tree), {datetime.date.today()}, {cpu_name()} "
            f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start), "
            f"`python bench/bench_online.py{' --quick' if args.quick else ''}`; 200-frame crops, VAD, CMN, "
            f"SpecAugment; frames/s per worker core, wall / cpu (module docstring)\n"
        )
        print("| pipeline | 1 worker: wall | 1 worker: cpu | 2 workers: wall | 2 workers: cpu |")
        print("|---|---:|---:|---:|---:|")
        for name, which, extra in ROWS:
            cells = []
            for workers in (1, 2):
                if extra.get("source") == "shards":
                    wall, cpu = measure_shards(root / "shards", root, which, workers, steps)
                else:
                    wall, cpu = measure(data, root, which, workers, steps)
                cells += [f"{wall:,.0f}", f"{cpu:,.0f}"]
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
