"""Fbank stage benchmarks. Prints TSV rows: figure, value, unit, note.

1. Throughput, one job, one thread (torch.set_num_threads(1)), 16 kHz FLAC:
   end to end (read + fbank + ark/scp write, the job's own code: pyspk.stages.fbank.run_job)
   and the fbank computation alone on the same, pre-loaded waveforms, in x real time,
   and their ratio (targets: >= 1000x RT per core, ratio >= 0.8).
2. Agreement with kaldi-native-fbank (dither 0, 20-7600 Hz, int16-scaled samples,
   povey window, pre-emphasis 0.97, no energy): max |log-mel difference| (target < 2e-3).
3. Peak memory (max RSS of any process, resource.getrusage(RUSAGE_CHILDREN) in a fresh
   measuring process) of the whole stage (pyspk fbank --nj 1 via utils/run.pl) for 1 h
   and 10 h of audio (wav.scp entries of 10 s drawn from 20 generated FLAC files).
4. Compressed features (``compress: true``, ``--compress-feats true``): bytes of feats.ark per
   second of audio, float32 and Kaldi compressed (CM), and the job's end-to-end x real time
   with each, the two alternated on the same set.

    python bench/bench_fbank.py [--quick] [--rows ROWS]   (--quick: 0.1 h / 0.5 h, fewer repeats;
        ROWS: comma-separated of throughput,fresh_job,wav,agreement,memory,compressed; default all)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SR = 16000


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Harmonic 'voiced' segments with pauses and noise, int16-representable."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    env = (np.sin(2 * np.pi * rng.uniform(2, 4) * t) > -0.3).astype(float)
    x = 0.2 * x * env + 0.005 * rng.standard_normal(n)
    return (np.round(np.clip(x, -1, 1) * 32767) / 32768).astype(np.float32)


def write_set(root: Path, utts: int, seconds: float, distinct: int, fmt: str = "flac") -> Path:
    """data dir whose wav.scp has ``utts`` entries over ``distinct`` FLAC files."""
    wav, data = root / "wav", root / "data"
    wav.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(distinct):
        p = wav / f"f{i:03d}.{fmt}"
        if not p.exists():
            sf.write(p, speechlike(seconds, i), SR, subtype="PCM_16")
        files.append(p)
    lines = [f"u{i:06d} {files[i % distinct]}\n" for i in range(utts)]
    (data / "wav.scp").write_text("".join(lines))
    (data / "utt2spk").write_text("".join(f"u{i:06d} s{i % 10}\n" for i in range(utts)))
    return data


def row(figure, value, unit, note=""):
    print(f"{figure}\t{value}\t{unit}\t{note}", flush=True)


def decode_rate(data: Path, fmt: str) -> float:
    """x real time of decoding the set's files alone (soundfile / libsndfile)."""
    paths = [ln.split()[1] for ln in (data / "wav.scp").read_text().splitlines()]
    t0 = time.perf_counter()
    n = sum(sf.read(p, dtype="float32")[0].shape[0] for p in paths)
    return n / SR / (time.perf_counter() - t0)


def reference_decode_rate(data: Path) -> float | None:
    """x real time of the reference FLAC decoder (``flac -d``, libFLAC) on the set's distinct
    files, one process for all of them (amortised start-up); None when flac is not installed."""
    import shutil

    flac = shutil.which("flac")
    if flac is None:
        return None
    paths = sorted({ln.split()[1] for ln in (data / "wav.scp").read_text().splitlines()})
    seconds = sum(sf.info(p).frames for p in paths) / SR
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([flac, "-d", "-s", "-c", "-f", *paths], stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t0)
    return seconds / best


def stock_rate(waves, cfg, audio_s: float, repeats: int) -> float:
    import torch

    from pyspk.features.fbank import _extractor

    module = _extractor(cfg, True).extractor
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for w in waves:
                module(torch.from_numpy(w * 32768.0)[None])
            best = min(best, time.perf_counter() - t0)
    return audio_s / best


