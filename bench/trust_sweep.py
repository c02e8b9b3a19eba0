#!/usr/bin/env python3
"""Hostile-input sweep: bad inputs, handed files, hostile names, kills and a full disk
against a tiny recipe tree; prints one row per case and the count of each outcome.

    python bench/trust_sweep.py [--work DIR] [--only 1,5,12] [--markdown docs/results/trust_sweep.md]

Builds a tiny SynthCeleb recipe tree once (``DIR/pristine``, stages 0-7 of ``run.sh``
with a seconds-long AAM system), then runs every case on a fresh copy of it at one fixed
path (``DIR/tree``, so the absolute paths inside scp files and stamps stay valid). Each
case does one hostile thing and classifies what pyspk did:

    good   clear error (non-zero exit, one message naming the file/line/key, no traceback)
           works (the input is valid and the output is right)
           recovered (a kill or damage is followed by a rerun that redoes what is needed)
    bad    code execution, orphaned job, wrong result, data loss, silent accept,
           traceback, unclear error

The exit status is 1 when any case is bad. Some cases need root (a read-only bind mount,
a small tmpfs for a full disk); without root they are reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
GOOD = ("clear error", "works", "recovered")
CASES: List[Tuple[str, str, Callable]] = []


def case(area: str, title: str):
    def reg(fn):
        CASES.append((area, title, fn))
        return fn

    return reg


class Sweep:
    """The work dir: a pristine tiny recipe tree and the per-case copy at a fixed path."""

    def __init__(self, work: Path):
        self.work = work
        self.pristine = work / "pristine"
        self.tree = work / "tree"

    # ---- the tree ----
    def recipe_args(self, root: Path, *extra) -> List[str]:
        return [
            "./run.sh",
            "--synth-size",
            "tiny",
            "--config",
            str(root / "tiny.yaml"),
            "--nj",
            "2",
            "--data",
            str(root / "data"),
            "--exp",
            str(root / "exp"),
            "--fbank-dir",
            str(root / "fbank"),
            *map(str, extra),
        ]

    def build(self) -> None:
        """The tiny recipe at DIR/tree, kept as DIR/pristine (rebuilt when absent)."""
        if (self.pristine / "exp" / ".done.report").is_file():
            return
        shutil.rmtree(self.tree, ignore_errors=True)
        self.tree.mkdir(parents=True)
        write_tiny_config(self.tree / "tiny.yaml")
        p = run(self.recipe_args(self.tree), timeout=1800)
        if p.returncode != 0:
            sys.exit(f"trust_sweep: the tiny recipe failed:\n{p.stderr[-3000:]}")
        shutil.rmtree(self.pristine, ignore_errors=True)
        shutil.copytree(self.tree, self.pristine, symlinks=True)

    def fresh(self) -> Path:
        """DIR/tree as the pristine recipe left it; returns its path."""
        if self.tree.exists():
            subprocess.run(["chmod", "-R", "u+w", str(self.tree)], check=False)
            shutil.rmtree(self.tree)
        shutil.copytree(self.pristine, self.tree, symlinks=True)
        for d in (self.work, REPO):
            for f in d.glob("**/PWN*" if d == self.work else "PWN*"):
                f.unlink()
        return self.tree

    def rec(self, *extra, **kw):
        return run(self.recipe_args(self.tree, *extra), **kw)


def write_tiny_config(path: Path) -> None:
    """conf/synth/aam.yaml (resolved: its base merged in) shrunk to a few seconds of training."""
    cfg = yaml.safe_load(resolved_aam())
    cfg["encoder"] = {"name": "tdnn", "kwargs": {"channels": 32, "stats_channels": 64, "embed_dim": 32}}
    cfg["features"]["crop_frames"] = 100
    cfg["sampler"].update(speakers_per_batch=4, utts_per_speaker=2)
    cfg["optim"]["warmup_steps"] = 1
    cfg["train"].update(epochs=2, steps_per_epoch=4, average_last=1, log_interval=1, compile=False, cpu_amp=False)
    path.write_text(yaml.safe_dump(cfg))


def resolved_aam() -> str:
    """conf/synth/aam.yaml as the trainer reads it (``pyspk show-config``: its base.yaml merged in)."""
    p = pyspk("show-config", REPO / "conf/synth/aam.yaml")
    if p.returncode != 0:
        raise RuntimeError(f"pyspk show-config conf/synth/aam.yaml failed: {p.stderr}")
    return p.stdout


def run(argv, cwd=REPO, env=None, timeout=600, shell=False):
    env = dict(os.environ if env is None else env)
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, shell=shell, errors="replace"
    )


def pyspk(*args, **kw):
    return run([sys.executable, "-m", "pyspk.bin.main", *map(str, args)], **kw)


# ---- classification ----
def pwned(*where: Path) -> bool:
    """A marker file that a payload or a hostile name would have made."""
    dirs = [REPO, *where]
    return any(any(d.glob("PWN*")) for d in dirs if d.is_dir())


def error_outcome(p, *names: str) -> Tuple[str, str]:
    """clear error / unclear error / traceback / silent accept for a command that must fail."""
    err = (p.stderr or "") + (p.stdout or "")
    lines = err.strip().splitlines() or ["(no message)"]
    # the line that says what went wrong: the last naming an error, else the last one
    said = [
        ln
        for ln in lines
        if any(w in ln.lower() for w in ("error", "cannot", "refus", "out of date", "holds", "takes", "must"))
    ]
    last = (said or lines)[-1]
    if "Traceback (most recent call last)" in err:
        return "traceback", last
    if p.returncode == 0:
        return "silent accept", f"exit 0: {last}"
    missing = [n for n in names if n not in err]
    if missing:
        return "unclear error", f"message lacks {missing}: {last}"
    return "clear error", last


def processes_matching(text: str) -> List[int]:
    """Live pids whose command line holds ``text``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            out.append(int(d.name))
    return out


