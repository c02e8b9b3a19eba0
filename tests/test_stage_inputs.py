"""Reuse never serves stale results: every stage's stamp covers every file it reads.

The tiny SynthCeleb recipe of tests/conftest.py (one bare ./run.sh, shared with
tests/test_recipe_e2e.py) ran under a test-only audit hook (tests/trace/sitecustomize.py)
that records, per stage (PYSPK_STAMP, set by stamped.sh), the files its Python processes
open, write and list. Then:

- completeness: every file a stage read is declared in its stamp (as a file, a directory
  holding it, or a pattern matching it), or was written by the stage itself (or, for files
  under exp/ and fbank/, by a stage upstream whose stamp covers it); listed dirs likewise;
- the generic edit test: for every stage stamp and each of its declared inputs, edit
  the input, ask `./run.sh --dry-run true` what a rerun would redo, and assert it is
  exactly the stages reading that input, the stage that recorded it as its output
  (a damaged output is redone), and every stage downstream of them in the stage graph
  of docs/recipe.md, 'Stages' (GRAPH below, written independently of run.sh), and no other stage
  upstream; then undo the edit (content fingerprints: the stage is up to date again);
- real reruns of the measured failures of issue 12 (a trials list cut and a new one
  added; a speaker merged in utt2spk), checking the results themselves and that the dry
  run predicted exactly the stages that were redone;
- the recipe owns its jobs: SIGTERM to run.sh alone (as `timeout` sends) during training
  stops the training process, and a second run in the same exp dir fails naming the
  holder's pid and command.
"""

from __future__ import annotations

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
pytestmark = pytest.mark.slow

# The stage graph of docs/recipe.md's stage table for --corpus synth and one system, written
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
    "exp/proposed/scores/.done.score": [
        "exp/proposed/backend/.done.backend",
        "exp/proposed/xvectors_synth_test/.done.extract",
    ],
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


def stamps_of(tree) -> dict:
    """relpath -> recorded fingerprint, of every stage stamp (job stamps record none)."""
    out = {}
    for top in ("data", "exp"):
        for f in (tree.root / top).rglob(".done.*"):
            rec = read_stamp(f)
            if rec is not None:
                out[tree.rel(f)] = rec
    return out


@pytest.fixture(scope="module")
def tree(tiny_recipe):
    return tiny_recipe


def covered(path: str, inputs) -> bool:
    for i in inputs:
        i = os.path.join(REPO, i)  # run.sh names conf/ files relative to the repo
        if path == i or path.startswith(i.rstrip("/") + "/"):
            return True
        if any(c in i for c in "*?[") and Path(path).match(i):
            return True
    return False


def test_stamps_are_the_stages_of_the_graph(tree):
    stamps = stamps_of(tree)
    assert set(stamps) == set(GRAPH)
    # Each stamp declares the stamps of the stages it reads from (directly or in a dir).
    for s, rec in stamps.items():
        for up in GRAPH[s]:
            assert covered(str(tree.root / up), rec["inputs"]), f"{s} does not declare its upstream {up}"


def test_every_file_a_stage_reads_is_an_input_of_its_stamp(tree):
    stamps = stamps_of(tree)
    reads, writes = {}, {}
    for stage, kind, path in tree.events:
        if stage == "-":
            continue  # stamped.sh itself, fingerprinting
        s = tree.rel(stage)
        (writes if kind == "W" else reads).setdefault(s, set()).add((kind, path))
    assert set(reads) == set(GRAPH), "every stage ran under the trace"
    conf = str(REPO / "conf")
    for s in GRAPH:
        declared = list(stamps[s]["inputs"])
        # Covered by a stamp: what the stage itself wrote; under exp/, what the stages whose
        # stamps it declares wrote; under fbank/, what any stage upstream wrote (the arks a
        # declared feats.scp points to). Anything under data/ (the tables and lists a user
        # edits) and conf/ must be declared itself.
        direct = {u for u in stamps if covered(str(tree.root / u), declared)}
        exp_dir, fbank = str(tree.root / "exp") + "/", str(tree.root / "fbank") + "/"
        made = {p for _, p in writes.get(s, ())}
        made |= {p for u in direct for _, p in writes.get(u, ()) if p.startswith(exp_dir)}
        made |= {p for u in upstream_of(tree, stamps, s) for _, p in writes.get(u, ()) if p.startswith(fbank)}
        made_dirs = {str(Path(p).parent) for p in made}
        missing = set()
        for kind, path in reads[s]:
            if not (path.startswith(str(tree.root) + "/") or path.startswith(conf + "/")):
                continue
            if path == str(tree.root / "trace") or covered(path, declared) or path in made:
                continue
            if kind == "L" and (
                path in made_dirs or any(os.path.dirname(os.path.join(REPO, i)) == path for i in declared)
            ):
                continue  # a dir the stage or its upstream wrote in, or of a declared pattern/file
            missing.add(f"{kind} {path}")
        assert not missing, f"{s} reads undeclared inputs: {sorted(missing)}"


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
    stamps = stamps_of(tree)
    assert tree.would_redo() == set(), "a finished recipe must be up to date"
    cases = 0
    for s in sorted(stamps, key=lambda x: list(GRAPH).index(x)):
        for inp, fp in stamps[s]["inputs"].items():
            target, undo = _edit(REPO / inp, fp)
            try:
                readers = {x for x, rec in stamps.items() if covered(str(target), rec["inputs"])}
                assert s in readers
                # a file a stage recorded as its output is damaged by the edit: that stage redoes too
                makers = {
                    x
                    for x, rec in stamps.items()
                    if any(os.path.join(REPO, o) == str(target) for o in rec.get("outputs") or {})
                }
                expect = downstream(readers | makers)
                got = tree.would_redo()
                assert got == expect, (
                    f"edit of {target} (input {inp} of {s}): would redo {sorted(got)}, expected {sorted(expect)}"
                )
            finally:
                undo()
            cases += 1
    assert cases >= 30
    assert tree.would_redo() == set(), "undoing every edit makes the recipe up to date again"


