"""Issue 28, finding 2: no path or argument is ever run or split by a shell.

The queue scripts (utils/run.pl, queue.pl, slurm.pl) keep every word of COMMAND one
word for the bash that runs a job; the tools call them with an argument vector
(pyspk/queue.py); run.sh refuses paths and system names that its own unquoted
expansions would split or expand, before it creates anything. A canary file that a
`$(touch ...)`, a backtick or a `;touch` would create must never appear, and every
output must land inside the directories asked for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import noise_data_dir, tool_env

from pyspk.queue import JOB, queue_argv, run_queue

REPO = Path(__file__).resolve().parents[1]
UTILS = REPO / "utils"


def _env(**extra) -> dict:
    return tool_env(**extra)


def body(log: Path) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if not ln.startswith("#")]


def evil_words(canary: Path) -> list[str]:
    """Arguments that a shell would run, split or expand if it saw them unquoted."""
    c = str(canary)
    return [
        f"x$(touch {c})",
        f"$(touch${{IFS}}{c})",
        f"`touch {c}`",
        f"a;touch {c}",
        f"b&&touch {c}",
        f"c|touch {c}",
        "it's",
        'say "hi"',
        "sp  ace",
        "*",
        "~",
        "#not a comment",
        "$HOME",
        "a\\b",
        "(x)",
        "{a,b}",
        "",
        "-",
        "new\nline",
    ]


# ------------------------------------------------------------------ the queue scripts
SBATCH = r'''#!/usr/bin/env python3
"""sbatch stand-in: run each task of --array=a-b of the job script here; print a job id."""
import os, subprocess, sys
args = sys.argv[1:]
opt = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
first, last = map(int, opt["array"].split("%")[0].split("-"))
for task in range(first, last + 1):
    with open(opt["output"].replace("%a", str(task)), "w") as o:
        subprocess.run(["bash", args[-1]], env=dict(os.environ, SLURM_ARRAY_TASK_ID=str(task)), stdout=o, stderr=o)
print("4243")
'''
QSUB = r'''#!/usr/bin/env python3
"""qsub stand-in: run each task of -t a:b of the job script here; print a -terse job id."""
import os, subprocess, sys
args = sys.argv[1:]
first, last = map(int, args[args.index("-t") + 1].split(":"))
out = args[args.index("-o") + 1]
for task in range(first, last + 1):
    with open(out.replace("$TASK_ID", str(task)), "w") as o:
        subprocess.run(["bash", args[-1]], env=dict(os.environ, SGE_TASK_ID=str(task)), stdout=o, stderr=o)
print(f"4242.{first}-{last}:1")
'''
STANDINS = {
    "sbatch": SBATCH,
    "qsub": QSUB,
    "squeue": "#!/bin/sh\nexit 0\n",  # the job is gone
    "qstat": "#!/bin/sh\necho 'Following jobs do not exist:' >&2\nexit 1\n",
}


@pytest.fixture
def queue_env(tmp_path):
    """PATH with stand-ins for sbatch/squeue and qsub/qstat (see tests/test_queue_scripts.py)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name, text in STANDINS.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    env = _env()
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    return env


