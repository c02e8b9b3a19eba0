"""Shared fixtures: optional wheels that CI must have, and one tiny set of trained systems."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def need(module: str):
    """Import ``module`` or skip saying why; fail instead under PYSPK_REQUIRE_WHEELS=1 (.ci/run)."""
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or a wheel whose native library does not load here
        reason = f"{module} is not importable on this platform ({type(e).__name__}: {e})"
        if os.environ.get("PYSPK_REQUIRE_WHEELS") == "1":
            pytest.fail(f"PYSPK_REQUIRE_WHEELS=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_systems(tmp_path_factory) -> Path:
    """bench/tiny_systems.py --size test: tiny SynthCeleb, fbank, one short-trained system per
    encoder, x-vectors and back-end of the first (tdnn). Built once per test session."""
    out = tmp_path_factory.mktemp("tiny_systems")
    p = subprocess.run([sys.executable, "bench/tiny_systems.py", "--out", str(out), "--size", "test",
                        "--steps", "4"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"tiny_systems failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return out
