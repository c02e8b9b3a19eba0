#!/usr/bin/env bash
# Run every bench/bench_*.py and print one table: figure | value | unit | note.
# Each script prints TSV rows "figure<TAB>value<TAB>unit<TAB>note" on stdout.
#   bench/run.sh [--quick] [NAME ...]    (NAME: fbank, train, backend, losses, ...)
# --quick is passed to scripts that accept it (smaller sizes, for a smoke run).
set -uo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
args=(); names=()
for a in "$@"; do case $a in --*) args+=("$a") ;; *) names+=("$a") ;; esac; done
if [ ${#names[@]} -eq 0 ]; then
  # every script but the scaling table, which runs the recipe at several corpus sizes for an hour
  # or more and rewrites docs/results/scale.md: `bench/run.sh scale` runs it
  scripts=($(ls bench/bench_*.py | grep -v '/bench_scale\.py$'))
else
  scripts=(); for n in "${names[@]}"; do scripts+=("bench/bench_$n.py"); done
fi
mkdir -p bench/out
rows=bench/out/rows.tsv; : > "$rows"
failed=()
for s in "${scripts[@]}"; do
  [ -f "$s" ] || { echo "bench/run.sh: no such script $s" >&2; failed+=("$s"); continue; }
  log=bench/out/$(basename "$s" .py).log
  echo "running $s (log: $log)" >&2
  if python "$s" "${args[@]+"${args[@]}"}" > "$log.tsv" 2> "$log"; then
    grep -P '^[^\t]+\t[^\t]*\t' "$log.tsv" | sed "s|^|$(basename "$s" .py)\t|" >> "$rows"
  else
    echo "bench/run.sh: $s failed; see $log" >&2; failed+=("$s")
  fi
done
python - "$rows" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
head = ["script", "figure", "value", "unit", "note"]
rows = [(r + [""] * 5)[:5] for r in rows]
w = [max(len(x) for x in col) for col in zip(head, *rows)]
fmt = lambda r: "| " + " | ".join(x.ljust(n) for x, n in zip(r, w)) + " |"
print(fmt(head)); print("|" + "|".join("-" * (n + 2) for n in w) + "|")
for r in rows: print(fmt(r))
PY
[ ${#failed[@]} -eq 0 ] || { echo "bench/run.sh: failed: ${failed[*]}" >&2; exit 1; }