def payload_checkpoint(src: Path, dst: Path, marker: Path) -> None:
    """``src`` (a torch checkpoint) with a pickled os.system call in it, written to ``dst``."""
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    try:
        st = torch.load(src, map_location="cpu", weights_only=True)
    except Exception:  # an older checkpoint layout; the sweep's own file, so trusted
        st = torch.load(src, map_location="cpu", weights_only=False)
    st["extra" if "extra" in st else "payload"] = {"x": Payload()}
    torch.save(st, dst)


# ---- cases: code execution ----
@case("code", "init_from: a final.pt holding a pickled os.system call")
def c_init_from(s: Sweep):
    t = s.fresh()
    payload_checkpoint(t / "exp/tiny/final.pt", t / "evil.pt", t / "PWNED")
    cfg = yaml.safe_load((t / "tiny.yaml").read_text())
    cfg["train"]["init_from"] = str(t / "evil.pt")
    (t / "ft.yaml").write_text(yaml.safe_dump(cfg))
    p = run(
        [
            "./run.sh",
            "--synth-size",
            "tiny",
            "--config",
            str(t / "ft.yaml"),
            "--data",
            str(t / "data"),
            "--exp",
            str(t / "exp"),
            "--fbank-dir",
            str(t / "fbank"),
            "--stage",
            "3",
            "--stop-stage",
            "3",
        ]
    )
    if pwned(t):
        return "code execution", "PWNED exists"
    log = "".join(f.read_text(errors="replace") for f in (t / "exp/ft/log").glob("*.log"))
    return error_outcome(type(p)(p.args, p.returncode, p.stdout, p.stderr + log), "evil.pt")


@case("code", "resume: an epoch_N.pt holding a pickled os.system call")
def c_resume(s: Sweep):
    t = s.fresh()
    ck = sorted((t / "exp/tiny/checkpoints").glob("epoch_*.pt"))[-1]
    payload_checkpoint(ck, ck, t / "PWNED")
    (t / "exp/tiny/final.pt").unlink()
    p = s.rec("--stage", "3", "--stop-stage", "3")
    if pwned(t):
        return "code execution", "PWNED exists"
    log = (t / "exp/tiny/log/train.log").read_text(errors="replace")
    return error_outcome(type(p)(p.args, p.returncode, p.stdout, p.stderr + log), ck.name)


def _payload_tool(s: Sweep, *argv):
    t = s.fresh()
    payload_checkpoint(t / "exp/tiny/final.pt", t / "evil.pt", t / "PWNED")
    wav = first_wav(t)
    p = pyspk(*[a.format(evil=t / "evil.pt", wav=wav, t=t) for a in argv])
    if pwned(t):
        return "code execution", "PWNED exists"
    return error_outcome(p, "evil.pt")


def first_wav(t: Path) -> str:
    line = (t / "data/synth_test/wav.scp").read_text().splitlines()[0]
    return line.split(maxsplit=1)[1]


@case("code", "pyspk embed --model with a pickled payload")
def c_embed_payload(s):
    return _payload_tool(s, "embed", "--model", "{evil}", "{wav}")


@case("code", "pyspk verify --model with a pickled payload")
def c_verify_payload(s):
    return _payload_tool(s, "verify", "--model", "{evil}", "{wav}", "{wav}")


@case("code", "pyspk export with a pickled payload")
def c_export_payload(s):
    return _payload_tool(s, "export", "--out", "{t}/out.onnx", "{evil}")


