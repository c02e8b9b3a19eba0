"""The corpus registry (pyspk/corpora.py, pyspk corpus) and the recipe asking it.

run.sh and local/prepare_corpus.sh take a corpus's sets, root flags and preparation from its
registry entry; a corpus registered from a file named by PYSPK_PLUGINS is prepared by the
recipe like a built-in one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tool_env

from pyspk.corpora import CORPORA, Corpus, CorpusError, Option, Root, check_corpus, get_corpus
from pyspk.data.kaldi_dir import read_trials, validate_data_dir
from pyspk.registry import RegistryError

REPO = Path(__file__).resolve().parents[1]
BUILTIN = ["cnceleb", "folder", "speechocean762", "synth", "voxceleb1", "voxceleb2"]

TOY_PLUGIN = '''
"""A corpus from outside the package: DIR/<speaker>/*.wav, the first two speakers for testing."""
from pathlib import Path

from pyspk.corpora import CORPORA, Corpus, Root
from pyspk.data.kaldi_dir import utt2spk_to_spk2utt, write_table, write_trials


@CORPORA.register("toy")
class Toy(Corpus):
    """Toy: a folder per speaker."""
    train_set, test_set = "toy_train", "toy_test"
    roots = (Root("toy-root", "a folder per speaker: DIR/<speaker>/*.wav"),)
    conf_dir = "conf/folder"          # its systems: the folder corpus's

    def prepare(self, ctx):
        speakers = sorted(p for p in Path(ctx.root()).iterdir() if p.is_dir())
        for out, spks in ((ctx.test_dir, speakers[:2]), (ctx.train_dir, speakers[2:])):
            wavs = {f"{s.name}-{w.stem}": w.resolve() for s in spks for w in sorted(s.glob("*.wav"))}
            utt2spk = {utt: utt.split("-")[0] for utt in wavs}
            out.mkdir(parents=True, exist_ok=True)
            write_table(out / "wav.scp", wavs)
            write_table(out / "utt2spk", utt2spk)
            write_table(out / "spk2utt", utt2spk_to_spk2utt(utt2spk))
        a, b = speakers[0].name, speakers[1].name
        write_trials(ctx.test_dir / "trials", [(f"{a}-u0", f"{a}-u1", True), (f"{a}-u0", f"{b}-u0", False)])
'''


def toy_audio(root: Path, n_spk: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for s in range(n_spk):
        for u in range(2):
            p = root / f"s{s}" / f"u{u}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    return root


def plugin_env(tmp_path, text: str = TOY_PLUGIN) -> dict:
    plugin = tmp_path / "toy_corpus.py"
    plugin.write_text(text)
    return tool_env(PYSPK_PLUGINS=str(plugin))


def run(argv, env=None, cwd=REPO):
    return subprocess.run(argv, cwd=cwd, env=env or tool_env(), capture_output=True, text=True, timeout=300)


def corpus_cli(*args, env=None):
    return run([sys.executable, "-m", "pyspk.bin.corpus", *args], env=env)


def test_builtin_corpora_are_registered_and_well_declared():
    assert all(name in CORPORA for name in BUILTIN)
    for name in BUILTIN:
        check_corpus(name, CORPORA.get(name).obj)
    so = get_corpus("speechocean762")
    assert (so.train_set, so.test_set, so.roots[0].flag) == ("so762_train", "so762_test", "speechocean762-root")
    assert get_corpus("voxceleb2").test_set == "voxceleb1_test"
    assert [r.flag for r in get_corpus("voxceleb2").roots] == ["voxceleb2-root", "voxceleb1-root"]


def test_unknown_corpus_names_the_nearest():
    with pytest.raises(RegistryError, match=r"unknown corpus 'cncelb' \(did you mean 'cnceleb'\?\)"):
        get_corpus("cncelb")
    r = corpus_cli("--prog", "x.sh", "info", "--corpus", "speechocean")
    assert r.returncode == 1 and r.stderr == "x.sh: unknown corpus 'speechocean' (did you mean 'speechocean762'?)\n"


def test_run_sh_unknown_corpus_is_one_line_creating_nothing(tmp_path):
    r = run(
        [
            "./run.sh",
            "--corpus",
            "foldr",
            "--data",
            str(tmp_path / "d"),
            "--exp",
            str(tmp_path / "e"),
            "--fbank-dir",
            str(tmp_path / "f"),
        ]
    )
    assert r.returncode == 1 and r.stderr == "./run.sh: unknown corpus 'foldr' (did you mean 'folder'?)\n", r.stderr
    assert list(tmp_path.iterdir()) == []


def test_info_shell_lines_are_safe_key_values():
    for name in BUILTIN:
        r = corpus_cli("info", "--corpus", name, "--format", "shell")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*=.*", ln) for ln in lines), lines
        d = dict(ln.split("=", 1) for ln in lines)
        # what run.sh expands unquoted: names, flags and paths only (hints are text, only printed)
        assert all(re.fullmatch(r"[A-Za-z0-9_./+ -]*", v) for k, v in d.items() if not k.startswith("hint_")), d
        corpus = get_corpus(name)
        assert (d["corpus"], d["train_set"], d["test_set"]) == (name, corpus.train_set, corpus.test_set)
        assert d["trials"].split() == list(corpus.trials) and d["conf_dir"] == f"conf/{name}"
        for flag in d["roots"].split():
            assert d[f"hint_{flag.replace('-', '_')}"]
    d = dict(
        ln.split("=", 1) for ln in corpus_cli("info", "--corpus", "synth", "--format", "shell").stdout.splitlines()
    )
    assert (d["roots"], d["inputs"], d["outputs"]) == ("", "conf/synth.yaml", "synth_audio")
    j = json.loads(corpus_cli("info", "--corpus", "speechocean762", "--format", "json").stdout)
    assert j["roots"][0]["downloads"] and j["roots"][0]["script"].startswith("local/download_speechocean762.sh")
    assert j["options"] == [{"flag": "so762-eval-speakers", "default": "40", "what": j["options"][0]["what"]}]


def test_flags_lists_every_root_once():
    r = corpus_cli("flags")
    assert r.returncode == 0, r.stderr
    flags = dict(ln.split("=", 1) for ln in r.stdout.splitlines())
    assert flags["voxceleb1_root"] == "" and flags["so762_eval_speakers"] == "40"
    assert r.stdout.count("voxceleb1_root=") == 1  # shared by voxceleb1 and voxceleb2
    roots = corpus_cli("flags", "--roots-only").stdout.split()
    assert sorted(roots) == sorted(
        f"{n}_root=" for n in ("speechocean762", "voxceleb1", "voxceleb2", "cnceleb", "folder")
    )


def test_run_sh_without_a_root_says_which_flag_and_how(tmp_path):
    """speechocean762 without --speechocean762-root stops with one line naming the flag and the
    download script (nothing is downloaded behind the user's back)."""
    r = run(
        [
            "./run.sh",
            "--corpus",
            "speechocean762",
            "--data",
            str(tmp_path / "d"),
            "--exp",
            str(tmp_path / "e"),
            "--fbank-dir",
            str(tmp_path / "f"),
        ]
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert (
        "--corpus speechocean762 needs --speechocean762-root DIR; local/download_speechocean762.sh --dir "
        "downloads fetches it into downloads/speechocean762"
    ) in r.stderr
    r = run(["./run.sh", "--corpus", "folder", "--folder-root", str(tmp_path / "none"), "--data", str(tmp_path / "d")])
    assert r.returncode == 1 and f"--folder-root '{tmp_path / 'none'}' is not a directory" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "attrs, says",
    [
        ({"train_set": "a b"}, "train_set 'a b'"),
        ({"train_set": "same", "test_set": "same"}, "both 'same'"),
        ({"trials": ("scores",)}, "must be a file name starting with 'trials'"),
        ({"roots": (Root("musan-root", "x"),)}, "--musan-root"),
        ({"roots": (Root("toy-dir", "x"),)}, "root flags end in -root"),
        ({"options": (Option("seed", "1"),)}, "--seed"),
        ({"options": (Option("toy-n", "1;rm"),)}, "would split"),
        ({"inputs": ("../etc/passwd",)}, "relative to the recipe directory"),
    ],
)
def test_bad_declarations_are_refused(attrs, says):
    cls = type("Bad", (Corpus,), {"train_set": "bad_train", "test_set": "bad_test", **attrs})
    with pytest.raises(CorpusError, match=re.escape(says)):
        check_corpus("bad", cls)


def test_plugin_corpus_is_listed_and_prepared_into_valid_data_dirs(tmp_path):
    env = plugin_env(tmp_path)
    r = corpus_cli("list", env=env)
    assert r.returncode == 0 and "toy\tToy: a folder per speaker." in r.stdout.splitlines(), r.stdout + r.stderr
    src = toy_audio(tmp_path / "src")
    data = tmp_path / "data"
    r = run(
        ["bash", "local/prepare_corpus.sh", "--corpus", "toy", "--data", str(data), "--toy-root", str(src)], env=env
    )
    assert r.returncode == 0, r.stderr
    assert f"prepared toy under {data}" in r.stdout
    assert validate_data_dir(data / "toy_train")["speakers"] == 2
    assert validate_data_dir(data / "toy_test") == {"utts": 4, "speakers": 2, "trials": 2}
    assert [t.target for t in read_trials(data / "toy_test" / "trials")] == [True, False]
    r = run(["utils/validate_data_dir", "--no-feats", str(data / "toy_test")], env=env)
    assert r.returncode == 0 and "is OK: 4 utterances, 2 speakers, 2 trials" in r.stdout, r.stderr
    # without the plugin the flag is unknown, as any misspelled flag
    r = run(["bash", "local/prepare_corpus.sh", "--corpus", "toy", "--data", str(data), "--toy-root", str(src)])
    assert r.returncode == 1 and "unknown option --toy-root" in r.stderr


def test_plugin_corpus_through_run_sh_stage_0(tmp_path):
    env = plugin_env(tmp_path)
    src = toy_audio(tmp_path / "src")
    args = [
        "./run.sh",
        "--corpus",
        "toy",
        "--data",
        str(tmp_path / "data"),
        "--exp",
        str(tmp_path / "exp"),
        "--fbank-dir",
        str(tmp_path / "fbank"),
        "--stop-stage",
        "0",
    ]
    r = run(args, env=env)
    assert r.returncode == 1 and r.stderr == (
        "./run.sh: --corpus toy needs --toy-root DIR; a folder per speaker: DIR/<speaker>/*.wav\n"
    ), r.stderr
    r = run(args + ["--toy-root", str(src)], env=env)
    assert r.returncode == 0, r.stderr
    assert f"stage 0: data preparation (toy) -> {tmp_path}/data/toy_train {tmp_path}/data/toy_test" in r.stdout
    assert (tmp_path / "data" / ".done.stage0_toy").is_file()
    assert validate_data_dir(tmp_path / "data" / "toy_test")["trials"] == 2
    r = run(args + ["--toy-root", str(src), "--dry-run", "true"], env=env)
    assert r.returncode == 0 and "stage0_toy is up to date" in r.stderr, r.stderr


def test_plugin_corpus_that_writes_a_bad_dir_is_named(tmp_path):
    env = plugin_env(
        tmp_path, TOY_PLUGIN.replace('write_trials(ctx.test_dir / "trials"', 'write_trials(ctx.test_dir / "trial"')
    )
    r = run(
        [
            "bash",
            "local/prepare_corpus.sh",
            "--corpus",
            "toy",
            "--data",
            str(tmp_path / "d"),
            "--toy-root",
            str(toy_audio(tmp_path / "src")),
        ],
        env=env,
    )
    assert r.returncode == 1
    assert f"corpus 'toy': {tmp_path / 'd' / 'toy_test'} has no trials (declared in its trials)" in r.stderr, r.stderr
    assert "prepared toy" not in r.stdout