@pytest.mark.parametrize("script", ["run.pl", "queue.pl", "slurm.pl"])
def test_queue_scripts_keep_every_word_one_word(tmp_path, queue_env, script):
    canary = tmp_path / "CANARY"
    words = evil_words(canary)
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run(
        [str(UTILS / script), "JOB=1:2", str(tmp_path / "log/w.JOB.log"), "printf", "[%s]\\n", "JOB", *words],
        cwd=work,
        env=queue_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    for i in (1, 2):
        assert "\n".join(body(tmp_path / f"log/w.{i}.log")) == "\n".join(f"[{w}]" for w in [str(i), *words])
    assert not canary.exists()
    assert sorted(p.name for p in work.iterdir()) == []


def test_pipes_and_redirections_given_as_separate_words_stay_operators(tmp_path):
    """Kaldi's convention: `\\|`, `\\>` ... as words of their own; the file a redirection
    names is one word, whatever it holds."""
    canary = tmp_path / "CANARY"
    target = tmp_path / "o$(touch CANARY) x;y"
    r = subprocess.run(
        [
            str(UTILS / "run.pl"),
            tmp_path / "p.log",
            "echo",
            "a b",
            "|",
            "tr",
            "a",
            "A",
            ">",
            str(target),
            "2>&1",
            "&&",
            "echo",
            "done",
        ],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert target.read_text() == "A b\n" and body(tmp_path / "p.log") == ["done"]
    # glued redirections are ordinary words; a single word is still a command line
    r = subprocess.run(
        [str(UTILS / "run.pl"), tmp_path / "g.log", "echo", ">glued"],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and body(tmp_path / "g.log") == [">glued"] and not (tmp_path / "glued").exists()
    r = subprocess.run(
        [str(UTILS / "run.pl"), tmp_path / "l.log", "echo x | tr x y"], env=_env(), capture_output=True, text=True
    )
    assert r.returncode == 0 and body(tmp_path / "l.log") == ["y"]
    assert not canary.exists()


def test_queue_argv_picks_a_job_name_no_path_holds(tmp_path, monkeypatch):
    """A path holding JOB must not be rewritten by the job substitution."""
    monkeypatch.chdir(tmp_path)  # utils/run.pl is found from the checkout, not from here
    argv = queue_argv("", 1, 2, "/a/JOBS/log/x.JOB.log", ["py", "--job", JOB, "/d/JOB1x"])
    assert argv[1:] == ["JOB2=1:2", "/a/JOBS/log/x.JOB2.log", "py", "--job", "JOB2", "/d/JOB1x"]
    assert argv[0] == str(REPO / "utils/run.pl")
    assert queue_argv("utils/run.pl --mem 4G", 3, 3, "/l/x.JOB.log", [JOB])[:4] == [
        str(REPO / "utils/run.pl"),
        "--mem",
        "4G",
        "JOB=3:3",
    ]
    # for real: the logs and the argument land where they were asked to, nothing runs
    canary = tmp_path / "CANARY"
    logdir = tmp_path / "JOB dir$(touch CANARY)" / "log"
    weird = f"{tmp_path}/JOB`touch {canary}`"
    rc, err = run_queue(queue_argv("", 1, 2, logdir / "e.JOB.log", ["printf", "%s\\n", JOB, weird]))
    assert rc == 0, err
    for i in (1, 2):
        assert body(logdir / f"e.{i}.log") == [str(i), weird]
    assert sorted(p.name for p in tmp_path.iterdir()) == [logdir.parent.name]


# ------------------------------------------------------------------ pyspk fbank
@pytest.mark.parametrize(
    "name", ["d$(touch${IFS}CANARY)", "d `touch CANARY` sp ace;touch CANARY", "d'q\"uote&&touch CANARY JOB"]
)
@pytest.mark.slow
def test_pyspk_fbank_on_a_dir_named_with_shell_characters(tmp_path, name):
    """The tool works with the plain path: features written, nothing run, no stray dirs.
    (The feature dir gets no whitespace: a Kaldi scp cannot hold such a path; see below.)"""
    root = tmp_path / "root"
    data, fbank = root / name, root / f"f{name.replace(' ', '')}"
    noise_data_dir(data, tmp_path / "audio")
    r = subprocess.run(
        ["pyspk", "fbank", "--nj", "2", str(data), str(fbank)],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    feats = (data / "feats.scp").read_text().splitlines()
    assert len(feats) == 2 and all(ln.split(None, 1)[1].startswith(str(fbank) + "/") for ln in feats)
    assert (fbank / "log" / "fbank.1.log").is_file() and (fbank / "log" / "fbank.2.log").is_file()
    assert not (root / "CANARY").exists() and not (tmp_path / "CANARY").exists()
    assert sorted(p.name for p in root.iterdir()) == sorted([data.name, fbank.name])


# ------------------------------------------------------------------ run.sh
def run_sh(tmp_path, *args, timeout=120):
    return subprocess.run(
        [
            "./run.sh",
            "--data",
            str(tmp_path / "data"),
            "--exp",
            str(tmp_path / "exp"),
            "--fbank-dir",
            str(tmp_path / "fbank"),
            *map(str, args),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_sh_refuses_a_config_name_that_would_run(tmp_path):
    """The repro of the issue: a config named x$(touch${IFS}PWN).yaml, refused before any stage."""
    canary = REPO / "PWN_trust_shell_test"
    config = tmp_path / "x$(touch${IFS}PWN_trust_shell_test).yaml"
    shutil.copy(REPO / "conf/synth/aam.yaml", config)
    try:
        r = run_sh(tmp_path, "--config", config, "--stage", "3", "--synth-size", "tiny")
        assert r.returncode == 1
        assert r.stderr.count("\n") == 1 and "--config" in r.stderr and "nothing was done" in r.stderr, r.stderr
        assert not canary.exists() and sorted(p.name for p in tmp_path.iterdir()) == [config.name]
    finally:
        canary.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--data", "{tmp}/sp ace/data", "--data"),
        ("--exp", "{tmp}/e`touch {tmp}/X`", "--exp"),
        ("--fbank-dir", "{tmp}/f;touch {tmp}/X", "--fbank-dir"),
        ("--data", "{tmp}/q'uote", "--data"),
        ("--data", "{tmp}/glob*", "--data"),
        ("--fbank-dir", "{tmp}/a,b", "--fbank-dir"),
        ("--data", "-x", "starts with '-'"),
        ("--systems", "aam x;touch{tmp}/X", "system name"),
        ("--systems", "aam ..", "system name '..'"),
        ("--systems", "aam a/b", "system name 'a/b'"),
        ("--nj", "2 3", "--nj takes a positive whole number"),
        ("--seed", "1$(touch {tmp}/X)", "--seed takes a whole number"),
    ],
)
def test_run_sh_refuses_unsafe_paths_and_names_creating_nothing(tmp_path, option, value, says):
    value = value.format(tmp=tmp_path)
    args = ["--synth-size", "tiny", "--stage", "0", "--stop-stage", "1", option, value]
    r = subprocess.run(
        ["./run.sh", *args]
        + ([] if option == "--data" else ["--data", str(tmp_path / "data")])
        + ([] if option == "--exp" else ["--exp", str(tmp_path / "exp")])
        + ([] if option == "--fbank-dir" else ["--fbank-dir", str(tmp_path / "fbank")]),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and says in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "stage 0:" not in r.stdout
    assert list(tmp_path.iterdir()) == [], "run.sh created something before refusing"


@pytest.mark.slow
def test_tiny_recipe_in_a_dir_with_unusual_but_allowed_characters(tmp_path):
    """Stages 0-1 on the tiny corpus under a root holding JOB (the job name), non-ASCII
    letters and @ % + = :, every output lands inside that root, nothing beside it."""
    root = tmp_path / "rJOBé@%+=:x"
    r = run_sh(
        root,
        "--synth-size",
        "tiny",
        "--config",
        "conf/synth/aam.yaml",
        "--stage",
        "0",
        "--stop-stage",
        "1",
        "--nj",
        "2",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for s in ("synth_train", "synth_test"):
        feats = (root / "data" / s / "feats.scp").read_text().splitlines()
        assert feats and all(ln.split(None, 1)[1].startswith(f"{root}/fbank/{s}/") for ln in feats)
        assert (root / "fbank" / s / "log" / "fbank.2.log").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [root.name]
    assert sorted(p.name for p in root.iterdir()) == ["data", "fbank"]


def test_pyspk_fbank_refuses_a_feature_dir_with_whitespace_running_nothing(tmp_path):
    root = tmp_path / "root"
    data, fbank = root / "data", root / "f `touch CANARY` x;touch CANARY"
    noise_data_dir(data, tmp_path / "audio", n=1)
    r = subprocess.run(
        ["pyspk", "fbank", str(data), str(fbank)], cwd=root, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 1 and "contains whitespace" in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert not (data / "feats.scp").exists() and not (root / "CANARY").exists()
    assert sorted(p.name for p in root.iterdir()) == [data.name], "refused before any job or dir was made"