@pytest.mark.parametrize(
    "flags, param, changed",
    [
        (
            ["--compress-feats", "true"],
            "compress_feats",
            {"data/synth_train/.done.fbank", "data/synth_test/.done.fbank", "data/synth_train_combined/.done.augment"},
        ),
        (["--augment-subset", "5"], "augment_subset", {"data/synth_train_combined/.done.augment"}),
    ],
)
def test_feature_storage_flags_are_params_of_the_stages_they_change(tree, flags, param, changed):
    """--compress-feats true (stages 1 and 2) and --augment-subset N (stage 2) are stamped: a dry
    run would redo those stages and everything downstream, nothing upstream. At their defaults no
    param is recorded, so a tree made before the flags stays up to date (the test above)."""
    r = tree.run("--dry-run", "true", *flags)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {tree.rel(m) for m in re.findall(r"would redo (\S+) \(", r.stderr)} == downstream(changed)
    assert f"param {param} was None" in r.stderr


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


def test_extract_runs_from_another_directory(tree, tmp_path):
    """Issue 12, failure 5: `pyspk extract --nj 1 final.pt data OUT` from outside the repo
    printed 'utils/run.pl: not found' and pointed at a log that did not exist."""
    out = tmp_path / "OUT"
    r = subprocess.run(
        [
            "pyspk",
            "extract",
            "--nj",
            "1",
            str(tree.root / "exp/proposed/final.pt"),
            str(tree.root / "data/synth_test"),
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(read_table(out / "xvector.scp")) == set(read_table(tree.root / "data/synth_test/utt2spk"))


def _stamp_heads(tree) -> dict:
    return {s: (tree.root / s).read_text().splitlines()[0] for s in stamps_of(tree)}


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


def test_report_alone_after_a_trials_edit_refuses_the_stale_scores(tree):
    """Issue 28, finding 7: `./run.sh --stage 7` after a trials edit said "up to date" and
    served the old EER; it must name stage 6's stamp as out of date instead."""
    trials = tree.root / "data/synth_test/trials_en"
    old = trials.read_bytes()
    trials.write_bytes(b"".join(old.splitlines(keepends=True)[:-1]))
    try:
        r = tree.run("--stage", 7)
        assert r.returncode != 0, r.stderr[-3000:]
        assert re.search(
            r"exp/proposed/scores/\.done\.score is out of date \(input \S+trials\*: \S+trials_en "
            r"changed\)",
            r.stderr,
        ), r.stderr[-3000:]
        assert "Traceback" not in r.stderr
    finally:
        trials.write_bytes(old)
    r = tree.run("--stage", 7)
    assert r.returncode == 0 and "is up to date" in r.stderr, r.stderr[-3000:]


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
    r = subprocess.run(
        [str(REPO / "utils/utt2spk_to_spk2utt"), str(train / "utt2spk")], capture_output=True, text=True, check=True
    )
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
    cfg["train"]["epochs"] = 2000  # a config edit: stage 3 is redone, and
    tree.config.write_text(yaml.safe_dump(cfg))  # more epochs may resume (pyspk/train/trainer.py)
    exp = tree.root / "exp/proposed"
    log = exp / "log/train.log"
    log.unlink()
    p = subprocess.Popen(
        tree.args("--stage", 3),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end and not (log.exists() and "resumed from" in log.read_text()):
            assert p.poll() is None, p.communicate()
            time.sleep(0.2)
        assert _descendant_running(f"--exp-dir {exp}"), "training did not start"
        second = tree.run("--stage", 3, "--stop-stage", 3)
        assert second.returncode != 0
        assert re.search(rf"{exp} is locked by another run, pid \d+ .*pyspk\.bin\.train", second.stderr), second.stderr
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
        t_end = time.monotonic() + 20
        while _descendant_running(f"--exp-dir {exp}") and time.monotonic() < t_end:
            time.sleep(0.2)
        assert not _descendant_running(f"--exp-dir {exp}"), "training outlived run.sh"
        assert not (exp / ".done.train").exists()
        assert "# Ended (code 143)" in log.read_text()
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
