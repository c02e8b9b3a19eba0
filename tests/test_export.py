"""pyspk export: ONNX / TorchScript files that reproduce the PyTorch encoder, with the
metadata sherpa-onnx reads, and sherpa-onnx's own extractor agreeing with `pyspk embed`.

- onnxruntime and TorchScript against eager PyTorch for every encoder, several lengths and
  batch sizes, whole-utterance and sliding-window CMN (max abs diff <= 1e-4), and against
  pyspk's own numpy front end (Embedder.embed on raw features);
- the metadata keys of sherpa-onnx/csrc/speaker-embedding-extractor-model.cc, pyspk's own;
- bad input: unknown format, a feature-dimension mismatch, a missing checkpoint, an export
  that fails its self-check: clear errors and nothing written;
- sherpa-onnx's SpeakerEmbeddingExtractor on the tiny corpus's recordings vs pyspk's path,
  per file and by EER, for short-trained systems of all three encoders; and the README's
  SpeakerEmbeddingManager snippet, run as written.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, need

from pyspk.embed.extractor import Embedder
from pyspk.export.graph import ExportModule, sliding_mean
from pyspk.export.metadata import SHERPA_KEYS, config_hash
from pyspk.features.cmvn import sliding_mean as np_sliding_mean
from pyspk.features.fbank import FbankConfig
from pyspk.models import build_encoder, load_encoder, save_encoder

# Every layer type of each encoder, with fewer repeats (export time grows with the graph's size).
TINY = {
    "tdnn": {"channels": 16, "stats_channels": 32, "embed_dim": 12},
    "ecapa_tdnn": {
        "channels": 16,
        "embed_dim": 12,
        "attention_channels": 8,
        "se_channels": 8,
        "scale": 4,
        "dilations": [2, 3],
    },
    "resnet34": {"base_channels": 4, "embed_dim": 12, "num_blocks": [1, 2, 1, 1]},
}
LENGTHS = ((1, 23), (3, 150), (2, 613))  # (batch, frames): shorter, around and beyond the example


def random_checkpoint(path: Path, name: str, cmn_window=None, vad=False) -> Path:
    """A tiny encoder with random weights *and* random BatchNorm statistics (so BN is not identity)."""
    torch.manual_seed(1)
    model = build_encoder(name, **TINY[name])
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    config = {"encoder": {"name": name, "kwargs": TINY[name]}, "seed": 1}
    save_encoder(
        path,
        model,
        name,
        TINY[name],
        {"features": {"cmn": True, "cmn_window": cmn_window, "vad": vad}, "config": config},
    )
    return path


def feats(b, t, seed=0):
    rng = np.random.default_rng(seed + t)
    return (rng.normal(8, 2, size=(b, 1, 80)) + rng.normal(0, 2.5, size=(b, t, 80))).astype(np.float32)


def test_sliding_mean_in_graph_equals_numpy():
    x = feats(1, 40)[0]
    for window in (7, 8, 40, 41, 300):  # odd, even, = T, > T
        got = sliding_mean(torch.from_numpy(x)[None], window)[0].numpy()
        np.testing.assert_allclose(got, np_sliding_mean(x, window), rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name,cmn_window", [(n, None) for n in sorted(TINY)] + [("tdnn", 30)])
def test_export_matches_pytorch_and_pyspk_front_end(tmp_path, name, cmn_window):
    need("onnxruntime"), need("onnx"), need("onnxscript")
    from pyspk.export.exporter import export, run_onnx, run_torchscript

    ckpt = random_checkpoint(tmp_path / "final.pt", name, cmn_window)
    onnx_res = export(ckpt, fmt="onnx")
    ts_res = export(ckpt, fmt="torchscript")
    assert onnx_res.path == tmp_path / "final.onnx" and ts_res.path == tmp_path / "final.torchscript.pt"
    encoder, _ = load_encoder(ckpt)
    eager = ExportModule(encoder, cmn=True, cmn_window=cmn_window).eval()
    embedder = Embedder(encoder, {"cmn": True, "cmn_window": cmn_window, "vad": False}, device="cpu")
    for b, t in LENGTHS:
        x = feats(b, t)
        with torch.no_grad():
            want = eager(torch.from_numpy(x)).numpy()
        assert want.shape == (b, 12)
        got_onnx, got_ts = run_onnx(onnx_res.path, x), run_torchscript(ts_res.path, x)
        assert np.abs(got_onnx - want).max() <= 1e-4, (name, b, t)
        assert np.abs(got_ts - want).max() <= 1e-4, (name, b, t)
        # pyspk's own path (numpy CMN in float64, then the encoder) on the raw frames
        own = np.stack([embedder.embed(x[i]) for i in range(b)])
        assert np.abs(got_onnx - own).max() <= 1e-4, (name, b, t)
    # the outputs depend on the input (a constant graph would pass the comparisons above);
    # i.i.d. noise inputs all look alike after pooling, so change the spread instead
    x = feats(1, 100)
    assert np.abs(run_onnx(onnx_res.path, x) - run_onnx(onnx_res.path, 4 * x)).max() > 1e-2


@pytest.mark.slow
def test_metadata_is_what_sherpa_onnx_reads(tmp_path):
    need("onnx"), need("onnxscript")
    from pyspk.export.exporter import export, read_metadata

    ckpt = random_checkpoint(tmp_path / "final.pt", "tdnn", vad=True)
    meta = read_metadata(export(ckpt, fmt="onnx", language="English").path)
    assert set(SHERPA_KEYS) <= set(meta)
    assert meta["framework"] in ("wespeaker", "3d-speaker")
    assert int(meta["sample_rate"]) == 16000 and int(meta["output_dim"]) == 12
    assert meta["normalize_samples"] == "0"  # int16-scaled samples, as pyspk's fbank
    assert meta["language"] == "English" and meta["feature_normalize_type"] == ""
    assert meta["pyspk_encoder"] == "tdnn" and json.loads(meta["pyspk_encoder_kwargs"]) == TINY["tdnn"]
    assert json.loads(meta["pyspk_fbank"])["num_mel_bins"] == 80
    assert meta["pyspk_cmn"] == "in-graph, whole utterance" and meta["pyspk_vad"] == "1"
    assert "VAD" in meta["pyspk_frontend_vs_sherpa_onnx"]
    extra = torch.load(ckpt, weights_only=True)["extra"]
    assert meta["pyspk_config_sha256"] == config_hash(extra["config"]) != ""
    ts_meta = read_metadata(export(ckpt, fmt="torchscript", language="English").path)
    assert {k: v for k, v in ts_meta.items()} == meta


def test_frontend_differences_are_named():
    from pyspk.export.metadata import sherpa_frontend_differences

    assert sherpa_frontend_differences(FbankConfig(), {"vad": False}) == []
    diffs = sherpa_frontend_differences(FbankConfig(high_freq=8000.0, low_freq=0.0, dither=1.0), {"vad": True})
    text = "; ".join(diffs)
    assert "high_freq 8000" in text and "low_freq" in text and "dither" in text and "VAD" in text


def test_bad_input_writes_nothing(tmp_path):
    need("onnx"), need("onnxscript"), need("onnxruntime")
    from pyspk.export.exporter import ExportError, export

    ckpt = random_checkpoint(tmp_path / "final.pt", "tdnn")
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export(ckpt, fmt="tflite")
    with pytest.raises(ExportError, match="40"):
        export(ckpt, fmt="onnx", fbank=FbankConfig(num_mel_bins=40))
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export(ckpt, fmt="torchscript", tol=-1.0)  # a self-check that cannot pass
    with pytest.raises(ValueError, match="language"):
        export(ckpt, fmt="onnx", language="")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.pt"]  # no file, no temporary left
    p = subprocess.run(
        [sys.executable, "-m", "pyspk.bin.main", "export", str(tmp_path / "missing.pt")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert p.returncode == 1 and "missing.pt" in p.stderr


@pytest.mark.slow
def test_sherpa_onnx_agrees_with_pyspk_embed(tiny_systems, tmp_path):
    need("sherpa_onnx"), need("onnx"), need("onnxscript")
    from pyspk.export.exporter import export

    test_dir = tiny_systems / "data" / "synth_test"
    fbank = FbankConfig.from_yaml(REPO / "conf" / "fbank.yaml")
    models = {
        name: (
            tiny_systems / "exp" / name / "final.pt",
            export(tiny_systems / "exp" / name / "final.pt", tmp_path / f"{name}.onnx", "onnx", fbank).path,
        )
        for name in ("tdnn", "ecapa_tdnn", "resnet34")
    }
    # sherpa-onnx runs in its own process: on a metadata error it exits the process
    code = (
        "import json, sys; from pyspk.export.parity import compare; from pyspk.features.fbank import load_config\n"
        "m = json.loads(sys.argv[1]); f = load_config('conf/fbank.yaml')\n"
        "print(json.dumps({n: compare(c, o, sys.argv[2], f) for n, (c, o) in m.items()}))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, json.dumps({n: [str(c), str(o)] for n, (c, o) in models.items()}), str(test_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    for name, res in json.loads(p.stdout).items():
        assert res["files"] == 24
        # same front end and network: identical up to float rounding (centred: per-file
        # differences, not the shared mean direction, decide)
        novad = res["cosine"]["pyspk_novad"]
        assert novad["min"] >= 0.995 and novad["centred_min"] >= 0.995, (name, novad)
        # as `pyspk embed` runs it (energy VAD, which sherpa-onnx lacks): per file >= 0.995,
        # or else the EERs of the tiny trials within 0.3 points
        trained = res["cosine"]["pyspk"]
        if trained["min"] < 0.995:
            for trials, eer in res["eer"]["pyspk"].items():
                assert abs(eer - res["eer"]["sherpa_onnx"][trials]) <= 0.003, (name, trials)
        assert set(res["eer"]["sherpa_onnx"]) == {"trials_cmn", "trials_cross", "trials_en"}


def test_export_parity_cli_errors(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyspk.bin.main",
            "export_parity",
            "--model",
            str(tmp_path / "m.pt"),
            "--onnx",
            str(tmp_path / "m.onnx"),
            str(tmp_path / "nodata"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert p.returncode == 1 and "wav.scp" in p.stderr


@pytest.mark.slow
def test_readme_sherpa_snippet_runs(tiny_systems, tmp_path):
    """The README's SpeakerEmbeddingManager example, with its file names pointed at the tiny corpus."""
    need("sherpa_onnx"), need("onnx"), need("onnxscript")
    from pyspk.export.exporter import export

    readme = (REPO / "README.md").read_text()
    m = re.search(r"## Train with pyspk, run anywhere.*?```python\n(.*?)```", readme, re.S)
    assert m, "README section 'Train with pyspk, run anywhere' with a python block"
    snippet = m.group(1)
    assert len(snippet.strip().splitlines()) <= 14
    onnx_path = export(tiny_systems / "exp" / "tdnn" / "final.pt", tmp_path / "final.onnx").path
    audio = tiny_systems / "data" / "synth_audio"
    names = {
        "exp/aam/final.onnx": onnx_path,
        "alice1.wav": audio / "te0001/te0001-en-000.flac",
        "alice2.wav": audio / "te0001/te0001-en-001.flac",
        "bob1.wav": audio / "te0002/te0002-en-000.flac",
        "bob2.wav": audio / "te0002/te0002-en-001.flac",
        "unknown.wav": audio / "te0001/te0001-en-002.flac",
    }
    for name, path in names.items():
        assert f'"{name}"' in snippet, name
        snippet = snippet.replace(f'"{name}"', f'"{path}"')
    p = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.rstrip("\n").split("\n")[-1] in ("alice", "bob", "")  # the manager's answer, printed