def throughput(tmp: Path, utts: int, repeats: int, fmt: str = "flac") -> None:
    """Best-of-``repeats`` timings, alternating the two measurements (robust to a loaded machine).
    ``utts`` wav.scp entries of 8 s over at most 60 distinct files (a long job, so the job's
    fixed cost -- stamps, renames, fsyncs -- weighs as little as in a real job)."""
    import torch

    from pyspk.features.audio import read_audio
    from pyspk.features.fbank import FbankConfig, compute_fbank_energy
    from pyspk.stages.fbank import run_job, write_splits

    torch.set_num_threads(1)
    data = write_set(tmp / f"tp_{fmt}", utts, 8.0, distinct=min(utts, 60), fmt=fmt)
    cfg = FbankConfig.from_yaml(REPO / "conf" / "fbank.yaml")
    fb = (tmp / f"tp_{fmt}" / "fbank").resolve()
    write_splits(data, fb, 1)
    # each distinct file once (the rest are the same arrays): memory stays small
    cache: dict = {}
    waves = []
    for utt, source in (ln.split() for ln in (data / "wav.scp").read_text().splitlines()):
        if source not in cache:
            cache[source] = read_audio(utt, source, SR)
        waves.append(cache[source])
    audio_s = sum(w.shape[0] for w in waves) / SR
    compute_fbank_energy(waves[0], SR, cfg)  # build the extractor once, as a job does
    best_alone, best_e2e, best_dec = float("inf"), float("inf"), 0.0
    for _ in range(repeats):  # interleaved, best of N: robust to other load on the machine
        t0 = time.perf_counter()
        for w in waves:
            compute_fbank_energy(w, SR, cfg)
        best_alone = min(best_alone, time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_job(data, fb, 1, cfg)
        best_e2e = min(best_e2e, time.perf_counter() - t0)
        best_dec = max(best_dec, decode_rate(data, fmt))
    alone, e2e = audio_s / best_alone, audio_s / best_e2e
    note = f"{utts} utts x 8 s 16 kHz {fmt.upper()}, 1 thread, VAD on, best of {repeats}"
    if fmt == "flac":
        row("fbank_alone_xRT", f"{alone:.0f}", "x real time", note)
        row(
            "fbank_alone_stock_lhotse_xRT",
            f"{stock_rate(waves, cfg, audio_s, repeats):.0f}",
            "x real time",
            "Lhotse's own Wav2LogFilterBank (|X|**2 power spectrum), same waves, for reference",
        )
        row("fbank_end_to_end_xRT", f"{e2e:.0f}", "x real time", f"target >= 1000; {e2e / 1000:.2f} of target; {note}")
        row("end_to_end_over_alone", f"{e2e / alone:.3f}", "ratio", "target >= 0.8")
        row(
            "flac_decode_alone_xRT",
            f"{best_dec:.0f}",
            "x real time",
            f"soundfile decode only; bound on the ratio: {best_dec / (best_dec + alone):.3f}",
        )
        ref = reference_decode_rate(data)
        if ref:
            row(
                "flac_reference_decoder_xRT",
                f"{ref:.0f}",
                "x real time",
                f"libFLAC's own 'flac -d' to /dev/null, same files; bound on the ratio: {ref / (ref + alone):.3f}",
            )
    else:
        row(
            f"end_to_end_over_alone_{fmt}",
            f"{e2e / alone:.3f}",
            "ratio",
            f"same job on {fmt.upper()} (decode {best_dec:.0f}x RT): the non-decode I/O overhead",
        )


FRESH_JOB = """
import sys, time, torch
torch.set_num_threads(1)
from pyspk.stages.fbank import run_job
from pyspk.features.fbank import FbankConfig
import tqdm  # imported by run_job: a fixed per-process cost, not timed
cfg = FbankConfig.from_yaml(sys.argv[4])
t0 = time.perf_counter()
run_job(sys.argv[1], sys.argv[2], 1, cfg)
print(time.perf_counter() - t0)
"""


def fresh_job(tmp: Path, repeats: int) -> None:
    """One job in a fresh process, as the stage runs it, with the allocator setting of
    pyspk.malloc on (as shipped) and off (PYSPK_MALLOC=system): the first utterances of a
    fresh process are where glibc's dynamic mmap threshold costs page faults."""
    data, fb = tmp / "tp_flac" / "data", (tmp / "tp_flac" / "fbank").resolve()
    audio_s = sum(sf.info(ln.split()[1]).frames for ln in (data / "wav.scp").read_text().splitlines()) / SR
    env = dict(os.environ, PYTHONPATH=str(REPO))
    best = {"on": float("inf"), "off": float("inf")}
    for _ in range(repeats):
        for mode in best:
            out = subprocess.run(
                [sys.executable, "-c", FRESH_JOB, str(data), str(fb), mode, str(REPO / "conf" / "fbank.yaml")],
                capture_output=True,
                text=True,
                check=True,
                env=dict(env, PYSPK_MALLOC="system" if mode == "off" else "keep"),
            )
            best[mode] = min(best[mode], float(out.stdout.split()[-1]))
    row(
        "fbank_job_fresh_process_xRT",
        f"{audio_s / best['on']:.0f}",
        "x real time",
        f"one job in a fresh process (run_job after imports; includes building the extractor), best of {repeats}; "
        f"{audio_s / best['off']:.0f}x without pyspk.malloc (PYSPK_MALLOC=system)",
    )


def agreement() -> None:
    import kaldi_native_fbank as knf

    from pyspk.features.fbank import FbankConfig, compute_fbank

    worst = 0.0
    for seed in range(5):
        wave = speechlike(3.0, 100 + seed)
        ours = compute_fbank(wave, SR, FbankConfig())
        opts = knf.FbankOptions()
        opts.frame_opts.dither = 0.0
        opts.frame_opts.snip_edges = False
        opts.frame_opts.window_type = "povey"
        opts.mel_opts.num_bins = 80
        opts.mel_opts.low_freq = 20
        opts.mel_opts.high_freq = 7600
        k = knf.OnlineFbank(opts)
        k.accept_waveform(SR, (wave * 32768).tolist())
        k.input_finished()
        ref = np.stack([k.get_frame(i) for i in range(k.num_frames_ready)])
        assert ref.shape == ours.shape, (ref.shape, ours.shape)
        worst = max(worst, float(np.abs(ours - ref).max()))
    row("kaldi_native_fbank_max_abs_diff", f"{worst:.2e}", "log-mel", "target < 2e-3; 5 x 3 s, snip_edges false")


def peak_memory(tmp: Path, hours: float) -> None:
    data = write_set(tmp / f"mem{hours:g}", int(hours * 360), 10.0, distinct=20)
    fb = tmp / f"mem{hours:g}" / "fbank"
    cmd = [
        sys.executable,
        "-m",
        "pyspk.bin.fbank",
        "--config",
        str(REPO / "conf" / "fbank.yaml"),
        "--nj",
        "1",
        "--cmd",
        str(REPO / "utils" / "run.pl"),
        str(data),
        str(fb),
    ]
    probe = (
        "import resource, subprocess, sys, time; t = time.time(); "
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.time() - t)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", probe] + cmd, capture_output=True, text=True, env=env, check=True)
    rc, kib, secs = out.stdout.split()
    if rc != "0":
        raise RuntimeError(f"fbank stage failed for {hours} h; see {fb}/log")
    frames = sum(int(ln.split()[1]) for ln in (data / "utt2num_frames").read_text().splitlines())
    row(
        f"fbank_stage_peak_rss_{hours:g}h",
        f"{int(kib) / 1024:.0f}",
        "MiB",
        f"{frames} frames, ark {sum(p.stat().st_size for p in fb.glob('feats.*.ark')) / 2**30:.2f} GiB, "
        f"wall {float(secs):.0f} s (incl. startup)",
    )
    row(
        f"fbank_stage_{hours:g}h_xRT",
        f"{hours * 3600 / float(secs):.0f}",
        "x real time",
        "whole stage, 1 job, wall clock incl. process startup and merge; target >= 1000",
    )
    import shutil

    shutil.rmtree(fb)


def compressed(tmp: Path, utts: int, repeats: int) -> None:
    """feats.ark bytes per second of audio and the job's x real time, float32 against compressed."""
    import dataclasses

    import torch

    from pyspk.features.ark import job_files
    from pyspk.features.fbank import FbankConfig
    from pyspk.stages.fbank import run_job, write_splits

    torch.set_num_threads(1)
    data = write_set(tmp / "cm", utts, 8.0, distinct=min(utts, 60))
    audio_s = sum(sf.info(ln.split()[1]).frames for ln in (data / "wav.scp").read_text().splitlines()) / SR
    cfg = FbankConfig.from_yaml(REPO / "conf" / "fbank.yaml")
    configs = {
        "float32": dataclasses.replace(cfg, compress=False),
        "compressed": dataclasses.replace(cfg, compress=True),
    }
    best = {name: float("inf") for name in configs}
    size = {}
    for _ in range(repeats):  # alternated, best of N
        for name, c in configs.items():
            fb = (tmp / "cm" / f"fbank_{name}").resolve()
            write_splits(data, fb, 1)
            t0 = time.perf_counter()
            run_job(data, fb, 1, c)
            best[name] = min(best[name], time.perf_counter() - t0)
            size[name] = job_files(fb, 1)["ark"].stat().st_size
    note = f"{utts} utts x 8 s 16 kHz FLAC, 80 mel bins, 1 thread, VAD on (vad.ark not counted)"
    for name in configs:
        row(
            f"feats_bytes_per_audio_s_{name}",
            f"{size[name] / audio_s:.0f}",
            "bytes/s",
            f"{size[name] / audio_s * 3600 / 2**20:.1f} MiB per hour of audio; {note}",
        )
    row("feats_compressed_over_float32_bytes", f"{size['compressed'] / size['float32']:.3f}", "ratio", note)
    for name in configs:
        row(
            f"fbank_end_to_end_xRT_{name}",
            f"{audio_s / best[name]:.0f}",
            "x real time",
            f"run_job, best of {repeats}; {note}",
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", default="throughput,fresh_job,wav,agreement,memory,compressed")
    args = ap.parse_args()
    rows = set(args.rows.split(","))
    utts, repeats = (30, 2) if args.quick else (450, 5)
    with tempfile.TemporaryDirectory(prefix="bench_fbank.") as d:
        tmp = Path(d)
        if rows & {"throughput", "fresh_job"}:
            throughput(tmp, utts=utts, repeats=repeats)
        if "fresh_job" in rows:
            fresh_job(tmp, repeats=repeats)
        if "wav" in rows:
            throughput(tmp, utts=utts, repeats=repeats, fmt="wav")
        if "agreement" in rows:
            agreement()
        if "memory" in rows:
            for hours in (0.1, 0.5) if args.quick else (1.0, 10.0):
                peak_memory(tmp, hours)
        if "compressed" in rows:
            compressed(tmp, utts=utts, repeats=repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
