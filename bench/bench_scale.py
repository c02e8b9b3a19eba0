#!/usr/bin/env python
"""Scaling table: what each stage of the recipe costs as the training set grows, fitted per hour
of training audio and extrapolated to VoxCeleb1, VoxCeleb2 and CN-Celeb (docs/scale.md).

    python bench/bench_scale.py [--quick] [--scales 1,4,16] [--paths offline,online] [--out DIR]
                                [--gpu-check FILE] [--results FILE]

**Recipe rows.** For each scale k, SynthCeleb is made with k times its size's training speakers
(``run.sh --synth-num-train-spk``; the test set stays as it is), and ``./run.sh`` runs one stage
per call (``--stage N --stop-stage N``, one system, ``--data``/``--exp``/``--fbank-dir`` under OUT)
on each path: offline (stored features, four augmented copies) and ``--online true`` (no stored
features). Per stage: wall time, the peak resident memory of its largest process (``ru_maxrss`` of
the stage's process tree, read by a launcher process) and the disk it added under data/, fbank/
and exp/.
Stage 0 makes the corpus once per scale for both paths. After stage 6, ``pyspk score`` is timed on
up to 1M trials (pairs of the test set's utterances): the scoring rate.

**Training rows**, measured once: the training step (forward, AAM head, backward, Adam) of
ECAPA-TDNN C=512 and C=1024 and ResNet34 at 128 x 200 frames on this CPU, as the recipe trains
(compiled, bfloat16 where the CPU has it), with its FLOPs per frame counted by FlopCounterMode; the
AAM head with 17,982 classes (VoxCeleb2's speakers with the two speed copies as new speakers); the
online loader's frames per CPU-second of one worker with every augmentation kind
(bench/bench_online.py's ``all + speed``). The GPU's frames/s come from ``--gpu-check`` (the
gpu_check.md of bench/gpu_check.sh) when given, else from FLOPs at ``--gpu-peak-tflops`` x
``--gpu-mfu`` (default 989 x 0.30: an H100 SXM's dense bfloat16 peak at 30 % model FLOP
utilisation; an assumption, named in the table). Loader cores per GPU = the GPU's frames/s over the
loader's frames/s per core.

**Fits and extrapolation.** Per path, stage and figure, least squares ``a + b x`` over the scales
(x = hours of training audio; x-vectors for the back-end stage; through the origin with one
scale), evaluated at each corpus's size. Stage 3 runs a fixed number of steps whatever the size,
so its fitted row is its step rate, and training at scale is given per epoch (one 200-frame crop
of every training utterance) from the ECAPA C=512 step.

Prints TSV rows ``figure<TAB>value<TAB>unit<TAB>note`` (bench/run.sh collects them), then one
markdown table and, from its VoxCeleb2 rows, what a VoxCeleb2 run needs (``--epochs`` of ECAPA
C=512 on ``--gpus``: a budget, assumed); both are written to ``--results`` (default
docs/results/scale.md, with --quick OUT/scale.md) under the commit, date, CPU class and command.
``--recipe-args '--compress-feats true'`` passes flags to every run.sh call (use a new --out for
each setting). Resumable: a scale's measurements are OUT/x<k>.json, rewritten after every stage,
and the training rows OUT/training.json; what is there is reused, and a stage found half done is
cleared and run again. A scale whose
projected disk exceeds the free space is skipped with a row saying so. A measured scale's trees
are deleted once its json is complete (``--keep-trees`` keeps them). ``--quick``: the tiny size,
scale 1, a few training steps and small step batches, to prove the script works; its figures
mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))  # bench_train's fixtures

STAGES = {0: "corpus", 1: "fbank", 2: "augment", 3: "train", 4: "extract", 5: "back-end", 6: "score", 7: "report"}
CROP = 200  # frames per training crop (2 s), the batch shape of every step row
FRAMES_PER_HOUR = 360_000  # 10 ms frame shift
MEAN_UTT_S = 8.0  # VoxCeleb2's mean utterance length: where a corpus's count is not known
HEAD_CLASSES = 17_982  # VoxCeleb2's 5,994 speakers x 3 (speed 0.9 and 1.1 as new speakers)
ENCODERS = (
    ("ecapa512", "ECAPA C=512", "ecapa_tdnn", {"channels": 512}),
    ("ecapa1024", "ECAPA C=1024", "ecapa_tdnn", {"channels": 1024}),
    ("resnet34", "ResNet34", "resnet34", {}),
)
PROBE_TRIALS = 1_000_000  # the scoring probe's trials: the size of Vox1-E or H


@dataclass(frozen=True)
class Target:
    """A corpus to extrapolate to: its training set, the test set it is scored on, its trials."""

    name: str
    hours: float
    utts: Optional[int]  # None: hours x 3600 / MEAN_UTT_S
    speakers: int
    test_utts: int
    test_hours: Optional[float]  # None: test_utts x MEAN_UTT_S / 3600
    trials: int
    note: str

    @property
    def n_utts(self) -> int:
        return self.utts or round(self.hours * 3600 / MEAN_UTT_S)

    @property
    def n_test_hours(self) -> float:
        return self.test_hours if self.test_hours is not None else self.test_utts * MEAN_UTT_S / 3600


TARGETS = (
    Target("VoxCeleb1", 340, 148_642, 1_211, 4_874, 11.2, 37_611, "dev; tested on Vox1-O (cleaned)"),
    Target(
        "VoxCeleb2",
        2_442,
        1_092_009,
        5_994,
        153_516,
        351.6,
        37_611 + 579_818 + 550_894,
        "dev; tested on Vox1-O, E and H (cleaned): all of VoxCeleb1 is its test set",
    ),
    Target(
        "CN-Celeb",
        1_360,
        None,
        2_793,
        17_973,
        None,
        2 * 3_484_292,
        f"CN-Celeb1 dev + CN-Celeb2; utterances taken at {MEAN_UTT_S:.0f} s each; eval 196 enrolments x "
        "17,777 segments, two lists",
    ),
)


def row(figure, value, unit, note=""):
    print(f"{figure}\t{value}\t{unit}\t{note}", flush=True)


def say(msg):
    print(f"bench_scale: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- measuring a stage
# A small process between this one and the stage: Linux carries a process's peak RSS into the
# ru_maxrss of what it execs (this one holds torch), so the stage is forked from the launcher and the
# launcher reports RUSAGE_CHILDREN: the largest process of the stage's tree. It passes TERM and HUP
# on; INT reaches the stage from the terminal itself.
LAUNCHER = r"""
import resource, signal, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
signal.signal(signal.SIGINT, lambda *a: None)
for sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, lambda s, f: p.send_signal(s))
rc = p.wait()
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc)
"""


def run_measured(cmd, log_path: Path) -> dict:
    """Run ``cmd``: its wall time and the peak RSS of its largest process. Raises with the log's
    tail when it fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rss = log_path.with_suffix(".maxrss")
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        p = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(rss), *map(str, cmd)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            rc = p.wait()
        except BaseException:
            p.terminate()
            p.wait()
            raise
    wall = time.perf_counter() - t0
    if rc:
        tail = "".join(log_path.read_text(errors="replace").splitlines(True)[-15:])
        raise RuntimeError(f"{' '.join(map(str, cmd[:6]))} ... failed (exit {rc}); {log_path}:\n{tail}")
    return {"wall_s": wall, "peak_rss_mib": int(rss.read_text()) / 1024}


