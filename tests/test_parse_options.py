"""utils/parse_options.sh, sourced by run.sh after its defaults (Kaldi's convention)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """#!/usr/bin/env bash
stage=0
stop_stage=7
force=false
config=
nj=2
help_message="usage: demo [--stage N] [--stop-stage N]"
. {repo}/utils/parse_options.sh
echo "stage=$stage stop_stage=$stop_stage force=$force config=$config nj=$nj"
echo "rest=$*"
"""


@pytest.fixture
def demo(tmp_path):
    script = tmp_path / "demo.sh"
    script.write_text(SCRIPT.format(repo=REPO))
    script.chmod(0o755)

    def run(*args):
        return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=30)

    return run


def values(r: subprocess.CompletedProcess) -> dict:
    first = r.stdout.splitlines()[0]
    return dict(kv.split("=", 1) for kv in first.split())


def test_defaults_untouched(demo):
    r = demo()
    assert r.returncode == 0
    assert values(r) == {"stage": "0", "stop_stage": "7", "force": "false", "config": "", "nj": "2"}


@pytest.mark.parametrize("spelling", ["--stop-stage", "--stop_stage"])
def test_dash_and_underscore_spellings(demo, spelling):
    r = demo("--stage", "2", spelling, "3")
    assert r.returncode == 0 and values(r)["stage"] == "2" and values(r)["stop_stage"] == "3"


def test_equals_form_and_values_with_spaces_or_equals(demo):
    r = demo("--config=conf/a=b.yaml", "--stop-stage=4", "--nj", "3 4")
    assert r.returncode == 0, r.stderr
    v = r.stdout.splitlines()[0]
    assert "config=conf/a=b.yaml" in v and "stop_stage=4" in v and "nj=3 4" in v


def test_positional_arguments_stay(demo):
    r = demo("--nj", "5", "data/train", "--not-an-option-after-positionals")
    assert r.returncode == 0
    assert r.stdout.splitlines()[1] == "rest=data/train --not-an-option-after-positionals"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stgae", "3"], "unknown option --stgae (did you mean --stage?)"),
        (["--stop-stgae", "3"], "unknown option --stop-stgae (did you mean --stop-stage?)"),
        (["--no-such=1"], "unknown option --no-such"),
        (["--nj"], "option --nj needs a value"),
        (["--bad.name", "1"], "unknown option --bad.name"),
    ],
)
def test_errors(demo, args, message):
    r = demo(*args)
    assert r.returncode == 1 and message in r.stderr and r.stdout == ""


@pytest.mark.parametrize("value, ok", [("true", True), ("false", True), ("yes", False), ("1", False)])
def test_boolean_options_take_true_or_false(demo, value, ok):
    r = demo("--force", value)
    assert (r.returncode == 0) == ok
    if ok:
        assert values(r)["force"] == value
    else:
        assert f"option --force takes true or false, got '{value}'" in r.stderr


def test_help(demo):
    r = demo("--help")
    assert r.returncode == 0 and "usage: demo [--stage N]" in r.stderr and r.stdout == ""
