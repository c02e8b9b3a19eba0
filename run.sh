#!/usr/bin/env bash
# pyspk recipe: speaker verification with AM-SupCon, class-aware attention and MGDA.
# A bare ./run.sh runs every stage on SynthCeleb, a corpus made on the spot.
# Stages (see docs/recipe.md for inputs and outputs of each):
#   0 data preparation        1 fbank features          2 augmentation (+ its fbank)
#   3 training (per system)   4 x-vector extraction     5 back-ends (mean, LDA, PLDA, cohort)
#   6 scoring (cosine, AS-norm, PLDA)                   7 report (results.md, results.json, det.png)
set -euo pipefail

cmdline="$0 $*"         # as typed, for the report (parse_options consumes "$@")

# ---- defaults: every one of these is also a --flag ----
stage=0
stop_stage=7
corpus=synth            # synth | speechocean762 | voxceleb1 | voxceleb2 | cnceleb | folder | one of PYSPK_PLUGINS
                        # (the registry: pyspk/corpora.py; `python -m pyspk.bin.corpus list` names them all)
config=                 # one system's yaml; empty = every system of conf/<corpus>/systems.list
systems=                # space-separated system names; overrides the list file
nj=2                    # parallel jobs for features and extraction
force=false             # true: redo stages even when their .done stamps are up to date
dry_run=false           # true: run nothing, say which stages a rerun would redo and why
lock_wait=0             # seconds a stage waits for another run holding its output dir
seed=777
data=data
exp=exp
fbank_dir=fbank
synth_size=default      # tiny | default (SynthCeleb size)
synth_num_train_spk=    # SynthCeleb's training speakers; empty = the size's own (bench/bench_scale.py scales it)
nproc=1                 # processes per node for torchrun (GPUs, or CPU workers)
train_jobs=auto         # systems stage 3 trains at once: auto = 2 where training runs here on CPU
                        # (utils/run.pl, --nproc 1, no GPU), each on its share of the cores; else 1
augment=true            # stage 2 on/off; off trains on the clean set
augment_subset=0        # stage 2 combines the clean set with N augmented utterances drawn over all the
                        # copies, and computes only their features (Kaldi v2: 1M of 4M); 0 = every copy
compress_feats=false    # true: stages 1-2 store features as Kaldi compressed matrices (copy-feats
                        # --compress=true): a quarter of the disk, and Kaldi's tools still read them
online=false            # true: training reads the clean set's audio and augments and featurises it on
                        # the fly (docs/scale.md): no augmented copies, no features of the training set
shards=false            # with --online true: stage 2 packs the training set into shards (pyspk shards)
                        # that training reads sequentially (network filesystems, clusters)
shard_size=1000         # utterances per shard
lmft=false              # true: stage 3 also fine-tunes every system with large margins (docs/recipe.md,
                        # 'Large-margin fine-tuning') into <system>_lmft, which stages 4-7 score beside it
lmft_config=            # empty = conf/<corpus>/lmft.yaml if there is one, else conf/lmft.yaml
backend_set=clean       # stages 4-5 fit the back-end on: clean (the training speakers' own recordings,
                        # Kaldi's convention) | training (the set stage 3 trains on: augmented copies,
                        # speed copies as new speakers)
augment_config=         # empty = conf/<corpus>/augment.yaml if there is one, else conf/augment.yaml
musan_root=             # MUSAN folder; empty = noise made by the tool, babble from training speech
rirs_root=              # RIRS_NOISES folder; empty = rooms simulated with pyroomacoustics
speechocean762_root=    # speechocean762 folder (local/download_speechocean762.sh fetches it)
voxceleb1_root=
voxceleb2_root=
cnceleb_root=
folder_root=            # (a corpus registered by PYSPK_PLUGINS brings its own --<name>-root flags)

