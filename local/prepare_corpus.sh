#!/usr/bin/env bash
# Stage 0 of run.sh: make $data/<train_set> and $data/<test_set> (with trials*) for one corpus.
#
#   local/prepare_corpus.sh --corpus C --data DIR [--seed N] [--nj N] [--synth-size tiny|default]
#     [--speechocean762-root P] [--voxceleb1-root P] [--voxceleb2-root P] [--cnceleb-root P] [--folder-root P]
#
#   corpus           train set              test set (trials files)
#   synth            synth_train            synth_test            (synth/make_synth.py)
#   speechocean762   so762_train            so762_test            trials, trials_female, trials_male
#   voxceleb1        voxceleb1_dev          voxceleb1_test        trials_vox1_o
#   voxceleb2        voxceleb2_dev          voxceleb1_test        trials_vox1_o [_e _h when present]
#   cnceleb          cnceleb_train          cnceleb1_eval         trials (concatenated enrolment), trials_avg
#   folder           folder_train           folder_test           trials
#
# speechocean762 without its test/ half (a copy holding only train/) is
# split instead: --so762-eval-speakers of the 125 train speakers are held out (seeded).
# VoxCeleb1-E/H reuse VoxCeleb1 dev speakers, so only the VoxCeleb2 setting scores them.
set -euo pipefail

corpus=synth
data=data
seed=777
nj=2
synth_size=default
speechocean762_root=
voxceleb1_root=
voxceleb2_root=
cnceleb_root=
folder_root=
so762_eval_speakers=40     # held-out speakers in the split mode (of 125; gender-alternating draw)
cnceleb_min_duration=0     # > 0: merge short CN-Celeb training segments to this many seconds
skip_missing=false         # true: drop trial lines / list entries whose audio is absent (with a count)

help_message="usage: $0 --corpus synth|speechocean762|voxceleb1|voxceleb2|cnceleb|folder --data DIR [--seed N] [--<corpus>-root PATH]"
. "$(dirname "$0")/../utils/parse_options.sh"
[ $# -eq 0 ] || { echo "$0: unexpected argument(s): $*" >&2; exit 1; }

local_dir=$(cd "$(dirname "$0")" && pwd)
synth_dir=$(cd "$local_dir/../synth" && pwd)
# Each python step runs in the background and is waited for, so that INT/TERM/HUP to
# this script (stamped.sh passes them on) reach it: a shell waiting for a foreground
# command would die and leave it running. It gets TERM (a background job ignores INT).
py_pid=
stop() {
  trap - INT TERM HUP
  if [ -n "$py_pid" ]; then kill -TERM "$py_pid" 2>/dev/null || true; wait "$py_pid" 2>/dev/null || true; fi
  exit $((128 + $1))
}
trap 'stop 2' INT; trap 'stop 15' TERM; trap 'stop 1' HUP
py() {
  local rc=0
  python3 "$local_dir/$1" "${@:2}" &
  py_pid=$!
  wait "$py_pid" || rc=$?
  py_pid=
  return $rc
}
need_root() {  # need_root FLAG VALUE
  if [ -z "$2" ]; then
    echo "$0: --$1 is required for --corpus $corpus" >&2; exit 1
  fi
  if [ ! -d "$2" ]; then
    echo "$0: --$1 '$2' is not a directory" >&2; exit 1
  fi
}
skip=(); $skip_missing && skip=(--skip-missing)
mkdir -p "$data"

case $corpus in
  synth)
    [ -f "$synth_dir/make_synth.py" ] || { echo "$0: $synth_dir/make_synth.py not found" >&2; exit 1; }
    py ../synth/make_synth.py --out-dir "$data" --size "$synth_size" --seed "$seed" --nj "$nj" ;;
  speechocean762)
    need_root speechocean762-root "$speechocean762_root"
    split=()
    if [ ! -d "$speechocean762_root/test" ]; then
      echo "$0: note: $speechocean762_root has no test/ half; holding out $so762_eval_speakers of its" \
           "train speakers for evaluation (seed $seed)" >&2
      split=(--split-train-speakers "$so762_eval_speakers")
    fi
    py prepare_speechocean762.py --root "$speechocean762_root" --train-dir "$data/so762_train" \
      --test-dir "$data/so762_test" --seed "$seed" ${split[@]+"${split[@]}"} ${skip[@]+"${skip[@]}"} ;;
  voxceleb1)
    need_root voxceleb1-root "$voxceleb1_root"
    py prepare_voxceleb1.py --root "$voxceleb1_root" --dev-dir "$data/voxceleb1_dev" \
      --test-dir "$data/voxceleb1_test" --trial-lists o ${skip[@]+"${skip[@]}"} ;;
  voxceleb2)
    need_root voxceleb2-root "$voxceleb2_root"
    need_root voxceleb1-root "$voxceleb1_root"
    py prepare_voxceleb2.py --root "$voxceleb2_root" --train-dir "$data/voxceleb2_dev"
    py prepare_voxceleb1.py --root "$voxceleb1_root" --test-dir "$data/voxceleb1_test" --test-only \
      --trial-lists o,e,h ${skip[@]+"${skip[@]}"} ;;
  cnceleb)
    need_root cnceleb-root "$cnceleb_root"
    py prepare_cnceleb.py --root "$cnceleb_root" --train-dir "$data/cnceleb_train" \
      --eval-dir "$data/cnceleb1_eval" --min-duration "$cnceleb_min_duration" ${skip[@]+"${skip[@]}"} ;;
  folder)
    need_root folder-root "$folder_root"
    py prepare_folder.py --root "$folder_root" --train-dir "$data/folder_train" \
      --test-dir "$data/folder_test" --seed "$seed" ;;
  *)
    echo "$0: unknown --corpus '$corpus' (synth, speechocean762, voxceleb1, voxceleb2, cnceleb, folder)" >&2
    exit 1 ;;
esac
echo "$0: prepared $corpus under $data"