def disk_bytes(*dirs) -> int:
    """Bytes allocated under ``dirs`` (each inode once)."""
    seen, total = set(), 0
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                try:
                    st = os.lstat(os.path.join(root, f))
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def audio_facts(data_dir: Path) -> dict:
    """Hours, utterances and speakers of a SynthCeleb set (wav.scp of plain files)."""
    import soundfile as sf

    secs, n = 0.0, 0
    for line in open(data_dir / "wav.scp"):
        _, path = line.split(maxsplit=1)
        info = sf.info(path.strip())
        secs += info.frames / info.samplerate
        n += 1
    speakers = sum(1 for _ in open(data_dir / "spk2utt"))
    return {"hours": secs / 3600, "utts": n, "speakers": speakers}


# ----------------------------------------------------------------------------- one scale
class Scale:
    """One scale's trees under OUT/x<k>/ and its record OUT/x<k>.json."""

    def __init__(self, out: Path, k: int, spk: int, args):
        self.k, self.spk, self.args = k, spk, args
        self.root, self.json = out / f"x{k}", out / f"x{k}.json"
        self.data, self.logs = self.root / "data", out / "logs"
        self.rec = json.loads(self.json.read_text()) if self.json.is_file() else {"k": k, "spk": spk, "paths": {}}
        if (
            self.rec.get("spk") != spk
            or self.rec.get("size", args.size) != args.size
            or self.rec.get("recipe_args", args.recipe_args) != args.recipe_args
        ):
            raise SystemExit(
                f"bench_scale: {self.json} was measured with another size, speaker count or "
                "--recipe-args; use another --out"
            )
        self.rec.update(size=args.size, recipe_args=args.recipe_args)

    def save(self):
        tmp = self.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.rec, indent=1))
        tmp.replace(self.json)

    def tree(self, path: str) -> dict:
        base = self.root / path
        return {"data": self.data, "exp": base / "exp", "fbank": base / "fbank"}

    def done(self, path: str) -> bool:
        return self.rec["paths"].get(path, {}).get("complete", False)

    def command(self, stage: int, path: str):
        t = self.tree(path)
        sysargs = ["--config", self.args.config] if self.args.config else ["--systems", self.args.system]
        return [
            "./run.sh",
            "--stage",
            stage,
            "--stop-stage",
            stage,
            "--synth-size",
            self.args.size,
            "--synth-num-train-spk",
            self.spk,
            "--data",
            t["data"],
            "--exp",
            t["exp"],
            "--fbank-dir",
            t["fbank"],
            "--nj",
            self.args.nj,
            "--force",
            "true",
            "--online",
            "true" if path == "online" else "false",
            *sysargs,
            *shlex.split(self.args.recipe_args),
        ]

    def clear(self, stage: int, path: str):
        """Remove what a half-done run of ``stage`` left (its queue jobs' stamps would make a rerun
        finish only the missing jobs), so that it is measured whole."""
        t, sys_ = self.tree(path), self.args.system
        sets = (
            []
            if path == "online"
            else [f"synth_t*/{f}" for f in ("feats.scp", "vad.scp", "utt2num_frames", ".done.fbank")]
        )
        globs = {
            0: [(self.root, "data")],
            1: [(t["fbank"], "synth_t*")] + [(t["data"], g) for g in sets],
            2: [(t["fbank"], "synth_train_*")] + ([(t["data"], "synth_train_*")] if sets else []),
            3: [(t["exp"], sys_)],
            4: [(t["exp"], f"{sys_}/xvectors_*")],
            5: [(t["exp"], f"{sys_}/backend")],
            6: [(t["exp"], f"{sys_}/scores")],
            7: [(t["exp"], "results.*"), (t["exp"], ".done.report")],
        }
        for base, pattern in globs[stage]:
            for p in Path(base).glob(pattern):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()

    def run_stage(self, stage: int, path: str) -> dict:
        t = self.tree(path)
        dirs = [t["data"], t["exp"], t["fbank"]]
        self.clear(stage, path)
        before = disk_bytes(*dirs)
        say(f"x{self.k} {path}: stage {stage} ({STAGES[stage]})")
        r = run_measured(self.command(stage, path), self.logs / f"x{self.k}_{path}_stage{stage}.log")
        r["disk_mib"] = (disk_bytes(*dirs) - before) / 2**20
        if stage == 3:
            r.update(train_csv_rates(t["exp"] / self.args.system / "train.csv"))
        if stage == 6:
            r["trials"] = sum(sum(1 for _ in open(p)) for p in (t["data"] / "synth_test").glob("trials*"))
        return r

    def stage0(self) -> None:
        """The corpus, shared by the paths: measured once, remade (unmeasured) if its tree was deleted."""
        if "stage0" in self.rec and (self.data / ".done.stage0_synth").is_file():
            return
        r = self.run_stage(0, "offline")
        if "stage0" not in self.rec:
            self.rec["stage0"] = r
            self.rec["train"] = audio_facts(self.data / "synth_train")
            self.rec["test"] = audio_facts(self.data / "synth_test")
            self.save()

    def measure(self, path: str) -> None:
        self.stage0()
        if path == "online" and not (self.root / "offline").is_dir():
            # the shared data dir's feature tables name a deleted offline tree; stage 3 would check them
            self.clear(1, "offline")
            self.clear(2, "offline")
        rec = self.rec["paths"].setdefault(path, {"stages": {}})
        for stage in range(1, 8):
            if str(stage) not in rec["stages"]:
                rec["stages"][str(stage)] = self.run_stage(stage, path)
                self.save()
        if "probe" not in rec:
            rec["probe"] = score_probe(self, path)
        rec["complete"] = True
        self.save()
        if not self.args.keep_trees:
            shutil.rmtree(self.root / path, ignore_errors=True)


