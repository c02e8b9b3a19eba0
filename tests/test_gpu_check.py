"""bench/gpu_check.sh runs in its reduced CPU mode, so the GPU readiness script cannot rot between
the sessions that have a GPU: every check (steps, online loader, torchrun recipe, extraction) passes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_passes_in_its_cpu_mode(tmp_path):
    p = subprocess.run(
        ["bench/gpu_check.sh", "--cpu", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    table = (tmp_path / "gpu_check.md").read_text()
    for check in ("train step", "online loader", "loader feeding ECAPA", "tiny recipe", "extraction"):
        assert f"| {check}" in table, check
    assert "FAILED" not in table
