"""pyspk/malloc.py: large blocks reused from the heap instead of faulted in again each time."""

import os
import subprocess
import sys

import pytest

from pyspk import malloc

_CHILD = """
import resource, sys, torch
from pyspk.malloc import keep_freed_memory
on = keep_freed_memory()
for i in range(40):                            # the heap settles within the first few
    if i == 30:
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 * 2**20).fill_(1.0)        # 64 MiB, above glibc's largest mmap threshold
print(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _child(**env):
    out = subprocess.run(
        [sys.executable, "-c", _CHILD],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd(), **env},
    )
    on, faults = out.stdout.split()
    return on == "True", int(faults)


@pytest.mark.slow
@pytest.mark.skipif(malloc.platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_reuses_large_blocks_instead_of_faulting_them_in_every_time():
    on_sys, faults_sys = _child(PYSPK_MALLOC="system", LD_PRELOAD="")
    on_keep, faults_keep = _child(PYSPK_MALLOC="keep", LD_PRELOAD="")
    assert (on_sys, on_keep) == (False, True)
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    # glibc's defaults: each of the last 10 blocks faulted in again (10 x pages, fewer with
    # transparent huge pages); kept: reused, (almost) nothing faulted in
    assert faults_keep < pages
    assert faults_keep * 5 < faults_sys


def test_preloaded_allocator_and_system_are_left_alone(monkeypatch):
    monkeypatch.setattr(malloc, "_done", None)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    monkeypatch.delenv("PYSPK_MALLOC", raising=False)
    assert malloc._preloaded_allocator() == "tcmalloc"
    assert malloc.keep_freed_memory() is False
    monkeypatch.setattr(malloc, "_done", None)
    monkeypatch.setenv("LD_PRELOAD", "")
    monkeypatch.setenv("PYSPK_MALLOC", "system")
    assert malloc.keep_freed_memory() is False


def _tiny_fbank_job(root):
    """A one-utterance data dir and its split, ready for fbank job 1."""
    import numpy as np
    import soundfile as sf

    from pyspk.stages.fbank import write_splits

    data, fb = root / "data", (root / "fbank").resolve()
    data.mkdir()
    sf.write(root / "a.wav", (0.1 * np.sin(np.arange(8000) / 5.0)).astype(np.float32), 16000)
    (data / "wav.scp").write_text(f"a {root / 'a.wav'}\n")
    (data / "utt2spk").write_text("a s\n")
    write_splits(data, fb, 1)
    return data, fb


def _run_feature_job(root):
    from pyspk.features.fbank import FbankConfig
    from pyspk.stages.fbank import run_job

    data, fb = _tiny_fbank_job(root)
    run_job(data, fb, 1, FbankConfig())
    assert (fb / "feats.1.scp").is_file()


def _run_training_setup(root):
    from toydata import make_toy_train_dir, toy_config

    from pyspk.train.config import config_from_dict
    from pyspk.train.trainer import Trainer

    toy = make_toy_train_dir(root / "train", num_speakers=4, utts_per_speaker=2, num_frames=60, feat_dim=8)
    Trainer(config_from_dict(toy_config("tdnn")), toy, root / "exp", seed=1)


@pytest.mark.parametrize("job", [_run_feature_job, _run_training_setup], ids=["feature_job", "training"])
@pytest.mark.parametrize("setting", ["system", "keep"])
def test_pyspk_malloc_system_turns_the_policy_off_in_feature_jobs_and_training(tmp_path, monkeypatch, job, setting):
    """One policy, honoured everywhere (docs/speed.md): the fbank job (so pyspk fbank and
    pyspk augment) and the trainer call pyspk.malloc, and PYSPK_MALLOC=system leaves glibc alone."""
    calls = []

    def mallopt(param, value):
        calls.append((param, value))
        return 1

    monkeypatch.setattr(malloc, "_mallopt", lambda: mallopt)  # glibc's, as recorded calls only
    monkeypatch.setattr(malloc, "_done", None)  # this process has not chosen yet
    monkeypatch.setenv("LD_PRELOAD", "")
    monkeypatch.setenv("PYSPK_MALLOC", setting)
    job(tmp_path)
    if setting == "system":
        assert calls == [] and malloc._done is False
    else:
        assert calls == [(malloc.M_MMAP_MAX, 0), (malloc.M_TRIM_THRESHOLD, malloc.TRIM_THRESHOLD)]
        assert malloc._done is True


def test_one_malloc_module():
    """The feature jobs' own allocator module of before is gone: one policy, one place."""
    import importlib.util

    assert importlib.util.find_spec("pyspk.features.malloc") is None
