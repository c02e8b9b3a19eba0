# Sourced after a script sets its defaults: turns every `--name value` (or
# `--name=value`) on the command line into `name=value`, for variables that the
# script has already defined. Dashes in names become underscores, so `--stop-stage`
# and `--stop_stage` both set `stop_stage`. `--help`/`-h` prints $help_message.
# Unknown options are an error naming the option and the nearest known one; remaining
# arguments stay in "$@".

# The default (a `name=` line of the calling script) nearest to a misspelled option.
_po_nearest() {
  grep -oE '^[A-Za-z_][A-Za-z0-9_]*=' "$0" 2>/dev/null | tr -d = | sort -u | awk -v w="$1" '
    function lev(a, b,   i, j, x, y, z, d) {
      for (i = 0; i <= length(a); i++) d[i, 0] = i
      for (j = 0; j <= length(b); j++) d[0, j] = j
      for (i = 1; i <= length(a); i++)
        for (j = 1; j <= length(b); j++) {
          x = d[i-1, j] + 1; y = d[i, j-1] + 1; z = d[i-1, j-1] + (substr(a, i, 1) != substr(b, j, 1))
          d[i, j] = x < y ? (x < z ? x : z) : (y < z ? y : z)
        }
      return d[length(a), length(b)]
    }
    { k = lev(w, $0); if (best == "" || k < bk) { best = $0; bk = k } }
    END { if (best != "" && bk <= 3) print best }'
}
while true; do
  [ -z "${1:-}" ] && break
  case "$1" in
    --help|-h)
      if [ -z "${help_message:-}" ]; then echo "No help found." >&2; else printf '%s\n' "$help_message" >&2; fi
      exit 0 ;;
    --*=*)
      _po_name=${1%%=*}; _po_name=${_po_name#--}; _po_name=${_po_name//-/_}
      _po_value=${1#*=}; _po_shift=1 ;;
    --*)
      _po_name=${1#--}; _po_name=${_po_name//-/_}
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      _po_value=$2; _po_shift=2 ;;
    *) break ;;
  esac
  if ! [[ "$_po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!_po_name+set}" ]; then
    _po_near=$(_po_nearest "$_po_name")
    echo "$0: unknown option --${_po_name//_/-}${_po_near:+ (did you mean --${_po_near//_/-}?)}" >&2
    exit 1
  fi
  # Booleans stay booleans: --force must be given true or false.
  case "${!_po_name}" in
    true|false)
      case "$_po_value" in true|false) ;; *)
        echo "$0: option --${_po_name//_/-} takes true or false, got '$_po_value'" >&2; exit 1 ;;
      esac ;;
  esac
  printf -v "$_po_name" '%s' "$_po_value"
  shift "$_po_shift"
done
unset _po_name _po_value _po_shift _po_near
unset -f _po_nearest
true