@case("code", "run.sh --config 'x$(touch PWN).yaml'")
def c_config_subst(s: Sweep):
    t = s.fresh()
    shutil.copy(t / "tiny.yaml", t / "x$(touch${IFS}PWN).yaml")
    p = s.rec("--config", str(t / "x$(touch${IFS}PWN).yaml"), "--stage", "3", "--stop-stage", "3")
    if pwned(t):
        return "code execution", "PWN exists"
    return error_outcome(p, "--config")


@case("code", "pyspk fbank on a data dir named 'd$(touch PWN)'")
def c_fbank_subst(s: Sweep):
    t = s.fresh()
    d = t / "data" / "d$(touch${IFS}PWN)"
    shutil.copytree(t / "data/synth_test", d)
    for f in d.glob("*.scp"):
        if f.name != "wav.scp":
            f.unlink()
    p = pyspk("fbank", "--config", "conf/fbank.yaml", "--nj", "2", d, t / "fbank" / "dd")
    if pwned(t, d, t / "fbank"):
        return "code execution", "PWN exists"
    if p.returncode == 0:
        return (
            ("works", "features written inside the chosen dirs")
            if (d / "feats.scp").is_file()
            else ("wrong result", "exit 0 without feats.scp")
        )
    return error_outcome(p, "d$(touch")


@case("code", "run.sh --data with backticks")
def c_data_backtick(s: Sweep):
    t = s.fresh()
    before = set(os.listdir(t))
    p = run(
        [
            "./run.sh",
            "--synth-size",
            "tiny",
            "--config",
            str(t / "tiny.yaml"),
            "--data",
            str(t / "d`touch PWN`"),
            "--exp",
            str(t / "exp"),
            "--fbank-dir",
            str(t / "fbank"),
            "--stage",
            "0",
            "--stop-stage",
            "1",
        ]
    )
    if pwned(t):
        return "code execution", "PWN exists"
    created = sorted(set(os.listdir(t)) - before)
    if created and p.returncode != 0:
        return "silent accept", f"refused but created {created}"
    return error_outcome(p, "--data")


@case("code", "run.sh --exp with ';' (one system split in two)")
def c_exp_semicolon(s: Sweep):
    t = s.fresh()
    before = set(os.listdir(t))
    p = run(
        [
            "./run.sh",
            "--synth-size",
            "tiny",
            "--config",
            str(t / "tiny.yaml"),
            "--data",
            str(t / "data"),
            "--exp",
            str(t / "e;touch PWN"),
            "--fbank-dir",
            str(t / "fbank"),
            "--stage",
            "5",
            "--stop-stage",
            "5",
        ]
    )
    if pwned(t):
        return "code execution", "PWN exists"
    new = set(os.listdir(t)) - before
    if new and p.returncode != 0:
        return "silent accept", f"refused but created {sorted(new)}"
    return error_outcome(p, "--exp")


@case("code", "run.sh --data with a space")
def c_data_space(s: Sweep):
    t = s.fresh()
    (t / "sp").mkdir()
    chosen = (t / "sp ace", t / "exp", t / "fbank")
    before = set(t.rglob("*"))
    p = run(
        [
            "./run.sh",
            "--synth-size",
            "tiny",
            "--config",
            str(t / "tiny.yaml"),
            "--data",
            str(t / "sp ace/data"),
            "--exp",
            str(t / "exp"),
            "--fbank-dir",
            str(t / "fbank"),
            "--stage",
            "0",
            "--stop-stage",
            "1",
        ]
    )
    new = set(t.rglob("*")) - before
    outside = sorted(str(x.relative_to(t)) for x in new if not any(x == c or c in x.parents for c in chosen))
    if outside:
        return "silent accept", f"exit {p.returncode}; created outside the chosen dirs: {outside[:3]}"
    if p.returncode == 0:
        ok = (t / "sp ace/data/synth_train/feats.scp").is_file()
        return ("works", "spaces supported, outputs inside") if ok else ("wrong result", "exit 0 without features")
    return error_outcome(p, "--data")


@case("code", "utterance ids and trials holding $(...) are never executed")
def c_ids_subst(s: Sweep):
    t = s.fresh()
    tr = t / "data/synth_test/trials_en"
    lines = tr.read_text().splitlines()
    lines.append("spk$(touch${IFS}PWN) utt`touch PWN2` target")
    tr.write_text("\n".join(lines) + "\n")
    p = s.rec("--stage", "6", "--stop-stage", "7")
    if pwned(t):
        return "code execution", "PWN exists"
    return error_outcome(p, "trials_en")


