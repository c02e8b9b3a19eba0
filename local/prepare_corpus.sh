#!/usr/bin/env bash
# Stage 0 of run.sh: make $data/<train_set> and $data/<test_set> (with trials*) for one corpus.
#
#   local/prepare_corpus.sh --corpus C --data DIR [--seed N] [--nj N] [--synth-size tiny|default]
#     [--skip-missing true] [--<corpus>-root DIR]... [the corpus's own options]
#
# What each corpus makes, from where and how is its entry in the corpus registry
# (pyspk/corpora.py, and corpora registered by PYSPK_PLUGINS): `python -m pyspk.bin.corpus list`,
# `python -m pyspk.bin.corpus info --corpus C` (sets, trials lists, root flags, options);
# the table of the built-in ones is in docs/corpora.md. Their options: --so762-eval-speakers 40
# (speechocean762 without its test/ half, a copy holding only train/, is split instead: that
# many of the 125 train speakers are held out, seeded), --cnceleb-min-duration 0 (> 0: merge
# short CN-Celeb training segments to this many seconds).
set -euo pipefail

corpus=synth
data=data
seed=777
nj=2
synth_size=default
skip_missing=false         # true: drop trial lines / list entries whose audio is absent (with a count)
help_message="usage: $0 --corpus NAME --data DIR [--seed N] [--<corpus>-root PATH] (names: python -m pyspk.bin.corpus list)"

# Every corpus's root flags and options, with their defaults, from the registry: declared here
# so that parse_options takes them. A name that is already a variable of this script is refused.
_flags=$(python3 -m pyspk.bin.corpus --prog "$0" flags) || exit 1
while IFS='=' read -r _var _value; do
  [ -n "$_var" ] || continue
  if ! [[ $_var =~ ^[a-z][a-z0-9_]*$ ]] || [ -n "${!_var+set}" ]; then
    echo "$0: the corpus registry declares a flag --${_var//_/-} that this script cannot take" >&2; exit 1
  fi
  printf -v "$_var" '%s' "$_value"
done <<< "$_flags"
_names=$(while IFS='=' read -r _var _; do echo "$_var"; done <<< "$_flags")
unset _flags _var _value
. "$(dirname "$0")/../utils/parse_options.sh"
[ $# -eq 0 ] || { echo "$0: unexpected argument(s): $*" >&2; exit 1; }

# The python step runs in the background and is waited for, so that INT/TERM/HUP to this
# script (stamped.sh passes them on) reach it: a shell waiting for a foreground command would
# die and leave it running. It gets TERM (a background job ignores INT) and passes it on to
# the preparation script it runs.
_py_pid=
_stop() {
  trap - INT TERM HUP
  if [ -n "$_py_pid" ]; then kill -TERM "$_py_pid" 2>/dev/null || true; wait "$_py_pid" 2>/dev/null || true; fi
  exit $((128 + $1))
}
trap '_stop 2' INT; trap '_stop 15' TERM; trap '_stop 1' HUP
_set=()
for _var in $_names; do _set+=(--set "${_var//_/-}=${!_var}"); done
_rc=0
python3 -m pyspk.bin.corpus --prog "$0" prepare --corpus "$corpus" --data "$data" --seed "$seed" --nj "$nj" \
  --synth-size "$synth_size" --skip-missing "$skip_missing" --recipe-dir "$(dirname "$0")/.." \
  ${_set[@]+"${_set[@]}"} &
_py_pid=$!
wait "$_py_pid" || _rc=$?
_py_pid=
[ $_rc -eq 0 ] || exit $_rc
echo "$0: prepared $corpus under $data"