. ./path.sh
. ./cmd.sh                # cmd, train_cmd (also --cmd, --train-cmd)
help_message="usage: $0 [--stage N] [--stop-stage N] [--corpus NAME] [--<corpus>-root DIR] [--config YAML] [--nj N] [--cmd CMD] [--force true] [--dry-run true]"
# The root flags of every registered corpus become flags here too (those above are the built-in
# corpora's); the registry's names are checked there, and here again before any is set.
corpus_flags=$(python -m pyspk.bin.corpus --prog "$0" flags --roots-only) || exit 1
while IFS='=' read -r var _; do
  if [[ $var =~ ^[a-z][a-z0-9_]*_root$ ]] && [ -z "${!var+set}" ]; then printf -v "$var" '%s' ''; fi
done <<< "$corpus_flags"
unset corpus_flags var            # not flags themselves
. utils/parse_options.sh

last_stage=7
for opt in stage:"$stage" stop-stage:"$stop_stage"; do
  case ${opt#*:} in
    ''|*[!0-9]*) echo "$0: --${opt%%:*} takes a stage number 0-$last_stage, got '${opt#*:}'" >&2; exit 1 ;;
  esac
done
[ "$stage" -le $last_stage ] || { echo "$0: --stage $stage: there is no such stage (stages 0-$last_stage)" >&2; exit 1; }
[ "$stop_stage" -ge "$stage" ] || { echo "$0: --stop-stage $stop_stage is before --stage $stage" >&2; exit 1; }
[ "$stop_stage" -le $last_stage ] || stop_stage=$last_stage
for opt in force:"$force" dry-run:"$dry_run" augment:"$augment" online:"$online" shards:"$shards" \
           compress-feats:"$compress_feats" lmft:"$lmft"; do
  case ${opt#*:} in true|false) ;; *) echo "$0: --${opt%%:*} takes true or false, got '${opt#*:}'" >&2; exit 1 ;; esac
done

# Paths and system names become words of the commands below, of the queue scripts' jobs
# and of Kaldi ark,scp specifiers. They may hold letters (any script), digits and
# _ - + = : . / @ % only: whitespace, quotes, $ ` \ ; & | < > ( ) * ? [ ] { } ! # ~ (which
# a shell splits or expands) and , (where an ark,scp specifier splits) are refused here,
# with one line, before anything is created; so is a leading - (read as an option).
bad_chars() {  # the ASCII characters of $1 outside that set, each once, named: ' ' ';' tab
  local LC_ALL=C
  local rest=${1//[A-Za-z0-9_.\/+=:@%-]/} seen= out= c i
  for ((i = 0; i < ${#rest}; i++)); do
    c=${rest:i:1}
    [[ $c == [[:ascii:]] && $seen != *"$c"* ]] || continue
    seen+=$c
    case $c in
      $'\t') out+=" tab" ;; $'\n') out+=" newline" ;; [[:cntrl:]]) out+=" $(printf %q "$c")" ;;
      "'") out+=" \"'\"" ;; *) out+=" '$c'" ;;
    esac
  done
  printf '%s' "${out# }"
}
check_word() {  # check_word WHAT VALUE: exit 1 with one line if VALUE cannot be used
  local bad
  bad=$(bad_chars "$2")
  if [ -n "$bad" ]; then
    echo "$0: $1 $(printf %q "$2") holds $bad: paths and system names may hold letters," \
         "digits and _ - + = : . / @ % only (a shell would split or run the others, an ark,scp specifier" \
         "splits at commas); nothing was done" >&2
    exit 1
  fi
  case $2 in
    -*) echo "$0: $1 '$2' starts with '-' and would be read as an option; nothing was done" >&2; exit 1 ;;
  esac
}
for opt in data:"$data" exp:"$exp" fbank-dir:"$fbank_dir" config:"$config" augment-config:"$augment_config" \
           lmft-config:"$lmft_config"; do
  [ -z "${opt#*:}" ] || check_word "--${opt%%:*}" "${opt#*:}"
done
for opt in nj:"$nj" nproc:"$nproc"; do
  case ${opt#*:} in ''|*[!0-9]*|0*) echo "$0: --${opt%%:*} takes a positive whole number, got '${opt#*:}'" >&2; exit 1 ;; esac
done
case $seed in ''|*[!0-9]*) echo "$0: --seed takes a whole number, got '$seed'" >&2; exit 1 ;; esac
case $synth_size in tiny|default) ;; *) echo "$0: --synth-size takes tiny or default, got '$synth_size'" >&2; exit 1 ;; esac
case $synth_num_train_spk in
  '') ;; *[!0-9]*|0*) echo "$0: --synth-num-train-spk takes a positive whole number, got '$synth_num_train_spk'" >&2; exit 1 ;;
  *) [ "$corpus" = synth ] || { echo "$0: --synth-num-train-spk is for --corpus synth, not $corpus" >&2; exit 1; } ;;