# ---- cases: signals and concurrency ----
def _term_during(s: Sweep, stage: int, marker: str, sig=signal.SIGTERM):
    """Start the recipe from ``stage`` (forced), send ``sig`` when ``marker`` is printed and
    a job runs, rerun at once; classify (orphan / race / recovered)."""
    t = s.fresh()
    if stage in (1, 2):  # jobs that outlive the signal for long enough to be seen: audio through slow pipes
        for name in ("synth_train", "synth_test"):
            scp = t / "data" / name / "wav.scp"
            rows = [ln.split(maxsplit=1) for ln in scp.read_text().splitlines()]
            scp.write_text("".join(f"{k} sleep 0.5; cat {v} |\n" for k, v in rows))
    if stage == 4:  # per-job stamps would let --force reuse every job: start from none
        for d in (t / "exp/tiny").glob("xvectors_*"):
            shutil.rmtree(d)
    # stage 2 reads stage 1's output, which the slow pipes make out of date: run both
    first = 1 if stage == 2 else stage
    argv = s.recipe_args(t, "--stage", first, "--stop-stage", stage, "--force", "true")
    p = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    seen = False
    t0 = time.time()
    while time.time() - t0 < 120:
        line = p.stdout.readline()
        if not line:
            break
        if marker in line:
            seen = True
            break

    # wait until a job of this tree is running (a queue job, or training), then signal run.sh
    # alone (not its group)
    def job(cmd: str) -> bool:
        return ("pyspk.bin." in cmd and " --job " in cmd) or "pyspk.bin.train" in cmd

    t1 = time.time()
    while seen and time.time() - t1 < 60 and not any(job(cmdline(pid)) for pid in processes_matching(str(t))):
        time.sleep(0.05)
    if not seen or p.poll() is not None:
        p.kill()
        return "unclear error", f"stage {stage} ended before the signal could be sent"
    os.kill(p.pid, sig)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        return "orphaned job", "run.sh did not exit within 60 s of the signal"
    left = [pid for pid in processes_matching(str(t)) if "pyspk" in cmdline(pid) or "run.pl" in cmdline(pid)]
    rerun = subprocess.run(argv[:-2], cwd=REPO, capture_output=True, text=True, timeout=600)
    refused = "cannot run" in rerun.stderr and rerun.returncode != 0
    if left:
        for pid in processes_matching(str(t)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return "orphaned job", (
            f"{len(left)} process(es) of the old run alive after run.sh exited; "
            f"the rerun was {'refused' if refused else 'NOT refused (two writers)'}"
        )
    if rerun.returncode != 0 and not refused:
        return "unclear error", rerun.stderr.strip().splitlines()[-1]
    fin = subprocess.run(argv[:-2], cwd=REPO, capture_output=True, text=True, timeout=900)
    if fin.returncode != 0:
        return "unclear error", f"rerun after the signal failed: {fin.stderr.strip().splitlines()[-1]}"
    return "recovered", (
        "no process of the old run outlived run.sh; the rerun "
        + ("was refused, a later one finished" if refused else "finished the stage")
    )


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@case("signal", "SIGTERM to run.sh in stage 1 (fbank jobs), immediate rerun")
def c_term1(s):
    return _term_during(s, 1, "stage 1:")


@case("signal", "SIGTERM to run.sh in stage 2 (augmentation jobs), immediate rerun")
def c_term2(s):
    return _term_during(s, 2, "stage 2:")


@case("signal", "SIGTERM to run.sh in stage 4 (extraction jobs), immediate rerun")
def c_term4(s):
    return _term_during(s, 4, "stage 4:")


@case("signal", "SIGINT to run.sh in stage 3 (training), immediate rerun")
def c_int3(s):
    return _term_during(s, 3, "stage 3:", signal.SIGINT)


@case("signal", "SIGHUP to run.sh in stage 1, immediate rerun")
def c_hup1(s):
    return _term_during(s, 1, "stage 1:", signal.SIGHUP)


@case("signal", "SIGKILL of the whole run in stage 1, rerun gives identical features")
def c_kill1(s: Sweep):
    t = s.fresh()
    want = {f.name: f.read_bytes() for f in (t / "fbank/synth_test").glob("*.ark")}
    argv = s.recipe_args(t, "--stage", "1", "--stop-stage", "1", "--force", "true")
    p = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(6)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.5)
    r = s.rec("--stage", "1", "--stop-stage", "1")
    if r.returncode != 0:
        return error_outcome(r)
    got = {f.name: f.read_bytes() for f in (t / "fbank/synth_test").glob("*.ark")}
    if got != want:
        return "wrong result", "features differ from the uninterrupted run"
    return "recovered", "rerun redid stage 1; features byte-identical"