def train_csv_rates(csv_path: Path) -> dict:
    import csv

    with open(csv_path, newline="") as f:
        fps = [float(r["frames_per_s"]) for r in csv.DictReader(f)]
    fps = [v for v in fps if math.isfinite(v)]
    return {"steps": len(fps), "median_frames_per_s": statistics.median(fps) if fps else float("nan")}


def score_probe(scale: Scale, path: str) -> dict:
    """``pyspk score`` on pairs of the test set's utterances (up to PROBE_TRIALS) with the fitted
    back-ends: every back-end, calibration and metrics, as stage 6 runs them."""
    t = scale.tree(path)
    exp = t["exp"] / scale.args.system
    utt2spk = [ln.split() for ln in open(t["data"] / "synth_test" / "utt2spk")]
    probe = scale.root / path / "score_probe"
    (probe / "data").mkdir(parents=True, exist_ok=True)
    n = 0
    with open(probe / "data" / "trials_probe", "w") as f:
        for i, (u, s) in enumerate(utt2spk):
            for v, s2 in utt2spk[i + 1 :]:
                f.write(f"{u} {v} {'target' if s == s2 else 'nontarget'}\n")
                n += 1
                if n >= PROBE_TRIALS:
                    break
            if n >= PROBE_TRIALS:
                break
    say(f"x{scale.k} {path}: scoring probe, {n:,} trials")
    cmd = [
        sys.executable,
        "-m",
        "pyspk.bin.main",
        "score",
        "--backend-dir",
        exp / "backend",
        "--xvector-dir",
        exp / "xvectors_synth_test",
        "--data-dir",
        probe / "data",
        "--out-dir",
        probe / "scores",
    ]
    r = run_measured(cmd, scale.logs / f"x{scale.k}_{path}_score_probe.log")
    shutil.rmtree(probe, ignore_errors=True)
    return {**r, "trials": n, "cohort": scale.rec["train"]["speakers"]}


# ----------------------------------------------------------------------------- training rows
CHILD = r"""
import json, statistics, sys, time
sys.path[:0] = [sys.argv[1] + "/bench", sys.argv[1] + "/tests", sys.argv[1]]
import torch
from torch.utils.flop_counter import FlopCounterMode
from bench_train import AAM, make_step, step_flops
from pyspk.malloc import keep_freed_memory
from pyspk.models import build_encoder
from pyspk.train.trainer import resolve_cpu_amp
name, kwargs, batch, steps, mode = json.loads(sys.argv[2])
keep_freed_memory()
bf16 = resolve_cpu_amp("auto")
flops = step_flops(make_step(name, kwargs, AAM, 2, 200, mode="eager_mkl")) / 400
enc = build_encoder(name, **kwargs).eval()
with torch.no_grad(), FlopCounterMode(display=False) as fc:
    enc(torch.randn(2, 200, 80))
step = make_step(name, kwargs, AAM, batch, 200, mode=mode + ("_bf16" if bf16 else ""))
step()
times = []
for _ in range(steps):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
dt = statistics.median(times)
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"frames_per_s": batch * 200 / dt, "s_per_step": dt, "mflop_per_frame": flops / 1e6,
                  "fwd_mflop_per_frame": fc.get_total_flops() / 400 / 1e6, "peak_rss_mib": hwm / 1024,
                  "batch": batch, "mode": mode + (" bfloat16" if bf16 else " float32"), "embed_dim": enc.embed_dim}))
"""


