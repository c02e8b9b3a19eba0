#!/usr/bin/env bash
# The test command.
#   ./test.sh [pytest args]         the fast tier: unit tests, no end-to-end recipe, no Slurm
#   ./test.sh --all [pytest args]   the whole suite (what CI runs)
# Makes the .venv on first use (path.sh). Tests needing the real Slurm daemons skip, saying why,
# when slurm-wlm/munge are absent (.ci/run installs them); set PYSPK_REQUIRE_SLURM=1 to make that
# a failure instead. Tests of optional wheels (onnx, sherpa-onnx, pydrobert-kaldi) skip likewise
# unless PYSPK_REQUIRE_WHEELS=1. Which tests are slow: the `slow` and `slurm` markers
# (pyproject.toml), and every test that uses the tiny-recipe fixtures (tests/conftest.py).
set -uo pipefail
cd "$(dirname "$0")"
tier=(-m "not slow and not slurm")
if [ "${1:-}" = "--all" ]; then
  tier=()
  shift
fi
. ./path.sh || exit 1
python -m pytest ${tier[@]+"${tier[@]}"} "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit $rc