@case("signal", "two runs of the same stage at once")
def c_concurrent(s: Sweep):
    t = s.fresh()
    argv = s.recipe_args(t, "--stage", "3", "--stop-stage", "3", "--force", "true")
    a = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while (
        time.time() - t0 < 120
        and a.poll() is None
        and not any("pyspk.bin.train" in cmdline(pid) for pid in processes_matching(str(t)))
    ):
        time.sleep(0.05)
    running = a.poll() is None
    b = run(argv)
    a.communicate(timeout=600)
    if not running:
        return "sweep error", "the first run ended before the second started"
    if b.returncode == 0 and "cannot run" not in b.stderr:
        return "orphaned job / race", "the second run was not refused"
    return error_outcome(b, "pid")


# ---- cases: data ----
def _segments(s: Sweep, line: str, *names, expect_ok=False):
    t = s.fresh()
    d = t / "data/seg"
    shutil.copytree(t / "data/synth_test", d)
    for f in list(d.iterdir()):
        if f.name not in ("wav.scp", "utt2spk", "spk2utt"):
            f.unlink() if f.is_file() else shutil.rmtree(f)
    rec, path = (d / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)
    (d / "wav.scp").write_text(f"rec0 {path}\n")
    (d / "utt2spk").write_text("s1 spk0\n")
    (d / "spk2utt").write_text("spk0 s1\n")
    (d / "segments").write_text(line.replace("REC", "rec0") + "\n")
    v = run([str(REPO / "utils/validate_data_dir"), "--no-feats", str(d)])
    f = pyspk("fbank", "--config", "conf/fbank.yaml", "--nj", "1", d, t / "fbank/seg")
    if expect_ok:
        import soundfile as sf

        if v.returncode or f.returncode:
            return error_outcome(v if v.returncode else f)
        import kaldiio

        mat = dict(kaldiio.load_scp(str(d / "feats.scp")))["s1"]
        dur = sf.info(path).duration
        return (
            ("works", f"{mat.shape[0]} frames of a {dur:.2f} s recording")
            if mat.shape[0] > 0
            else ("wrong result", "no frames")
        )
    kinds = [error_outcome(v, *names), error_outcome(f, *names)]
    bad = [k for k in kinds if k[0] != "clear error"]
    return bad[0] if bad else ("clear error", f"validate: {kinds[0][1]} | fbank: {kinds[1][1]}")


@case("data", "segments: negative start")
def c_seg_neg(s):
    return _segments(s, "s1 REC -1.0 1.5", "segments", ":1")


@case("data", "segments: nan start")
def c_seg_nan(s):
    return _segments(s, "s1 REC nan 1.5", "segments", ":1")


@case("data", "segments: three fields")
def c_seg_fields(s):
    return _segments(s, "s1 REC 0.5", "segments", ":1")


@case("data", "segments: end 58 s past the recording")
def c_seg_past(s):
    return _segments(s, "s1 REC 0.0 60.0", "s1", "past the end")


@case("data", "segments: end -1 means the end of the recording")
def c_seg_minus1(s):
    return _segments(s, "s1 REC 0.5 -1", expect_ok=True)


@case("data", "fix_data_dir run twice keeps the originals")
def c_fix_twice(s: Sweep):
    t = s.fresh()
    d = t / "data/fx"
    shutil.copytree(t / "data/synth_test", d)
    orig = (d / "utt2spk").read_text()
    # an utterance in utt2spk without audio: the first run drops it
    first = orig.splitlines()[0].split()[0]
    wav = [ln for ln in (d / "wav.scp").read_text().splitlines() if ln.split()[0] != first]
    (d / "wav.scp").write_text("\n".join(wav) + "\n")
    r1 = run([str(REPO / "utils/fix_data_dir"), str(d)])
    r2 = run([str(REPO / "utils/fix_data_dir"), str(d)])
    if r1.returncode or r2.returncode:
        return error_outcome(r1 if r1.returncode else r2)
    kept = [b for b in d.glob(".backup*") if (b / "utt2spk").is_file() and (b / "utt2spk").read_text() == orig]
    if not kept:
        return "data loss", "no backup holds the original utt2spk"
    return "works", f"originals in {kept[0].name}"


@case("data", "pyspk embed --out-ark of a wav whose path has a space")
def c_embed_space(s: Sweep):
    t = s.fresh()
    d = t / "sp ace"
    d.mkdir()
    wav = d / "a b.wav"
    shutil.copy(first_wav(t), wav)
    p = pyspk("embed", "--model", t / "exp/tiny/final.pt", "--out-ark", d / "x", wav)
    if p.returncode == 0:
        import kaldiio

        try:
            got = dict(kaldiio.load_scp(str(d / "x.scp")))
        except Exception as e:
            return "wrong result", f"exit 0, scp unreadable: {type(e).__name__}: {e}"
        return (
            ("works", "scp reads back")
            if list(got) == [str(wav)]
            else ("wrong result", f"exit 0, scp reads back keys {list(got)[:2]}")
        )
    return error_outcome(p, "a b.wav")