def measure_step(name, kwargs, batch, steps, mode) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO), json.dumps([name, kwargs, batch, steps, mode])],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def measure_head(batch, embed_dim, classes, steps=5) -> dict:
    """The AAM head alone (cosine logits, margin, cross-entropy, backward, Adam) at ``classes``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pyspk.losses.margin_softmax import MarginSoftmax

    head = MarginSoftmax(embed_dim, classes, kind="aam", margin=0.2, scale=30.0)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, fused=True)
    z, y = torch.randn(batch, embed_dim, requires_grad=True), torch.randint(0, classes, (batch,))

    def step():
        loss, _ = head(z, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {
        "ms": 1000 * statistics.median(times),
        "gflop": fc.get_total_flops() / 1e9,
        "classes": classes,
        "state_mib": 3 * classes * embed_dim * 4 / 2**20,
    }


def measure_loader(quick: bool) -> dict:
    """bench_online's ``all + speed`` row at one worker: frames per CPU-second and per wall second."""
    import logging
    import tempfile

    import bench_online

    logging.disable(logging.WARNING)
    speakers, per_spk, files, steps = (12, 8, 32, 5) if quick else (24, 16, 128, 20)
    with tempfile.TemporaryDirectory(prefix="bench_scale.") as tmp:
        root = Path(tmp)
        data = bench_online.make_data(root, speakers, per_spk, 8.0, files)
        (root / "augment.yaml").write_text("num_rooms: 10\nspeed: true\nspeed_new_speakers: false\n")
        wall, cpu = bench_online.measure(data, root, "all+speed", 1, steps)
    logging.disable(logging.NOTSET)
    return {"frames_per_cpu_s": cpu, "frames_per_wall_s": wall}


def training_rows(out: Path, args) -> dict:
    """The step, head and loader figures, measured once into OUT/training.json."""
    path = out / "training.json"
    batch, steps, mode = (2, 1, "eager") if args.quick else (args.step_batch, 3, "compiled")
    setting = {"batch": batch, "steps": steps, "mode": mode, "quick": args.quick}
    rec = json.loads(path.read_text()) if path.is_file() else {}
    if rec.get("setting") != setting:  # measured with other batches: measure again
        rec = {"setting": setting}
    for key, label, name, kwargs in ENCODERS:
        if key not in rec or "error" in rec[key]:
            say(f"training step {label}, {batch} x {CROP} ({mode})")
            rec[key] = measure_step(name, kwargs, batch, steps, mode)
            path.write_text(json.dumps(rec, indent=1))
    if "head" not in rec:
        say(f"AAM head, {HEAD_CLASSES:,} classes")
        rec["head"] = measure_head(args.step_batch, rec["ecapa512"].get("embed_dim", 192), HEAD_CLASSES)
    if "loader" not in rec:
        say("online loader, one worker, every augmentation kind")
        rec["loader"] = measure_loader(args.quick)
    path.write_text(json.dumps(rec, indent=1))
    return rec


def gpu_rates(args, train: dict) -> dict:
    """GPU frames/s per encoder: measured (gpu_check.md) or estimated from FLOPs; and the
    gpu_check host's loader frames/s per worker when it has them."""
    out = {}
    for key, label, _, _ in ENCODERS:
        mf = train.get(key, {}).get("mflop_per_frame")
        if mf:
            out[key] = {
                "frames_per_s": args.gpu_peak_tflops * 1e12 * args.gpu_mfu / (mf * 1e6),
                "source": f"estimate: {args.gpu_peak_tflops:g} TFLOP/s x {args.gpu_mfu:g} / {mf:.1f} MFLOP per frame",
            }
    if not args.gpu_check:
        return out
    for line in Path(args.gpu_check).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[3] != "frames/s":
            continue
        value = float(cells[2].replace(",", ""))
        if cells[0] == "train step":
            for key, label, _, _ in ENCODERS:
                if cells[1].startswith(label + ",") and f"{CROP}" in cells[1] and "float32" not in cells[1]:
                    best = out.get(key, {})
                    if best.get("source", "estimate").startswith("estimate") or value > best["frames_per_s"]:
                        out[key] = {"frames_per_s": value, "source": f"measured ({args.gpu_check}: {cells[1]})"}
        elif cells[0] == "online loader":
            workers = int(cells[1].split()[0])
            out["loader_host"] = {
                "frames_per_s": value / workers,
                "source": f"{args.gpu_check}: {cells[1]}, per worker",
            }
    return out


