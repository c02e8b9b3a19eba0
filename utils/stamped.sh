#!/usr/bin/env bash
# Run a command once: skip it when its completion stamp exists and is newer than every
# input; otherwise run it and write the stamp last, only if it succeeded.
#
#   utils/stamped.sh [--force true|false] STAMP [INPUT ...] -- COMMAND [ARG ...]
#
# INPUTs are files or directories (a directory counts as new as its newest file).
# A command killed midway leaves no stamp, so a rerun redoes it.
set -u
force=false
case "${1:-}" in
  --force) force=${2:-}; shift; shift || true ;;
  --force=*) force=${1#--force=}; shift ;;
esac
case $force in true|false) ;; *) echo "$0: --force takes true or false, got '$force'" >&2; exit 2 ;; esac
if [ $# -lt 3 ]; then
  echo "usage: $0 [--force true|false] STAMP [INPUT ...] -- COMMAND [ARG ...]" >&2; exit 2
fi
stamp=$1; shift
inputs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do inputs+=("$1"); shift; done
[ "${1:-}" = "--" ] || { echo "$0: missing '--' before the command" >&2; exit 2; }
shift
[ $# -gt 0 ] || { echo "$0: no command given" >&2; exit 2; }

if [ "$force" != true ] && [ -f "$stamp" ]; then
  newer=""
  for i in "${inputs[@]+"${inputs[@]}"}"; do
    [ -e "$i" ] || { newer="$i (missing)"; break; }
    n=$(find "$i" -newer "$stamp" -print -quit 2>/dev/null)
    [ -z "$n" ] || { newer=$n; break; }
  done
  if [ -z "$newer" ]; then
    echo "$(basename "$0"): $stamp is up to date; skipping: $*" >&2
    exit 0
  fi
  echo "$(basename "$0"): input $newer is newer than $stamp; redoing" >&2
fi
rm -f "$stamp"
"$@" || { rc=$?; echo "$(basename "$0"): command failed with status $rc (no stamp written): $*" >&2; exit $rc; }
mkdir -p "$(dirname "$stamp")"
{ date -u +%Y-%m-%dT%H:%M:%SZ; printf '%q ' "$@"; echo; } > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
