# Sourced by run.sh and test.sh: makes the project's .venv on first use (pinned
# dependencies from pyproject.toml, the package itself editable), then puts it,
# utils/ and the package on PATH. Re-sourcing costs a hash of pyproject.toml only:
# the venv is rebuilt when that hash differs from the stamp written after the last
# successful install.
PYSPK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PYSPK_ROOT
_pyspk_venv=${PYSPK_VENV:-$PYSPK_ROOT/.venv}
_pyspk_stamp=$_pyspk_venv/.pyspk-requirements.sha256
_pyspk_hash=$(sha256sum "$PYSPK_ROOT/pyproject.toml" | cut -d' ' -f1)
if [ ! -x "$_pyspk_venv/bin/python" ] || [ "$(cat "$_pyspk_stamp" 2>/dev/null)" != "$_pyspk_hash" ]; then
  echo "path.sh: installing pinned dependencies into $_pyspk_venv (first use; a few minutes)" >&2
  _pyspk_py=${PYTHON:-python3}
  if ! { [ -x "$_pyspk_venv/bin/python" ] || "$_pyspk_py" -m venv "$_pyspk_venv"; } ||
     ! "$_pyspk_venv/bin/python" -m pip install --upgrade pip setuptools wheel > "$_pyspk_venv.install.log" 2>&1 ||
     ! "$_pyspk_venv/bin/python" -m pip install -e "$PYSPK_ROOT[test]" >> "$_pyspk_venv.install.log" 2>&1; then
    tail -n 20 "$_pyspk_venv.install.log" >&2
    echo "path.sh: installing into $_pyspk_venv failed; full log: $_pyspk_venv.install.log" >&2
    return 1 2>/dev/null || exit 1
  fi
  echo "$_pyspk_hash" > "$_pyspk_stamp.tmp" && mv "$_pyspk_stamp.tmp" "$_pyspk_stamp"
fi
export PATH=$_pyspk_venv/bin:$PYSPK_ROOT/utils:$PATH
export PYTHONPATH=$PYSPK_ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# train.compile: inductor's compiled kernels are kept here, so only the first run of a model
# shape pays the full compile; later runs load them in seconds (docs/speed.md).
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PYSPK_ROOT/.cache/inductor}
# Kaldi convention: sorting in the C locale, everywhere.
export LC_ALL=C
unset _pyspk_venv _pyspk_stamp _pyspk_hash _pyspk_py