# ----------------------------------------------------------------------------- fits
def fit(xs, ys, origin=True):
    """(a, b) of y = a + b x by least squares. With one distinct x: through the origin (a cost that
    grows with the data), or with ``origin=False`` a constant (memory)."""
    pts = [(x, y) for x, y in zip(xs, ys) if x and y is not None and math.isfinite(y)]
    if not pts:
        return None
    if len({x for x, _ in pts}) < 2:
        mean_y = statistics.fmean(y for _, y in pts)
        return (0.0, mean_y / statistics.fmean(x for x, _ in pts)) if origin else (mean_y, 0.0)
    mx, my = statistics.fmean(x for x, _ in pts), statistics.fmean(y for _, y in pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return my - b * mx, b


FIGURES = (("wall_s", "wall"), ("peak_rss_mib", "peak RSS"), ("disk_mib", "disk added"))


def stage_record(scale: dict, path: str, stage: int) -> Optional[dict]:
    return scale.get("stage0") if stage == 0 else scale["paths"].get(path, {}).get("stages", {}).get(str(stage))


def fits(scales, path) -> dict:
    """{(stage, figure): (a, b)}: x = hours of training audio, x-vectors (1000s) for stage 5."""
    out = {}
    for stage in STAGES:
        for fig, _ in FIGURES:
            xs, ys = [], []
            for s in scales:
                r = stage_record(s, path, stage)
                if r:
                    xs.append(s["train"]["utts"] / 1000 if stage == 5 else s["train"]["hours"])
                    ys.append(r[fig])
            out[stage, fig] = fit(xs, ys, origin=fig != "peak_rss_mib")
    return out


def at(ab, x):
    return None if ab is None else max(0.0, ab[0] + ab[1] * x)


# ----------------------------------------------------------------------------- formatting
def dur(s) -> str:
    if s is None:
        return "–"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= 2 * size:
            return f"{s / size:,.1f} {unit}"
    return f"{s:,.1f} s"


def mib(m) -> str:
    if m is None:
        return "–"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if abs(m) * 2**20 >= size:
            return f"{m * 2**20 / size:,.1f} {unit}"
    return f"{m * 2**20 / 1e3:,.0f} kB"


def fps(v) -> str:
    return f"{v:,.0f} frames/s"


# ----------------------------------------------------------------------------- the table
class Table:
    """The markdown table and its TSV rows, built together."""

    def __init__(self):
        self.values = {}  # (corpus, path, figure) -> {stage: value}: the extrapolations
        self.emitted = set()
        self.lines = [
            "| row | path | figure | " + " | ".join(f"{n} {s}" for n, s in STAGES.items()) + " | total | note |",
            "|---|---|---|" + "---:|" * (len(STAGES) + 1) + "---|",
        ]

    def add(self, label, path, figure, cells: dict, total="", note=""):
        self.lines.append(
            f"| {label} | {path} | {figure} | "
            + " | ".join(cells.get(n, "") for n in STAGES)
            + f" | {total} | {note} |"
        )

    def tsv(self, figure, value, unit, note=""):
        if figure in self.emitted:  # a figure both paths share (an epoch's time)
            return
        self.emitted.add(figure)
        if isinstance(value, float):
            value = f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
        if value is not None:
            row(figure, value, unit, note)


UNITS = {"wall_s": ("s", dur), "peak_rss_mib": ("MiB", mib), "disk_mib": ("MiB", mib)}


def measured_rows(t: Table, scales, paths):
    for s in scales:
        tr = s["train"]
        hours = f"{tr['hours']:.{1 if tr['hours'] > 1 else 3}f}"
        label = f"x{s['k']}: {tr['speakers']:,} spk, {tr['utts']:,} utts, {hours} h"
        for path in paths:
            if path in s.get("skipped", {}):
                t.add(label, path, "skipped", {}, note=s["skipped"][path])
                t.tsv(f"scale_{path}_x{s['k']}_skipped", 1, "", s["skipped"][path])
                continue
            if not s["paths"].get(path, {}).get("complete"):
                continue
            recs = {n: stage_record(s, path, n) for n in STAGES}
            for fig, name in FIGURES:
                unit, fmt = UNITS[fig]
                vals = {n: r[fig] for n, r in recs.items() if r}
                for n, v in vals.items():
                    t.tsv(f"scale_{path}_x{s['k']}_s{n}_{fig}", v, unit, f"{label}; stage {n} {STAGES[n]}")
                total = max(vals.values()) if fig == "peak_rss_mib" else sum(vals.values())
                note = ""
                if fig == "wall_s":
                    r3, pr = recs[3], s["paths"][path]["probe"]
                    note = (
                        f"stage 3: {r3['steps']} steps, median {fps(r3['median_frames_per_s'])} (train.csv); "
                        f"stage 6: {recs[6]['trials']:,} trials; probe: {pr['trials']:,} trials in "
                        f"{pr['wall_s']:.1f} s"
                    )
                t.add(label, path, name, {n: fmt(v) for n, v in vals.items()}, fmt(total), note)
            t.tsv(f"scale_x{s['k']}_train_hours", tr["hours"], "h", label)


def rates(scales, path) -> dict:
    """Stage 3's step rate, the scoring probe's trials/s (the largest cohort) and stage 7's time."""
    done = [s for s in scales if s["paths"].get(path, {}).get("complete")]
    if not done:
        return {}
    st3 = [s["paths"][path]["stages"]["3"] for s in done]
    big = max(done, key=lambda s: s["train"]["speakers"])["paths"][path]["probe"]
    return {
        "steps_per_s": statistics.fmean(r["steps"] / r["wall_s"] for r in st3),
        "frames_per_s": statistics.fmean(r["median_frames_per_s"] for r in st3),
        "trials_per_s": big["trials"] / big["wall_s"],
        "cohort": big["cohort"],
        "report_s": statistics.fmean(s["paths"][path]["stages"]["7"]["wall_s"] for s in done),
    }


def fitted_rows(t: Table, scales, path, f, r):
    label = "fit: per hour of training audio"
    for fig, name in FIGURES:
        unit, fmt = UNITS[fig]
        cells, slopes = {}, []
        for n in STAGES:
            ab = f[n, fig]
            if ab is None:
                continue
            per = "per 1k x-vectors" if n == 5 else "per h"
            cells[n] = f"{fmt(ab[1])} {per} + {fmt(ab[0])}"
            t.tsv(
                f"scale_{path}_s{n}_{fig}_per_{'kxvec' if n == 5 else 'h'}",
                ab[1],
                f"{unit} {per}",
                f"least squares over {len(scales)} scale(s); fixed part {ab[0]:.4g} {unit}",
            )
            if n not in (3, 5, 6, 7):
                slopes.append(ab[1])
        if fig == "wall_s":
            cells[3] = f"fixed steps: {r['steps_per_s']:.2f} steps/s, {fps(r['frames_per_s'])}"
            cells[6] = f"{r['trials_per_s']:,.0f} trials/s (cohort {r['cohort']:,})"
            cells[7] = f"fixed {dur(r['report_s'])}"
            t.tsv(
                f"scale_{path}_score_trials_per_s",
                r["trials_per_s"],
                "trials/s",
                f"pyspk score, every back-end, AS-norm cohort {r['cohort']} speakers",
            )
        total = "" if fig == "peak_rss_mib" else f"{fmt(sum(slopes))} per h"
        note = "total: stages 0-2 and 4" if fig != "peak_rss_mib" else ""
        if fig == "disk_mib":
            t.tsv(f"scale_{path}_disk_per_h", sum(slopes), "MiB/h", "stages 0-2 and 4, per hour of training audio")
        t.add(label, path, name, cells, total, note)


def epoch_seconds(target: Target, frames_per_s) -> Optional[float]:
    return None if not frames_per_s else target.n_utts * CROP / frames_per_s


def extrapolated_rows(t: Table, path, f, r, train, gpu):
    loader = train["loader"]["frames_per_cpu_s"]
    for tg in TARGETS:
        label = f"{tg.name}: {tg.hours:,} h, {tg.n_utts:,} utts, {tg.speakers:,} spk"
        x = {n: tg.hours for n in STAGES}
        x.update({1: tg.hours + tg.n_test_hours, 4: tg.hours + tg.n_test_hours, 5: tg.n_utts / 1000})
        key = tg.name.lower().replace("-", "")
        for fig, name in FIGURES:
            unit, fmt = UNITS[fig]
            vals = {n: at(f[n, fig], x[n]) for n in STAGES if n != 0}
            vals = {n: v for n, v in vals.items() if v is not None}
            cells = {0: "–"}
            note = ""
            if fig == "wall_s":
                cpu = epoch_seconds(tg, train["ecapa512"].get("frames_per_s"))
                g = epoch_seconds(tg, gpu.get("ecapa512", {}).get("frames_per_s"))
                vals[6] = tg.trials / r["trials_per_s"]
                vals[7] = r["report_s"]
                vals.pop(3, None)
                cells[3] = f"epoch, ECAPA C=512: CPU {dur(cpu)}, GPU {dur(g)}"
                if path == "online" and loader_cores(gpu, loader):
                    cells[3] += f" with {loader_cores(gpu, loader):,.0f} loader cores"
                t.tsv(f"scale_{key}_epoch_cpu_s", cpu, "s", f"ECAPA C=512, {tg.n_utts:,} crops of {CROP} frames")
                t.tsv(f"scale_{key}_epoch_gpu_s", g, "s", gpu.get("ecapa512", {}).get("source", ""))
                note = f"stage 6: {tg.trials:,} trials; {tg.note}"
            elif fig == "peak_rss_mib":
                vals.pop(3, None)
                cells[3] = f"ECAPA C=512 step: {mib(train['ecapa512'].get('peak_rss_mib'))}"
                note = "recipe system's stages (TDNN), fitted"
            else:
                wav = (tg.hours + tg.n_test_hours) * FRAMES_PER_HOUR * 320 / 2**20  # 16-bit at 16 kHz: 32,000 B/s
                cells[0] = f"{mib(wav)} (16-bit WAV)"
                vals.pop(3, None)
                note = "stage 3: checkpoints only"
                t.tsv(
                    f"scale_{key}_{path}_disk_mib",
                    wav + sum(vals.values()),
                    "MiB",
                    "audio as 16-bit WAV + fitted stages 1, 2, 4-7",
                )
                vals[0] = wav
            for n, v in vals.items():
                cells[n] = fmt(v)
                if n:
                    t.tsv(f"scale_{key}_{path}_s{n}_{fig}", v, unit, f"{label}; stage {n} {STAGES[n]}")
            total = max(vals.values()) if fig == "peak_rss_mib" else sum(vals.values())
            t.add(label, path, name, cells, fmt(total), note)
            t.values[tg.name, path, fig] = vals
        t.values[tg.name, "epoch"] = (cpu, g)


def needs_table(t: Table, train, gpu, args) -> list:
    """What a VoxCeleb2 run needs, per path, from the extrapolated rows."""
    paths = [p for p in args.paths if ("VoxCeleb2", p, "wall_s") in t.values]
    if not paths:
        return []
    _, g = t.values["VoxCeleb2", "epoch"]
    cores = loader_cores(gpu, train["loader"]["frames_per_cpu_s"])
    gpu_h = args.epochs * g / 3600 if g else None
    rows = [
        (
            "disk: audio (16-bit WAV), features, x-vectors",
            lambda p: mib(sum(t.values["VoxCeleb2", p, "disk_mib"].values())),
        ),
        (
            f"CPU core-hours: features (stages 1-2, at --nj {args.nj})",
            lambda p: (
                f"{args.nj * (t.values['VoxCeleb2', p, 'wall_s'].get(1, 0) + t.values['VoxCeleb2', p, 'wall_s'].get(2, 0)) / 3600:,.0f}"
            ),
        ),
        (f"GPU-hours: {args.epochs} epochs of ECAPA C=512", lambda p: f"{gpu_h:,.1f}" if gpu_h else "–"),
        (f"wall on {args.gpus} GPUs", lambda p: dur(gpu_h * 3600 / args.gpus) if gpu_h else "–"),
        (
            f"loader cores for {args.gpus} GPUs (this CPU's cores)",
            lambda p: f"{args.gpus * cores:,.0f}" if cores and p == "online" else "–",
        ),
        (
            f"CPU core-hours: extraction (stage 4, recipe TDNN, at --nj {args.nj})",
            lambda p: f"{args.nj * t.values['VoxCeleb2', p, 'wall_s'].get(4, 0) / 3600:,.0f}",
        ),
        (
            "back-end (stage 5) + scoring of 1.17M trials (stage 6)",
            lambda p: dur(t.values["VoxCeleb2", p, "wall_s"].get(5, 0) + t.values["VoxCeleb2", p, "wall_s"].get(6, 0)),
        ),
    ]
    lines = [
        "| VoxCeleb2 (2,442 h, 1,092,009 utterances) | " + " | ".join(paths) + " |",
        "|---|" + "---:|" * len(paths),
    ]
    lines += [f"| {what} | " + " | ".join(fn(p) for p in paths) + " |" for what, fn in rows]
    return lines


def loader_cores(gpu, loader_fps) -> Optional[float]:
    g = gpu.get("ecapa512", {}).get("frames_per_s")
    return g / loader_fps if g and loader_fps else None


def training_table(t: Table, train, gpu, args):
    for key, label, _, _ in ENCODERS:
        c = train.get(key, {})
        name = f"step {label}, {c.get('batch', args.step_batch)} x {CROP}"
        if "error" in c:
            t.add(name, "CPU", "frames/s", {3: "failed"}, note=c["error"])
            continue
        t.add(
            name,
            "CPU",
            "frames/s",
            {3: fps(c["frames_per_s"])},
            note=(
                f"{c['s_per_step']:.2f} s/step, {c['mode']}; {c['mflop_per_frame']:.1f} MFLOP/frame forward + backward "
                f"({c['fwd_mflop_per_frame']:.1f} forward); peak RSS {mib(c['peak_rss_mib'])}"
            ),
        )
        t.tsv(
            f"scale_step_{key}_cpu_frames_per_s", c["frames_per_s"], "frames/s", f"{c['batch']} x {CROP}, {c['mode']}"
        )
        t.tsv(f"scale_step_{key}_mflop_per_frame", c["mflop_per_frame"], "MFLOP/frame", "FlopCounterMode, eager step")
        if key in gpu:
            t.add(name, "GPU", "frames/s", {3: fps(gpu[key]["frames_per_s"])}, note=gpu[key]["source"])
            t.tsv(f"scale_step_{key}_gpu_frames_per_s", gpu[key]["frames_per_s"], "frames/s", gpu[key]["source"])
    h, e = train["head"], train["ecapa512"]
    share = h["ms"] / 1000 / e["s_per_step"] if e.get("s_per_step") else None
    gpu_ms = h["gflop"] * 1e9 / (args.gpu_peak_tflops * 1e12 * args.gpu_mfu) * 1000
    t.add(
        f"AAM head, {h['classes']:,} classes, batch {args.step_batch}",
        "CPU",
        "ms/step",
        {3: f"{h['ms']:.1f} ms" + (f" ({100 * share:.1f} % of a step at {e['batch']})" if share else "")},
        note=f"{h['gflop']:.2f} GFLOP; weights + Adam state {mib(h['state_mib'])}; GPU at the FLOP estimate "
        f"{gpu_ms:.2f} ms",
    )
    t.tsv("scale_head_aam_ms_cpu", h["ms"], "ms", f"{h['classes']} classes, batch {args.step_batch}")
    ld = train["loader"]
    t.add(
        "online loader, 1 worker, all kinds + speed",
        "CPU",
        "frames/s per core",
        {3: fps(ld["frames_per_cpu_s"])},
        note=f"per CPU-second of the worker; {fps(ld['frames_per_wall_s'])} wall",
    )
    t.tsv("scale_loader_frames_per_core", ld["frames_per_cpu_s"], "frames/s", "bench_online all + speed, 1 worker")
    cores = loader_cores(gpu, ld["frames_per_cpu_s"])
    if cores:
        t.add(
            "loader cores per GPU, ECAPA C=512",
            "GPU",
            "cores",
            {3: f"{cores:,.0f}"},
            note=f"GPU frames/s over loader frames/s per core of this CPU ({gpu['ecapa512']['source']})",
        )
        t.tsv("scale_loader_cores_per_gpu", cores, "cores", "ECAPA C=512; " + gpu["ecapa512"]["source"])
    if "loader_host" in gpu and "ecapa512" in gpu:
        c2 = gpu["ecapa512"]["frames_per_s"] / gpu["loader_host"]["frames_per_s"]
        t.add(
            "loader cores per GPU, the GPU host's loader",
            "GPU",
            "cores",
            {3: f"{c2:,.0f}"},
            note=gpu["loader_host"]["source"],
        )
        t.tsv("scale_loader_cores_per_gpu_host", c2, "cores", gpu["loader_host"]["source"])


# ----------------------------------------------------------------------------- main
def projected_disk_mib(scales, path, hours) -> Optional[float]:
    """A path's disk at ``hours`` of training audio, from the total disk of the scales measured."""
    done = [s for s in scales if s["paths"].get(path, {}).get("complete")]
    xs = [s["train"]["hours"] for s in done]
    ys = [sum(stage_record(s, path, n)["disk_mib"] for n in STAGES) for s in done]
    return at(fit(xs, ys), hours)


def quick_config(out: Path, system: str) -> Path:
    """The system's config shrunk to seconds of training (the rest as shipped)."""
    import yaml

    from pyspk.train.config import config_to_dict, load_config

    cfg = config_to_dict(load_config(REPO / "conf" / "synth" / f"{system}.yaml"))
    cfg["sampler"].update(speakers_per_batch=4, utts_per_speaker=2)
    cfg["optim"]["warmup_steps"] = 1
    cfg["train"].update(epochs=2, steps_per_epoch=3, average_last=1, log_interval=1, compile=False)
    path = out / "conf" / f"{system}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    load_config(path)
    return path


def measure_scales(out: Path, args) -> list:
    import yaml

    base = yaml.safe_load((REPO / "conf" / "synth.yaml").read_text())["sizes"][args.size]["num_train_spk"]
    recs = []
    for k in args.scales:
        sc = Scale(out, k, base * k, args)
        for path in args.paths:
            sc.rec.setdefault("skipped", {}).pop(path, None)
            if sc.done(path):
                continue
            known = [s for s in recs + [sc.rec] if "train" in s]
            hours = known[-1]["train"]["hours"] / known[-1]["spk"] * sc.spk if known else None
            need = projected_disk_mib(recs, path, hours) if hours else None
            free = shutil.disk_usage(out).free / 2**20
            if need and need * 1.1 + 1024 > free:
                why = f"needs about {mib(need)} of disk, {mib(free)} free"
                say(f"x{k} {path}: skipped, {why}")
                sc.rec.setdefault("skipped", {})[path] = why
                continue
            sc.measure(path)
        if all(sc.done(p) or p in sc.rec["skipped"] for p in args.paths) and not args.keep_trees:
            shutil.rmtree(sc.root, ignore_errors=True)
        recs.append(sc.rec)
    return recs


def build_table(scales, train, args) -> Table:
    t = Table()
    gpu = gpu_rates(args, train)
    measured_rows(t, scales, args.paths)
    for path in args.paths:
        done = [s for s in scales if s["paths"].get(path, {}).get("complete")]
        if not done:
            continue
        f, r = fits(done, path), rates(done, path)
        fitted_rows(t, done, path, f, r)
        extrapolated_rows(t, path, f, r, train, gpu)
    training_table(t, train, gpu, args)
    t.needs = needs_table(t, train, gpu, args)
    return t


def page(t: Table, args, argv) -> str:
    from pyspk.provenance import header, provenance

    command = "python bench/bench_scale.py" + "".join(f" {a}" for a in argv)
    gpu = (
        f"measured, from {args.gpu_check}"
        if args.gpu_check
        else f"estimated: {args.gpu_peak_tflops:g} TFLOP/s x {args.gpu_mfu:g} model FLOP utilisation over the "
        "step's FLOPs per frame (an assumption, not a measurement)"
    )
    return (
        f"# Scaling table\n\n{header(provenance(command))}\n\n"
        f"Recipe rows: `./run.sh` one stage at a time on SynthCeleb ({args.size} size) at "
        f"{', '.join(f'{k}x' for k in args.scales)} its training speakers, system `{args.system}`, "
        f"`--nj {args.nj}`{f' `{args.recipe_args}`' if args.recipe_args else ''}; wall time, peak RSS of the "
        "stage's largest process, disk added. Fits: least "
        "squares a + b x per stage (x = hours of training audio; thousands of x-vectors for stage 5), "
        "evaluated at each corpus's size (stages 1 and 4 over its training and test audio). Training "
        f"at scale: one epoch = one {CROP}-frame crop of every training utterance. GPU figures: {gpu}. "
        "What the table means: [docs/scale.md](../scale.md).\n\n"
        + "\n".join(t.lines)
        + "\n"
        + (
            f"\n## What a VoxCeleb2 run needs\n\nFrom the VoxCeleb2 rows above; training budget "
            f"`--epochs {args.epochs}` on `--gpus {args.gpus}` (assumptions, not measurements); core-hours "
            f"are this CPU's, at the `--nj` of the run.\n\n" + "\n".join(t.needs) + "\n"
            if t.needs
            else ""
        )
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny size, scale 1, seconds of training: proves it works")
    ap.add_argument("--scales", default="1,4,16", help="multiples of the size's training speakers")
    ap.add_argument("--paths", default="offline,online", help="offline (stored features), online (--online true)")
    ap.add_argument("--size", default=None, help="SynthCeleb size (default: default; --quick: tiny)")
    ap.add_argument("--system", default="aam", help="the one system trained (conf/synth/<system>.yaml)")
    ap.add_argument("--nj", type=int, default=os.cpu_count() or 2)
    ap.add_argument(
        "--out", default=None, help="trees and measurements (default bench/out/scale, --quick: scale_quick)"
    )
    ap.add_argument("--results", default=None, help="the page (default docs/results/scale.md; --quick: OUT/scale.md)")
    ap.add_argument("--gpu-check", default=None, help="gpu_check.md of bench/gpu_check.sh: measured GPU frames/s")
    ap.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="dense bfloat16 peak (H100 SXM: 989)")
    ap.add_argument("--gpu-mfu", type=float, default=0.30, help="model FLOP utilisation assumed for the estimate")
    ap.add_argument("--step-batch", type=int, default=128, help="batch of the step rows (x 200 frames)")
    ap.add_argument("--epochs", type=int, default=150, help="training budget of the VoxCeleb2 summary")
    ap.add_argument("--gpus", type=int, default=8, help="GPUs of the VoxCeleb2 summary")
    ap.add_argument("--keep-trees", action="store_true", help="keep each scale's data/, fbank/, exp/")
    ap.add_argument(
        "--recipe-args",
        default="",
        help="more run.sh flags for every stage, e.g. '--compress-feats true' (a new --out for each setting)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.scales, args.size = "1", args.size or "tiny"
    args.size = args.size or "default"
    args.scales = [int(k) for k in args.scales.split(",")]
    args.paths = [p for p in args.paths.split(",") if p]
    if not set(args.paths) <= {"offline", "online"} or not args.paths:
        ap.error(f"--paths: offline and/or online, got {args.paths}")
    out = Path(args.out or REPO / "bench" / "out" / ("scale_quick" if args.quick else "scale")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    args.config = str(quick_config(out, args.system)) if args.quick else None
    train = training_rows(out, args)
    scales = measure_scales(out, args)
    t = build_table(scales, train, args)
    text = page(t, args, argv)
    results = (
        Path(args.results)
        if args.results
        else (out / "scale.md" if args.quick else REPO / "docs" / "results" / "scale.md")
    )
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(text)
    print("\n" + "\n".join(t.lines) + ("\n\n" + "\n".join(t.needs) if t.needs else ""))
    say(f"wrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