@case("data", "a truncated feats ark: the stage is out of date, the reader names the ark")
def c_trunc_feats(s: Sweep):
    t = s.fresh()
    ark = sorted((t / "fbank/synth_test").glob("*.ark"))[0]
    with open(ark, "r+b") as f:
        f.truncate(ark.stat().st_size // 2)
    dry = s.rec("--stage", "1", "--stop-stage", "1", "--dry-run", "true")
    if "would redo" not in dry.stderr:
        return "silent accept", "dry run says stage 1 is up to date"
    v = run([str(REPO / "utils/validate_data_dir"), str(t / "data/synth_test")])
    kind, msg = error_outcome(v, ark.name)
    if kind != "clear error":
        return kind, f"validate_data_dir: {msg}"
    r = s.rec("--stage", "1", "--stop-stage", "7")
    if r.returncode:
        return error_outcome(r)
    return "recovered", "dry run names the damage, validate names the ark, a rerun redoes it"


@case("data", "a truncated xvector.ark: stage 4 is out of date")
def c_trunc_xvec(s: Sweep):
    t = s.fresh()
    xdir = t / "exp/tiny/xvectors_synth_test"
    ark = Path((xdir / "xvector.scp").read_text().split()[1].rsplit(":", 1)[0])  # the ark it reads
    with open(ark, "r+b") as f:
        f.truncate(ark.stat().st_size - 10)
    p = pyspk(
        "score",
        "--backend-dir",
        t / "exp/tiny/backend",
        "--xvector-dir",
        t / "exp/tiny/xvectors_synth_test",
        "--data-dir",
        t / "data/synth_test",
        "--out-dir",
        t / "sc",
    )
    kind, msg = error_outcome(p, ark.name)
    if kind != "clear error":
        return kind, f"pyspk score: {msg}"
    r = s.rec("--stage", "4", "--stop-stage", "7")
    if r.returncode:
        return error_outcome(r)
    if "up to date; skipping" in r.stderr and "xvectors_synth_test" in r.stderr.split("up to date; skipping")[0][-300:]:
        return "silent accept", "stage 4 stayed up to date"
    return "recovered", f"reader: {msg}; rerun redid stage 4"


@case("data", "a trials edit then --stage 7 alone does not serve the old EER")
def c_stage7_stale(s: Sweep):
    t = s.fresh()
    tr = t / "data/synth_test/trials_en"
    lines = tr.read_text().splitlines()
    tr.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    old = (t / "exp/results.json").read_text()
    p = s.rec("--stage", "7", "--stop-stage", "7")
    if p.returncode == 0 and (t / "exp/results.json").read_text() == old:
        return "wrong result", "stage 7 served the results of the old trials"
    if p.returncode == 0:
        return "works", "stage 7 redone"
    return error_outcome(p, "stage")


@case("data", "an 8 kHz recording is resampled with a console note")
def c_8k(s: Sweep):
    import soundfile as sf

    t = s.fresh()
    d = t / "data/k8"
    d.mkdir()
    rng = np.random.default_rng(0)
    sf.write(d / "a.wav", (0.1 * rng.standard_normal(8000 * 3)).astype(np.float32), 8000)
    (d / "wav.scp").write_text(f"u1 {d / 'a.wav'}\n")
    (d / "utt2spk").write_text("u1 s1\n")
    (d / "spk2utt").write_text("s1 u1\n")
    p = pyspk("fbank", "--config", "conf/fbank.yaml", "--nj", "1", d, t / "fbank/k8")
    if p.returncode:
        return error_outcome(p)
    if "8000" not in p.stderr + p.stdout:
        return "silent accept", "no console word about the resampling"
    return "works", "console: " + next(ln for ln in (p.stderr + p.stdout).splitlines() if "8000" in ln)


@case("data", "5 s of digital silence as an utterance")
def c_silence(s: Sweep):
    import soundfile as sf

    t = s.fresh()
    d = t / "data/sil"
    shutil.copytree(t / "data/synth_test", d)
    for f in list(d.iterdir()):
        if f.name not in ("wav.scp", "utt2spk", "spk2utt"):
            f.unlink() if f.is_file() else shutil.rmtree(f)
    sf.write(d / "z.wav", np.zeros(16000 * 5, np.float32), 16000)
    wav = (d / "wav.scp").read_text().splitlines()
    spk = (d / "utt2spk").read_text().splitlines()
    (d / "wav.scp").write_text("\n".join(sorted(wav + [f"{spk[0].split()[1]}-zzz {d / 'z.wav'}"])) + "\n")
    (d / "utt2spk").write_text("\n".join(sorted(spk + [f"{spk[0].split()[1]}-zzz {spk[0].split()[1]}"])) + "\n")
    (d / "spk2utt").unlink()
    run([str(REPO / "utils/utt2spk_to_spk2utt")], cwd=d)
    from pyspk.data.kaldi_dir import read_table, utt2spk_to_spk2utt

    sp = utt2spk_to_spk2utt(read_table(d / "utt2spk"))
    (d / "spk2utt").write_text("".join(f"{k} {' '.join(v)}\n" for k, v in sp.items()))
    p = pyspk("fbank", "--config", "conf/fbank.yaml", "--nj", "1", d, t / "fbank/sil")
    if p.returncode:
        return error_outcome(p)
    out = p.stderr + p.stdout
    if "voiced" not in out:
        return "silent accept", "no console word about the utterance without speech"
    return "works", next(ln for ln in out.splitlines() if "voiced" in ln)


# ---- cases: configuration and arguments ----
def _train_cfg(s: Sweep, edit: Callable[[dict], None], *names, raw: Optional[str] = None):
    t = s.fresh()
    cfg = yaml.safe_load((t / "tiny.yaml").read_text())
    edit(cfg)
    (t / "bad.yaml").write_text(raw if raw is not None else yaml.safe_dump(cfg))
    p = run(
        [
            "./run.sh",
            "--synth-size",
            "tiny",
            "--config",
            str(t / "bad.yaml"),
            "--data",
            str(t / "data"),
            "--exp",
            str(t / "exp"),
            "--fbank-dir",
            str(t / "fbank"),
            "--stage",
            "3",
            "--stop-stage",
            "3",
        ]
    )
    log = (
        "".join(f.read_text(errors="replace") for f in (t / "exp/bad/log").glob("*.log"))
        if (t / "exp/bad/log").is_dir()
        else ""
    )
    return error_outcome(type(p)(p.args, p.returncode, p.stdout, p.stderr + log), *names)


@case("config", "encoder channels: 1e8")
def c_channels(s):
    return _train_cfg(s, lambda c: c["encoder"]["kwargs"].update(channels=int(1e8)), "channels")


@case("config", "optim lr: .nan")
def c_lr_nan(s):
    return _train_cfg(s, lambda c: c["optim"].update(lr=float("nan")), "lr")


@case("config", "optim lr: .inf")
def c_lr_inf(s):
    return _train_cfg(s, lambda c: c["optim"].update(lr=float("inf")), "lr")


@case("config", "a duplicate yaml key")
def c_dup_key(s: Sweep):
    raw = resolved_aam().replace("  lr: 0.004\n", "  lr: 0.004\n  lr: 0.04\n")
    return _train_cfg(s, lambda c: None, "lr", raw=raw)


@case("config", "a misspelled config key")
def c_typo(s):
    return _train_cfg(s, lambda c: c["optim"].update(lrr=0.1), "lrr")


@case("config", "utts_per_speaker: 500 on speakers with far fewer utterances")
def c_upk(s: Sweep):
    kind, msg = _train_cfg(s, lambda c: c["sampler"].update(utts_per_speaker=500), "utts_per_speaker")
    if kind == "silent accept":
        t = s.tree
        text = "".join(f.read_text(errors="replace") for f in (t / "exp/bad/log").glob("*.log"))
        if "utts_per_speaker" in text:
            return "works", "trains, warning: " + next(ln for ln in text.splitlines() if "utts_per_speaker" in ln)
    return kind, msg


@case("args", "run.sh --nj 0")
def c_nj0(s: Sweep):
    s.fresh()
    return error_outcome(s.rec("--nj", "0", "--stage", "1", "--stop-stage", "1", "--force", "true"), "--nj")


@case("args", "pyspk fbank --nj -2")
def c_nj_neg(s: Sweep):
    t = s.fresh()
    return error_outcome(
        pyspk("fbank", "--config", "conf/fbank.yaml", "--nj", "-2", t / "data/synth_test", t / "fbank/x"), "--nj"
    )


@case("args", "pyspk verify --threshold nan")
def c_thr_nan(s: Sweep):
    t = s.fresh()
    w = first_wav(t)
    return error_outcome(pyspk("verify", "--model", t / "exp/tiny/final.pt", "--threshold", "nan", w, w), "--threshold")


@case("args", "pyspk verify --min-speech -1")
def c_min_speech(s: Sweep):
    t = s.fresh()
    w = first_wav(t)
    return error_outcome(
        pyspk("verify", "--model", t / "exp/tiny/final.pt", "--min-speech", "-1", w, w), "--min-speech"
    )


@case("args", "pyspk verify on a file that does not exist")
def c_verify_missing(s: Sweep):
    t = s.fresh()
    return error_outcome(pyspk("verify", "--model", t / "exp/tiny/final.pt", t / "nope.wav", first_wav(t)), "nope.wav")


# ---- cases: environment ----
def _is_root() -> bool:
    return os.geteuid() == 0


@case("env", "a read-only tree whose stages are all up to date")
def c_readonly_ok(s: Sweep):
    if not _is_root():
        return "skipped", "needs root for a read-only bind mount"
    t = s.fresh()
    subprocess.run(["mount", "--bind", str(t), str(t)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(t)], check=True)
        p = s.rec()
    finally:
        subprocess.run(["umount", str(t)], check=False)
    if p.returncode == 0 and "up to date" in p.stderr:
        return "works", "every stage up to date, exit 0"
    return error_outcome(p, "read-only")


@case("env", "a read-only exp with a stage to redo")
def c_readonly_redo(s: Sweep):
    if not _is_root():
        return "skipped", "needs root for a read-only bind mount"
    t = s.fresh()
    tr = t / "data/synth_test/trials_en"
    lines = tr.read_text().splitlines()
    tr.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    subprocess.run(["mount", "--bind", str(t / "exp"), str(t / "exp")], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(t / "exp")], check=True)
        p = s.rec("--stage", "6")
    finally:
        subprocess.run(["umount", str(t / "exp")], check=False)
    return error_outcome(p, "read-only")


