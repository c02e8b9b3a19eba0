#!/usr/bin/env bash
# Difficulty sweep of SynthCeleb: for each --difficulty, make a corpus (test speakers only
# matter; train speakers feed the LDA learnability check) and print the naive baseline's
# EER per trial list (synth/naive_baseline.py). Run from the repo root.
#   synth/calibrate.sh [--out DIR] [--nj N] [--seed N] [--train-spk N] [--test-spk N]
#                            [--utts N] [--difficulties "0 0.5 1"] [--extra "--snr-db 90,90"]
set -euo pipefail
out=exp/synth_calibration; nj=2; seed=777; train_spk=60; test_spk=40; utts=10
difficulties="0 0.5 1 1.5"; extra=""
. ./path.sh
. utils/parse_options.sh
mkdir -p "$out"
for d in $difficulties; do
  dir=$out/d$d
  # shellcheck disable=SC2086
  python synth/make_synth.py --out-dir "$dir" --size default --seed "$seed" --nj "$nj" \
    --num-train-spk "$train_spk" --num-test-spk "$test_spk" --utts-per-lang "$utts" --difficulty "$d" $extra \
    > "$dir.log" 2>&1 || { echo "$0: make_synth failed; see $dir.log" >&2; exit 1; }
  python synth/naive_baseline.py "$dir/synth_test" --nj "$nj" --lda-train "$dir/synth_train" \
    --json "$dir.naive.json" 2>> "$dir.log" | sed "s|^|difficulty=$d\t|"
done
