#!/usr/bin/env bash
# The loss study (docs/results/loss-study.md): makes the corpus's data (run.sh stages 0-2, skipped when done),
# then trains, scores and tabulates every variant over the seeds (studies/study_losses.py).
#
#   studies/study_losses.sh [--corpus synth|speechocean762] [--speechocean762-root DIR] [study_losses.py options]
#   e.g. studies/study_losses.sh --corpus synth --groups rows --seeds 1,2,3
# --speechocean762-root: where the corpus lies (local/download_speechocean762.sh fetches it); run.sh
# checks stage 0 (data_so762) on every call, so give it every time
#
# Resumable: rerun the same command after a kill; finished systems are reused.
# Table: exp_study/<corpus>/study.md. Everything is a long run on 2 CPU cores (times:
# docs/results/loss-study.md); --groups and --variants pick parts, --list shows the variants.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
corpus=synth
root=()
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --corpus) corpus=$2; shift 2 ;;
    --corpus=*) corpus=${1#--corpus=}; shift ;;
    --speechocean762-root) root=(--speechocean762-root "$2"); shift 2 ;;
    --speechocean762-root=*) root=(--speechocean762-root "${1#--speechocean762-root=}"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
case $corpus in
  synth) ./run.sh --stage 0 --stop-stage 2 ;;
  speechocean762) ./run.sh --corpus speechocean762 --data data_so762 --exp exp_so762 --fbank-dir fbank_so762 \
                    ${root[@]+"${root[@]}"} --stage 0 --stop-stage 2 ;;
  *) echo "$0: unknown --corpus '$corpus' (synth, speechocean762)" >&2; exit 1 ;;
esac
exec python studies/study_losses.py --corpus "$corpus" ${args[@]+"${args[@]}"}
