#!/usr/bin/env bash
# The test command: ./test.sh [pytest args]. Makes the .venv on first use (path.sh).
# Tests needing the real Slurm daemons skip, saying why, when slurm-wlm/munge are absent
# (.ci/run installs them); set PYSPK_REQUIRE_SLURM=1 to make that a failure instead. Tests of
# optional wheels (onnx, sherpa-onnx, pydrobert-kaldi) skip likewise unless PYSPK_REQUIRE_WHEELS=1.
set -uo pipefail
cd "$(dirname "$0")"
. ./path.sh || exit 1
python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit $rc
