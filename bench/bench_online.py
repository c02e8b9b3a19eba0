"""Online loader throughput (pyspk.online): output frames per second per loader worker core.

Training batches of 8 speakers x 2 utterances x 2 views of 200-frame crops (VAD, CMN and
SpecAugment as conf/synth configs; conf/fbank.yaml; conf/augment.yaml's kinds with a 10-room
simulated RIR pool) from a data dir of 16-bit FLAC speech-like recordings of 8 s (VoxCeleb2's
mean), through pyspk.online.load_online_data and the DataLoader the trainer uses (with the
trainer's allocator setting, :func:`pyspk.malloc.keep_freed_memory`), at 1 and 2 workers:
decode + fbank only, each augmentation kind alone, and all of them (a uniform draw of clean,
reverb, noise, music, babble, as views: 1 draws over the offline combined set; + speed 0.9/1.1
kept as the same speaker). The shards rows read the same utterances written by ``pyspk shards``
as FLAC (the default) and as WAV (``write_shards(fmt="wav")``). Two figures per cell:

* **wall**: frames/s of the loader divided by its workers (what a trainer sees; on a shared or
  oversubscribed machine it understates a worker's speed);
* **cpu**: frames per CPU-second of the worker processes (their user + system time), which
  another job on the machine does not dilute.

Both are a worker's steady state, taken as a difference: each cell runs two epochs, a short one
of one batch per worker and a long one of ``steps`` more (for shards: all of a 16-utterance shard
dir, one batch, then all of the full one), each consumed to its end so that the loader joins its
workers and every batch they made is counted with its time. The frames, the wall time and the
workers' CPU time (``getrusage(RUSAGE_CHILDREN)``, fork to exit) of the short epoch are subtracted
from the long one's: what a worker pays once (its start, its first batch's one-off costs, its
exit) cancels out, as a long training epoch amortises it. One batch made in this process before
the workers fork fills the caches a worker builds once (the fbank extractor, the RIR pool and its
spectra, the noise bank, the resampling kernels).
Prints one markdown table headed by commit, date and CPU.

    python bench/bench_online.py [--quick]      (--quick: fewer batches and recordings)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace as NS

import soundfile as sf
import torch

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
    ("shards (FLAC), all + speed", "all+speed", {"source": "shards", "format": "flac"}),
    ("shards (WAV), all + speed", "all+speed", {"source": "shards", "format": "wav"}),
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


def subset(data: Path, out: Path, speakers: int, per_spk: int) -> Path:
    """The first ``per_spk`` utterances of the first ``speakers`` speakers of ``data``."""
    out.mkdir(parents=True, exist_ok=True)
    utt2spk = [line.split() for line in (data / "utt2spk").read_text().splitlines()]
    spks = sorted({s for _, s in utt2spk})[:speakers]
    keep = [u for s in spks for u in sorted(u for u, t in utt2spk if t == s)[:per_spk]]
    for name in ("wav.scp", "utt2spk"):
        table = dict(line.split(" ", 1) for line in (data / name).read_text().splitlines())
        (out / name).write_text("".join(f"{u} {table[u]}\n" for u in keep))
    return out


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


def children_cpu() -> float:
    """User + system seconds of this process's joined children (the loader's workers)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def online_config(root: Path, which, workers: int, steps, source: str):
    from pyspk.online import OnlineConfig

    shards = source == "shards"
    return NS(
        data=OnlineConfig(
            source=source,
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
        sampler=NS(
            kind="shuffle" if shards else "pk",
            speakers_per_batch=8,
            utts_per_speaker=2,
            views=2,
            batch_size=16 if shards else None,
        ),
        train=NS(num_workers=workers, steps_per_epoch=steps),
    )


def warm_up(td) -> None:
    """One batch in this process, so that the forked workers start with its caches filled."""
    from pyspk.data.dataset import KeyedBatches

    td.sampler.set_epoch(0)
    if isinstance(td.dataset, torch.utils.data.Dataset):
        td.dataset[next(iter(KeyedBatches(td.sampler)))]
    else:  # shards: the loader itself, in this process
        workers, td.dataset.num_workers = td.dataset.num_workers, 0
        next(iter(td.dataset))
        td.dataset.num_workers = workers
    td.sampler.set_epoch(0)


def run_epoch(train_dir: Path, root: Path, which, workers: int, steps, source: str):
    """(frames, wall seconds, workers' CPU seconds) of one epoch of ``steps`` batches (None: all)."""
    from pyspk.online import load_online_data

    td = load_online_data(train_dir, online_config(root, which, workers, steps, source), seed=1)
    warm_up(td)
    gc.collect()
    c0, t0, frames = children_cpu(), time.perf_counter(), 0
    for feats, _ in td.loader():  # to its end: the loader joins its workers
        frames += feats.shape[0] * feats.shape[1]
    gc.collect()
    return frames, time.perf_counter() - t0, children_cpu() - c0


def measure(train_dir: Path, root: Path, which, workers: int, steps, source: str = "audio", short_dir=None):
    """(wall, cpu) frames/s per worker in a steady state (module docstring): an epoch of ``steps``
    batches more than a short one of a batch per worker, less that short one; for shards, the
    epoch of ``train_dir`` less the epoch of ``short_dir`` (``steps`` unused)."""
    if source == "shards":
        runs = ((short_dir, None), (train_dir, None))
    else:
        runs = ((train_dir, workers), (train_dir, workers + steps))
    (f0, w0, c0), (f1, w1, c1) = (run_epoch(d, root, which, workers, n, source) for d, n in runs)
    return (f1 - f0) / max(w1 - w0, 1e-9) / workers, (f1 - f0) / max(c1 - c0, 1e-9)


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

    from pyspk.malloc import keep_freed_memory

    logging.basicConfig(level=logging.WARNING)
    keep_freed_memory()  # as the trainer does before its loader forks the workers
    speakers, per_spk, files, steps = (12, 8, 32, 6) if args.quick else (24, 16, 128, 20)
    with tempfile.TemporaryDirectory(prefix="bench_online.") as tmp:
        root = Path(tmp)
        data = make_data(root, speakers, per_spk, 8.0, files)
        (root / "augment.yaml").write_text("num_rooms: 10\nspeed: true\nspeed_new_speakers: false\n")
        from pyspk.online.shards import write_shards

        short = subset(data, root / "data_short", 8, 2)  # 16 utterances of 8 speakers: one batch
        for fmt in ("flac", "wav"):
            write_shards(data, root / f"shards_{fmt}", shard_size=8, seed=1, fmt=fmt)
            write_shards(short, root / f"shards_short_{fmt}", shard_size=8, seed=1, fmt=fmt)
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
                    fmt = extra["format"]
                    wall, cpu = measure(
                        root / f"shards_{fmt}", root, which, workers, None, "shards", root / f"shards_short_{fmt}"
                    )
                else:
                    wall, cpu = measure(data, root, which, workers, steps)
                cells += [f"{wall:,.0f}", f"{cpu:,.0f}"]
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
