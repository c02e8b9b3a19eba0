#!/usr/bin/env bash
# GPU readiness check (bench/gpu_check.py): training steps, the online loader feeding a GPU, a
# tiny recipe under torchrun with AMP, extraction on the device. One prepared run of minutes.
#   bench/gpu_check.sh [--cpu] [--out DIR]
# --cpu: the reduced mode CI runs. On a GPU machine whose python already has torch with CUDA,
# set PYSPK_PYTHON=python3 to use it instead of the project's .venv (its torch is the CPU wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYSPK_PYTHON:-}" ]; then
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=$PWD/utils:$PATH LC_ALL=C PYTHONUNBUFFERED=1
  exec "$PYSPK_PYTHON" bench/gpu_check.py "$@"
fi
. ./path.sh
exec python bench/gpu_check.py "$@"