esac
[[ $lock_wait =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "$0: --lock-wait takes seconds, got '$lock_wait'" >&2; exit 1; }

# The corpus's sets, root flags and stage-0 files, from its registry entry (pyspk/corpora.py) as
# key=value lines; an unknown name is one line naming the nearest. The values are only assigned
# (names, flags and paths the registry checked), never evaluated.
corpus_info=$(python -m pyspk.bin.corpus --prog "$0" info --corpus "$corpus" --format shell) || exit 1
corpus_roots= corpus_inputs= corpus_outputs=
while IFS='=' read -r key value; do
  case $key in
    train_set|test_set|conf_dir) printf -v "$key" '%s' "$value" ;;
    roots|inputs|outputs|hint_*) if [[ $key =~ ^[a-z][a-z0-9_]*$ ]]; then printf -v "corpus_$key" '%s' "$value"; fi ;;
  esac
done <<< "$corpus_info"
# A real corpus needs its folders, found now rather than inside stage 0.
root_args=() root0=
for flag in $corpus_roots; do
  var=${flag//-/_}; hint=corpus_hint_$var
  if [ $stage -le 0 ]; then
    [ -n "${!var:-}" ] || { echo "$0: --corpus $corpus needs --$flag DIR; ${!hint:-}" >&2; exit 1; }
    [ -d "${!var}" ] || { echo "$0: --$flag '${!var}' is not a directory" >&2; exit 1; }
  fi
  [ -n "$root0" ] || root0=${!var:-}
  root_args+=(--$flag "${!var:-}")
done
if [ -z "$augment_config" ]; then
  augment_config=conf/augment.yaml
  [ -f "$conf_dir/augment.yaml" ] && augment_config=$conf_dir/augment.yaml
fi
[ -f "$augment_config" ] || { echo "$0: --augment-config $augment_config does not exist" >&2; exit 1; }
if [ -n "$config" ]; then
  systems=$(basename "$config" .yaml)
elif [ -z "$systems" ]; then
  [ -f "$conf_dir/systems.list" ] || { echo "$0: $conf_dir/systems.list does not exist; give --systems or --config" >&2; exit 1; }
  systems=$(grep -v '^#' "$conf_dir/systems.list" | xargs)
fi
# A system name is a directory under --exp: one path component, not starting with '.' or '-'.
for sys in $systems; do
  check_word "system name" "$sys"
  case $sys in
    .*|*/*) echo "$0: system name '$sys' must be one directory name not starting with '.'" \
                 "(it names $exp/$sys); nothing was done" >&2; exit 1 ;;
  esac
done
system_config() { if [ -n "$config" ]; then echo "$config"; else echo "$conf_dir/$1.yaml"; fi; }
# --lmft true: every system has a fine-tuned twin <system>_lmft (stage 3), scored beside it (stages 4-7)
eval_systems=$systems
if $lmft; then
  if [ -z "$lmft_config" ]; then
    lmft_config=conf/lmft.yaml
    [ -f "$conf_dir/lmft.yaml" ] && lmft_config=$conf_dir/lmft.yaml
  fi
  [ -f "$lmft_config" ] || { echo "$0: --lmft-config $lmft_config does not exist" >&2; exit 1; }
  for sys in $systems; do eval_systems+=" ${sys}_lmft"; done
fi
# A missing system config is found now, not after hours of stages 0-2.
for sys in $systems; do
  [ -f "$(system_config $sys)" ] || { echo "$0: config $(system_config $sys) (system $sys) does not exist" >&2; exit 1; }
done
train_data=$data/$train_set
$augment && train_data=$data/${train_set}_combined
if $shards && ! $online; then echo "$0: --shards true needs --online true" >&2; exit 1; fi
case $augment_subset in ''|*[!0-9]*|0[0-9]*) echo "$0: --augment-subset takes a whole number, got '$augment_subset'" >&2; exit 1 ;; esac
if $online && { $compress_feats || [ $augment_subset != 0 ]; }; then
  echo "$0: --compress-feats and --augment-subset are for stored features; --online true stores none" >&2; exit 1
fi
# stamp params only where they are not the default, so that trees made before these flags stay up to date
feats_params=(); $compress_feats && feats_params=(--param compress_feats=true)
augment_params=(${feats_params[@]+"${feats_params[@]}"})
[ $augment_subset = 0 ] || augment_params+=(--param augment_subset=$augment_subset)
case $shard_size in ''|*[!0-9]*|0) echo "$0: --shard-size takes a positive number, got '$shard_size'" >&2; exit 1 ;; esac
# --online true: stage 3 reads the clean set (or its shards) and augments it per view; the
# augmentation's RIR pool and noise bank are made once, beside the features
online_args=()
if $online; then
  train_data=$data/$train_set
  $shards && train_data=$data/${train_set}_shards
  # absolute paths: the queue script may start training in another directory
  abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
  online_args=(--set data.source=$($shards && echo shards || echo audio) --set data.fbank_config=$(abs conf/fbank.yaml)
               --set data.rir_dir=$(abs $fbank_dir/${train_set}_online))
  if $augment; then online_args+=(--set data.augment_config=$(abs $augment_config)); fi
  # shards are read through shuffle buffers, which seldom hold K utterances of one speaker: the
  # contrastive loss takes its positives from two views of each utterance instead
  $shards && online_args+=(--set sampler.views=2)
  [ -z "$musan_root" ] || online_args+=(--set data.musan_root=$(abs $musan_root))
  [ -z "$rirs_root" ] || online_args+=(--set data.rirs_root=$(abs $rirs_root))
fi
case $backend_set in
  clean) backend_name=$train_set ;;
  training) backend_name=$(basename "$train_data") ;;
  *) echo "$0: --backend-set takes clean or training, got '$backend_set'" >&2; exit 1 ;;
esac
case $train_jobs in auto|[1-9]|[1-9][0-9]) ;; *) echo "$0: --train-jobs takes auto or a number of systems, got '$train_jobs'" >&2; exit 1 ;; esac
stamp() { echo "$1/.done.$2"; }
# the stamp of the stage that made a set's features: stage 2 for the augmented set, else stage 1
features_stamp() { if [ "$1" != "$train_set" ] && [ "$data/$1" = "$train_data" ]; then stamp $data/$1 augment; else stamp $data/$1 fbank; fi; }

# Every stage goes through utils/stamped.sh: it is skipped while its stamp records the
# same content of every input listed after the stamp (tables, trials lists, configs and
# the stamps of the stages it reads from) and the same --param values, and it holds an
# exclusive lock on its output dir while it runs. Stages run in the background of this
# shell so that a signal to run.sh alone (timeout, kill PID) is passed on at once:
# stamped.sh passes it to the queue script, which stops every job.
dry_ledger=
if $dry_run; then dry_ledger=$(mktemp); trap 'rm -f "$dry_ledger"' EXIT; fi
stage_pid=
on_signal() {
  trap - INT TERM HUP
  echo "$0: got SIG$1; stopping the running stage" >&2
  if [ -n "$stage_pid" ]; then kill -TERM "$stage_pid" 2>/dev/null || true; wait "$stage_pid" 2>/dev/null || true; fi
  for p in "${bg_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${bg_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  exit $((128 + $2))
}
trap 'on_signal INT 2' INT; trap 'on_signal TERM 15' TERM; trap 'on_signal HUP 1' HUP
stamped() {
  utils/stamped.sh --force $force --lock-wait $lock_wait ${dry_ledger:+--dry-run "$dry_ledger"} "$@" &
  stage_pid=$!
  wait $stage_pid || { rc=$?; stage_pid=; exit $rc; }
  stage_pid=
}
# Stage 3 with --train-jobs N > 1: up to N systems train at once (bg_slot N waits for a
# free slot, stamped_bg starts one in it); wait_bg waits for the rest. The first failure stops the
# others and fails the stage, as one failed job does in a queue script's array.
bg_pids=()
bg_rc=0
_bg_reap() {  # wait for one running system; remember a failure
  local done_pid rc=0
  wait -n -p done_pid "${bg_pids[@]}" || rc=$?
  bg_pids=($(for p in "${bg_pids[@]}"; do [ "$p" = "$done_pid" ] || echo $p; done))
  if [ $rc -ne 0 ] && [ $bg_rc -eq 0 ]; then
    bg_rc=$rc
    echo "$0: a stage-3 job failed (exit $rc); stopping the others" >&2
    for p in "${bg_pids[@]}"; do kill -TERM $p 2>/dev/null || true; done
  fi
}
bg_slot() {
  while [ ${#bg_pids[@]} -ge $1 ]; do _bg_reap; done
  [ $bg_rc -eq 0 ] || wait_bg
}
stamped_bg() {
  utils/stamped.sh --force $force --lock-wait $lock_wait "$@" &
  bg_pids+=($!)
}
wait_bg() {
  while [ ${#bg_pids[@]} -gt 0 ]; do _bg_reap; done
  [ $bg_rc -eq 0 ] || exit $bg_rc
}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  echo "stage 0: data preparation ($corpus) -> $data/$train_set $data/$test_set"
  outputs0=(); for out in $corpus_outputs; do outputs0+=(--output $data/$out); done
  stamped --stage 0 ${outputs0[@]+"${outputs0[@]}"} \
      --param corpus=$corpus --param seed=$seed --param synth_size=$synth_size \
      --param root="$root0" ${synth_num_train_spk:+--param synth_num_train_spk=$synth_num_train_spk} \
      "$(stamp $data stage0_$corpus)" $corpus_inputs -- \
    local/prepare_corpus.sh --corpus $corpus --data $data --seed $seed --nj $nj --synth-size $synth_size \
      ${synth_num_train_spk:+--synth-num-train-spk $synth_num_train_spk} ${root_args[@]+"${root_args[@]}"}
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  sets1="$train_set $test_set"
  if $online; then   # online: training and extraction make the features from the audio; none are stored
    sets1=
    echo "stage 1: online: no stored features (training and extraction compute them from the audio)"
  else
    echo "stage 1: fbank features (Lhotse Fbank -> kaldiio ark/scp) for $sets1"
  fi
  for set in $sets1; do
    stamped --stage 1 --output={$fbank_dir/$set,$data/$set/{feats.scp,utt2num_frames,vad.scp}} \
        ${feats_params[@]+"${feats_params[@]}"} \
        "$(stamp $data/$set fbank)" "$(stamp $data stage0_$corpus)" conf/fbank.yaml \
        $data/$set/{wav.scp,segments,utt2spk,spk2utt,aug.scp} -- \
      pyspk fbank --config conf/fbank.yaml --compress-feats $compress_feats --nj $nj --cmd "$cmd" \
        $data/$set $fbank_dir/$set
  done
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ] && $online; then
  if $shards; then
    echo "stage 2: shards of $train_set ($shard_size utterances each) -> $train_data"
    stamped --stage 2 --output $train_data --param seed=$seed --param shard_size=$shard_size \
        "$(stamp $train_data shards)" "$(stamp $data stage0_$corpus)" $data/$train_set/{wav.scp,segments,utt2spk,spk2utt} -- \
      pyspk shards --shard-size $shard_size --seed $seed --nj $nj $data/$train_set $train_data
  else
    echo "stage 2: online: training augments $train_set on the fly ($augment_config); nothing to do here"
  fi
elif [ $stage -le 2 ] && [ $stop_stage -ge 2 ] && $augment; then
  echo "stage 2: augmentation of $train_set ($augment_config) and their fbank -> $train_data"
  stamped --stage 2 --output $train_data --output "$fbank_dir/${train_set}_*" \
      --param seed=$seed --param musan_root="$musan_root" --param rirs_root="$rirs_root" \
      ${augment_params[@]+"${augment_params[@]}"} \
      "$(stamp $train_data augment)" $data/$train_set $augment_config conf/fbank.yaml -- \
    pyspk augment --config $augment_config --fbank-config conf/fbank.yaml --nj $nj --cmd "$cmd" --seed $seed \
      --subset $augment_subset --compress-feats $compress_feats \
      ${musan_root:+--musan-root "$musan_root"} ${rirs_root:+--rirs-root "$rirs_root"} \
      $data/$train_set $fbank_dir $train_data
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  jobs3=$train_jobs
  if [ $jobs3 = auto ]; then
    jobs3=1
    if [ "$nproc" = 1 ] && [[ "$train_cmd" == *run.pl* ]] && ! command -v nvidia-smi >/dev/null; then jobs3=2; fi
  fi
  nsys=$(echo $systems | wc -w)
  [ $jobs3 -le $nsys ] || jobs3=$nsys
  $dry_run && jobs3=1
  if [ $jobs3 -gt 1 ] && (( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501 )); then
    echo "$0: stage 3: --train-jobs $jobs3 needs bash >= 5.1 (wait -n -p); training one system at a time" >&2
    jobs3=1
  fi
  # Two systems side by side on one core each: each one's start-up, table reading, compile and
  # checkpoints overlap with the other's steps (docs/speed.md);
  # OMP_NUM_THREADS is what torch takes as its thread count. On a cluster (slurm.pl, queue.pl)
  # each job gets its own node's cores.
  threads3=
  if [ $jobs3 -gt 1 ] && [ -z "${OMP_NUM_THREADS:-}" ] && [[ "$train_cmd" != *slurm.pl* && "$train_cmd" != *queue.pl* ]]; then
    threads3=$(( $(command nproc 2>/dev/null || echo 2) / jobs3 )); [ $threads3 -ge 1 ] || threads3=1
  fi
  restart3=; [ $force = true ] && restart3=--restart
  # a system's inputs: its config and the configs it builds on (base: base.yaml), so that an
  # edit of a shared base retrains every system on it
  declare -A config3=()
  for sys in $systems; do config3[$sys]=$(pyspk show-config --files "$(system_config $sys)") || exit 1; done
  t0_3=$(mktemp)   # training logs newer than this were written by this run
  # online from the clean set: its tables are the input, not the directory, whose feature stamp
  # (from an earlier offline run) training does not read
  inputs3=($train_data)
  $online && ! $shards && inputs3=($train_data/{wav.scp,segments,utt2spk,spk2utt})
  online3=(); $online && online3=($augment_config conf/fbank.yaml "$(stamp $data stage0_$corpus)")
  $shards && online3+=("$(stamp $train_data shards)")
  # train3 OUT SYS [INPUT ...] -- [ARG ...]: train system SYS's config into $exp/OUT, stamped (in the
  # background with --train-jobs > 1: take a slot first); the INPUTs are read besides the config
  # and the training data, the ARGs go to pyspk.bin.train
  train3() {
    local out=$1 sys=$2 extra_in=()
    shift 2
    while [ "$1" != -- ]; do extra_in+=("$1"); shift; done
    shift
    local args=(--stage 3 --param seed=$seed --param nproc=$nproc --param online="${online_args[*]}"
      "$(stamp $exp/$out train)" ${extra_in[@]+"${extra_in[@]}"} ${config3[$sys]} ${inputs3[@]}
      ${online3[@]+"${online3[@]}"} --
      env ${threads3:+OMP_NUM_THREADS=$threads3} $train_cmd $exp/$out/log/train.log
        utils/torchrun.sh --nproc $nproc pyspk.bin.train --config "$(system_config $sys)" --seed $seed
          --train-dir $train_data --exp-dir $exp/$out "$@" ${restart3} ${online_args[@]+"${online_args[@]}"})
    if [ $jobs3 -gt 1 ]; then stamped_bg "${args[@]}"; else stamped "${args[@]}"; fi
  }
  for sys in $systems; do
    [ $jobs3 -gt 1 ] && bg_slot $jobs3
    echo "stage 3: training $sys ($(system_config $sys)) on $train_data -> $exp/$sys${threads3:+ ($threads3 thread(s), $jobs3 systems at once)}"
    train3 $sys $sys --
  done
  wait_bg
  # large-margin fine-tuning: from each trained system's last checkpoint, into <system>_lmft
  lmft_systems=; $lmft && lmft_systems=$systems
  for sys in $lmft_systems; do
    [ $jobs3 -gt 1 ] && bg_slot $jobs3
    echo "stage 3: large-margin fine-tuning of $sys ($lmft_config) -> $exp/${sys}_lmft"
    train3 ${sys}_lmft $sys "$(stamp $exp/$sys train)" $lmft_config -- --lmft $lmft_config --lmft-from $exp/$sys
  done
  wait_bg
  # Training runs under the queue script, so its warnings (a sampler that repeats utterances,
  # utterances without speech left out) are in train.log; repeat those of this run here.
  for sys in $eval_systems; do
    log3=$exp/$sys/log/train.log
    if [ -f "$log3" ] && [ "$log3" -nt "$t0_3" ]; then grep -h "WARNING" "$log3" | sed "s|^|$sys: |" >&2 || true; fi
  done
  rm -f "$t0_3"
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for sys in $eval_systems; do
    for set in $backend_name $test_set; do
      echo "stage 4: x-vectors of $set with $sys -> $exp/$sys/xvectors_$set"
      if $online; then   # no stored features: the jobs make them from the audio
        stamped --stage 4 "$(stamp $exp/$sys/xvectors_$set extract)" "$(stamp $exp/$sys train)" $exp/$sys/final.pt \
            "$(stamp $data stage0_$corpus)" conf/fbank.yaml $data/$set/{wav.scp,segments,utt2spk,spk2utt} -- \
          pyspk extract --nj $nj --cmd "$cmd" --fbank-config conf/fbank.yaml $exp/$sys/final.pt $data/$set \
            $exp/$sys/xvectors_$set
        continue
      fi
      stamped --stage 4 "$(stamp $exp/$sys/xvectors_$set extract)" "$(stamp $exp/$sys train)" $exp/$sys/final.pt \
          "$(features_stamp $set)" $data/$set/{feats.scp,utt2num_frames,vad.scp,utt2spk,spk2utt} -- \
        pyspk extract --nj $nj --cmd "$cmd" $exp/$sys/final.pt $data/$set $exp/$sys/xvectors_$set
    done
  done
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  for sys in $eval_systems; do
    echo "stage 5: back-ends (mean, LDA, PLDA, AS-norm cohort) for $sys -> $exp/$sys/backend"
    stamped --stage 5 "$(stamp $exp/$sys/backend backend)" $exp/$sys/xvectors_$backend_name \
        $data/$backend_name/{utt2spk,spk2utt} conf/backend.yaml -- \
      pyspk backend --config conf/backend.yaml $exp/$sys/xvectors_$backend_name $data/$backend_name $exp/$sys/backend
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  for sys in $eval_systems; do
    echo "stage 6: scoring $data/$test_set/trials* with $sys (cosine, AS-norm, PLDA) -> $exp/$sys/scores"
    stamped --stage 6 "$(stamp $exp/$sys/scores score)" $exp/$sys/backend $exp/$sys/xvectors_$test_set \
        "$data/$test_set/trials*" -- \
      pyspk score --backend-dir $exp/$sys/backend --xvector-dir $exp/$sys/xvectors_$test_set \
        --data-dir $data/$test_set --out-dir $exp/$sys/scores
  done
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  echo "stage 7: report -> $exp/results.md $exp/results.json $exp/det.png"
  report_inputs=()
  for sys in $eval_systems; do report_inputs+=($exp/$sys/scores $exp/$sys/config.yaml $exp/$sys/train.csv); done
  stamped --stage 7 --param systems="$eval_systems" "$(stamp $exp report)" "${report_inputs[@]}" -- \
    pyspk report --exp-dir $exp --systems "$eval_systems" --command "$cmdline" --out $exp/results.md
fi
if $dry_run; then echo "$0: dry run, nothing was run (stages $stage..$stop_stage)"; else echo "$0: done (stages $stage..$stop_stage)"; fi