@case("env", "disk full while training")
def c_disk_full(s: Sweep):
    if not _is_root():
        return "skipped", "needs root for a small tmpfs"
    t = s.fresh()
    small = s.work / "full"
    small.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(small)], check=True)
    try:
        p = run(
            [
                "./run.sh",
                "--synth-size",
                "tiny",
                "--config",
                str(t / "tiny.yaml"),
                "--data",
                str(t / "data"),
                "--exp",
                str(small / "exp"),
                "--fbank-dir",
                str(t / "fbank"),
                "--stage",
                "3",
                "--stop-stage",
                "3",
            ]
        )
        log = "".join(f.read_text(errors="replace") for f in (small / "exp").rglob("*.log"))
    finally:
        subprocess.run(["umount", str(small)], check=False)
    q = type(p)(p.args, p.returncode, p.stdout, p.stderr + log)
    kind, msg = error_outcome(q, "space")
    return kind, msg


def cpu_class() -> str:
    """The CPU's model name and its widest vector extensions, from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    ext = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({os.cpu_count()} cores; {', '.join(ext) or 'no AVX2'})"


def write_markdown(path: Path, rows, counts, argv) -> None:
    """The sweep's table as a results page, headed by where and how it was made."""
    commit = (
        subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        or "?"
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# Hostile-input sweep",
        "",
        f"Written by `python bench/trust_sweep.py {' '.join(argv or sys.argv[1:])}` at commit {commit}"
        f"{' (with uncommitted changes)' if dirty else ''}, {time.strftime('%Y-%m-%d')}, on {cpu_class()}.",
        "Do not edit by hand: rerun the command.",
        "",
        "| # | area | case | outcome | detail |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['n']} | {r['area']} | {r['case']} | {r['outcome']} | {r['detail']} |" for r in rows]
    lines += ["", "Outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/pyspk_trust_sweep", help="work dir (the pristine tree is reused)")
    ap.add_argument("--only", default="", help="comma-separated case numbers")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--markdown", help="also write the table here, headed by commit, date, CPU and command")
    a = ap.parse_args(argv)
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    s = Sweep(work)
    s.build()
    only = {int(x) for x in a.only.split(",") if x}
    rows = []
    print("| # | area | case | outcome | detail |\n|---|---|---|---|---|", flush=True)
    for i, (area, title, fn) in enumerate(CASES, 1):
        if only and i not in only:
            continue
        t0 = time.time()
        try:
            kind, detail = fn(s)
        except Exception as e:  # the sweep itself failed on this case: a row, not an abort
            kind, detail = "sweep error", f"{type(e).__name__}: {e} " + traceback.format_exc(limit=2).replace("\n", " ")
        detail = " ".join(str(detail).split())[:160].replace("|", "\\|")
        rows.append(
            {
                "n": i,
                "area": area,
                "case": title,
                "outcome": kind,
                "detail": detail,
                "seconds": round(time.time() - t0, 1),
            }
        )
        print(f"| {i} | {area} | {title} | {kind} | {detail} |", flush=True)
    counts = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print("\n" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    if a.markdown:
        write_markdown(Path(a.markdown), rows, counts, argv)
    bad = [r for r in rows if r["outcome"] not in GOOD + ("skipped",)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
