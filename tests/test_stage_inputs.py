"""Reuse never serves stale results: every stage's stamp covers every file it reads.

One tiny SynthCeleb recipe is run stage by stage (module fixture, ~1 min), each stage
under a test-only audit hook (tests/trace/sitecustomize.py) that records the files its
Python processes open and list. Then:

- completeness: every file a stage read that existed before it began is declared in its
  stamp (as a file, a directory holding it, or a pattern matching it) or was made by a
  stage whose stamp it declares (transitively); every directory it listed is declared;
- the generic edit test: for every stage stamp and each of its declared inputs, edit
  the input, ask `./run.sh --dry-run true` what a rerun would redo, and assert it is
  exactly the stages reading that input and every stage downstream of them in the
  stage graph of the README (GRAPH below, written independently of run.sh), and no
  stage upstream; then undo the edit (content fingerprints: the stage is up to date again);
- real reruns of the measured failures of issue 12 (a trials list cut and a new one
  added; a speaker merged in utt2spk), checking the results themselves and that the dry
  run predicted exactly the stages that were redone;
- the recipe owns its jobs: SIGTERM to run.sh alone (as `timeout` sends) during training
  stops the training process, and a second run in the same exp dir fails naming the
  holder's pid and command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pyspk.data.kaldi_dir import read_table, read_trials, write_table
from pyspk.stamp import read_stamp

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "tests" / "trace"
pytestmark = pytest.mark.slow

# The stage graph of README's stage table for --corpus synth and one system, written
# here independently of run.sh: stamp -> the stamps of the stages whose outputs it reads.
GRAPH = {
    "data/.done.stage0_synth": [],
    "data/synth_train/.done.fbank": ["data/.done.stage0_synth"],
    "data/synth_test/.done.fbank": ["data/.done.stage0_synth"],
    "data/synth_train_combined/.done.augment": ["data/synth_train/.done.fbank"],
    "exp/proposed/.done.train": ["data/synth_train_combined/.done.augment"],
    "exp/proposed/xvectors_synth_train/.done.extract": ["exp/proposed/.done.train", "data/synth_train/.done.fbank"],
    "exp/proposed/xvectors_synth_test/.done.extract": ["exp/proposed/.done.train", "data/synth_test/.done.fbank"],
    "exp/proposed/backend/.done.backend": ["exp/proposed/xvectors_synth_train/.done.extract"],
    "exp/proposed/scores/.done.score": ["exp/proposed/backend/.done.backend",
                                        "exp/proposed/xvectors_synth_test/.done.extract"],
    "exp/.done.report": ["exp/proposed/scores/.done.score"],
}


def downstream(stamps) -> set:
    out, todo = set(), list(stamps)
    while todo:
        s = todo.pop()
        if s in out:
            continue
        out.add(s)
        todo += [k for k, ups in GRAPH.items() if s in ups]
    return out


def tiny_config(path: Path) -> Path:
    """conf/synth/proposed.yaml shrunk to seconds (as tests/test_recipe_e2e.py)."""
    cfg = yaml.safe_load((REPO / "conf/synth/proposed.yaml").read_text())
    cfg["encoder"] = {"name": "tdnn", "kwargs": {"channels": 32, "stats_channels": 64, "embed_dim": 32}}
    cfg["features"]["crop_frames"] = 100
    cfg["sampler"].update(speakers_per_batch=4, utts_per_speaker=2)
    cfg["optim"]["warmup_steps"] = 1
    cfg["train"].update(epochs=2, steps_per_epoch=3, average_last=1, log_interval=1)
    path.write_text(yaml.safe_dump(cfg))
    return path


class Tree:
    def __init__(self, root: Path):
        self.root = root
        self.config = tiny_config(root / "proposed.yaml")

    def args(self, *extra):
        return ["./run.sh", "--synth-size", "tiny", "--config", str(self.config), "--nj", "2",
                "--data", str(self.root / "data"), "--exp", str(self.root / "exp"),
                "--fbank-dir", str(self.root / "fbank"), *map(str, extra)]

    def run(self, *extra, env=None, timeout=900) -> subprocess.CompletedProcess:
        env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        return subprocess.run(self.args(*extra), cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def rel(self, p) -> str:
        return os.path.relpath(os.path.abspath(p), self.root)

    def files(self) -> set:
        out = set()
        for top in ("data", "exp", "fbank"):
            for root, dirs, names in os.walk(self.root / top):
                out.add(os.path.abspath(root))
                out.update(os.path.abspath(os.path.join(root, n)) for n in names)
        return out

    def stamps(self) -> dict:
        """relpath -> recorded fingerprint, of every stage stamp (job stamps have none)."""
        out = {}
        for f in self.files():
            if os.path.basename(f).startswith(".done.") and os.path.isfile(f):
                rec = read_stamp(Path(f))
                if rec is not None:
                    out[self.rel(f)] = rec
        return out

    def would_redo(self) -> set:
        r = self.run("--dry-run", "true")
        assert r.returncode == 0, r.stderr[-3000:]
        return {self.rel(m) for m in re.findall(r"would redo (\S+) \(", r.stderr)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    t = Tree(tmp_path_factory.mktemp("stage_inputs"))
    t.trace, t.created = {}, {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TRACE), os.environ.get("PYTHONPATH", "")]))
    for k in range(8):
        before = t.files()
        env["PYSPK_TRACE_FILE"] = str(t.root / f"trace.{k}")
        r = t.run("--stage", k, "--stop-stage", k, env=env)
        assert r.returncode == 0, f"stage {k} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        t.trace[k] = [ln.split(" ", 1) for ln in (t.root / f"trace.{k}").read_text().splitlines()]
        t.created[k] = (t.files() - before, before)
    return t


def covered(path: str, inputs) -> bool:
    for i in inputs:
        i = os.path.join(REPO, i)     # run.sh names conf/ files relative to the repo
        if path == i or path.startswith(i.rstrip("/") + "/"):
            return True
        if any(c in i for c in "*?[") and Path(path).match(i):
            return True
    return False


def test_stamps_are_the_stages_of_the_graph(tree):
    stamps = tree.stamps()
    assert set(stamps) == set(GRAPH)
    # Each stamp declares the stamps of the stages it reads from (directly or in a dir).
    for s, rec in stamps.items():
        for up in GRAPH[s]:
            assert covered(str(tree.root / up), rec["inputs"]), f"{s} does not declare its upstream {up}"


def test_every_file_a_stage_reads_is_an_input_of_its_stamp(tree):
    stamps = tree.stamps()
    stage_of = {}
    for k, (created, _) in tree.created.items():
        for f in created:
            if tree.rel(f) in stamps:
                stage_of[tree.rel(f)] = k
    conf = str(REPO / "conf")
    for k, events in tree.trace.items():
        created, before = tree.created[k]
        mine = [s for s, j in stage_of.items() if j == k]
        assert mine, f"stage {k} wrote no stamp"
        declared = [i for s in mine for i in stamps[s]["inputs"]]
        ups = set().union(*(upstream_of(tree, stamps, s) for s in mine)) - set(mine)
        made_upstream = set().union(*[tree.created[stage_of[u]][0] for u in ups]) if ups else set()
        missing = set()
        for kind, path in events:
            inside = path.startswith(str(tree.root) + "/") or path.startswith(conf + "/")
            if not inside or path.startswith(str(tree.root / "trace.")):
                continue
            if path in created or (path not in before and not path.startswith(conf)):
                continue          # made by this stage itself
            if covered(path, declared) or path in made_upstream:
                continue
            if kind == "L" and any(covered(f, declared) for f in before if os.path.dirname(f) == path):
                continue          # the dir of a declared pattern or files
            missing.add(f"{kind} {path}")
        assert not missing, f"stage {k} ({', '.join(mine)}) reads undeclared inputs: {sorted(missing)}"


def upstream_of(tree, stamps: dict, s: str) -> set:
    """The stamps ``s`` depends on, transitively, through what it declares (``s`` included)."""
    out, todo = set(), [s]
    while todo:
        x = todo.pop()
        if x in out:
            continue
        out.add(x)
        todo += [u for u in stamps if u != x and covered(str(tree.root / u), stamps[x]["inputs"])]
    return out


def test_editing_any_input_redoes_exactly_its_stage_and_those_after_it(tree):
    stamps = tree.stamps()
    assert tree.would_redo() == set(), "a finished recipe must be up to date"
    cases = 0
    for s in sorted(stamps, key=lambda x: list(GRAPH).index(x)):
        for inp, fp in stamps[s]["inputs"].items():
            target, undo = _edit(REPO / inp, fp)
            try:
                readers = {x for x, rec in stamps.items() if covered(str(target), rec["inputs"])}
                assert s in readers
                expect = downstream(readers)
                got = tree.would_redo()
                assert got == expect, (f"edit of {target} (input {inp} of {s}): would redo {sorted(got)}, "
                                       f"expected {sorted(expect)}")
            finally:
                undo()
            cases += 1
    assert cases >= 30
    assert tree.would_redo() == set(), "undoing every edit makes the recipe up to date again"


def _edit(inp: Path, fp: dict):
    """Edit one declared input; return (the file edited, a function undoing it)."""
    if "missing" in fp:
        inp.write_text("x\n")
        return inp, inp.unlink
    if "files" in fp and any(c in str(inp) for c in "*?["):
        new = Path(str(inp).replace("*", "_new"))
        new.write_text(Path(sorted(fp["files"])[0]).read_text())
        return new, new.unlink
    target = inp
    if inp.is_dir():
        names = sorted(n for n in fp["files"] if not Path(n).name.startswith(".done."))
        target = inp / names[0]
    old = target.read_bytes()
    target.write_bytes(old + b"\n")

    def undo():
        target.write_bytes(old)
    return target, undo


def _stamp_heads(tree) -> dict:
    return {s: (tree.root / s).read_text().splitlines()[0] for s in tree.stamps()}


def _rerun_and_compare(tree) -> set:
    """Dry run, then the real rerun; the stamps rewritten must be those predicted."""
    predicted = tree.would_redo()
    before = _stamp_heads(tree)
    r = tree.run()
    assert r.returncode == 0, r.stderr[-4000:]
    after = _stamp_heads(tree)
    redone = {s for s in after if before.get(s) != after[s]}
    assert redone == predicted, f"redone {sorted(redone)}, dry run said {sorted(predicted)}"
    return redone


def test_cut_trials_list_and_new_list_are_rescored(tree):
    """Issue 12, failure 1a: trials_en cut to fewer lines and a trials_new added."""
    test = tree.root / "data/synth_test"
    lines = (test / "trials_en").read_text().splitlines(keepends=True)
    (test / "trials_en").write_text("".join(lines[:-4]))
    shutil.copy(test / "trials_cmn", test / "trials_new")
    redone = _rerun_and_compare(tree)
    assert redone == {"exp/proposed/scores/.done.score", "exp/.done.report"}
    scores = tree.root / "exp/proposed/scores"
    assert len((scores / "trials_en.cosine").read_text().splitlines()) == len(lines) - 4
    assert len((scores / "trials_new.plda").read_text().splitlines()) == len(read_trials(test / "trials_new"))
    assert "trials_new" in (tree.root / "exp/results.md").read_text()


def test_speaker_merged_in_utt2spk_reaches_the_combined_set(tree):
    """Issue 12, failure 1b: tr0002 merged into tr0001 in data/synth_train/utt2spk."""
    train = tree.root / "data/synth_train"
    u2s = {u: ("tr0001" if s == "tr0002" else s) for u, s in read_table(train / "utt2spk").items()}
    write_table(train / "utt2spk", u2s)
    r = subprocess.run([str(REPO / "utils/utt2spk_to_spk2utt"), str(train / "utt2spk")], capture_output=True,
                       text=True, check=True)
    (train / "spk2utt").write_text(r.stdout)
    redone = _rerun_and_compare(tree)
    assert "data/synth_train/.done.fbank" in redone and "data/synth_test/.done.fbank" not in redone
    combined = read_table(tree.root / "data/synth_train_combined/utt2spk")
    assert "tr0002" not in set(combined.values()) and "tr0001" in set(combined.values())


def _descendant_running(pattern: str) -> list:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if pattern in cmd and state != "Z":
                out.append((int(d.name), cmd))
    return out


def test_sigterm_to_run_sh_stops_training_and_a_second_run_is_refused(tree):
    """Issue 12, failure 3: `timeout`-style SIGTERM to run.sh alone, during training."""
    cfg = yaml.safe_load(tree.config.read_text())
    cfg["train"].update(epochs=50, steps_per_epoch=50)
    tree.config.write_text(yaml.safe_dump(cfg))     # a config edit: stage 3 is redone
    exp = tree.root / "exp/proposed"
    log = exp / "log/train.log"
    log.unlink()
    p = subprocess.Popen(tree.args("--stage", 3), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end and not (log.exists() and "step" in log.read_text()):
            assert p.poll() is None, p.communicate()
            time.sleep(0.2)
        assert _descendant_running(f"--exp-dir {exp}"), "training did not start"
        second = tree.run("--stage", 3, "--stop-stage", 3)
        assert second.returncode != 0
        assert re.search(rf"{exp} is locked by another run, pid \d+ .*pyspk\.bin\.train", second.stderr), second.stderr
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
        assert p.returncode == 128 + signal.SIGTERM
        t_end = time.monotonic() + 20
        while _descendant_running(f"--exp-dir {exp}") and time.monotonic() < t_end:
            time.sleep(0.2)
        assert not _descendant_running(f"--exp-dir {exp}"), "training outlived run.sh"
        assert not (exp / ".done.train").exists()
        assert "# Ended (code 143)" in log.read_text()
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
