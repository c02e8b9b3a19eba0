#!/usr/bin/env bash
# Launch a pyspk training module on one or more processes.
#
#   utils/torchrun.sh [--nproc N] [--nnodes N] [--rdzv-endpoint HOST:PORT] [--rdzv-id ID] MODULE [ARGS...]
#
# --nproc 1 (and one node): runs `python -m MODULE ARGS` directly (no rendezvous).
# Otherwise: `torchrun --nproc-per-node N -m MODULE ARGS`, standalone on one node,
# or with a c10d rendezvous at --rdzv-endpoint for several nodes. Each option can
# also come from the environment: NPROC, NNODES, RDZV_ENDPOINT, RDZV_ID.
#
# Multi-node under Slurm (one task per node, the first node hosts the rendezvous):
#   head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
#   srun --nodes 2 --ntasks-per-node 1 --gpus-per-node 4 \
#     utils/torchrun.sh --nproc 4 --nnodes 2 --rdzv-endpoint $head:29500 --rdzv-id $SLURM_JOB_ID \
#       pyspk.bin.train --config conf/voxceleb2/proposed.yaml --train-dir ... --exp-dir ...
set -euo pipefail
nproc=${NPROC:-1}
nnodes=${NNODES:-1}
rdzv_endpoint=${RDZV_ENDPOINT:-}
rdzv_id=${RDZV_ID:-pyspk}
while [ $# -gt 0 ]; do
  case $1 in
    --nproc|--nproc-per-node) nproc=$2; shift 2 ;;
    --nnodes) nnodes=$2; shift 2 ;;
    --rdzv-endpoint) rdzv_endpoint=$2; shift 2 ;;
    --rdzv-id) rdzv_id=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    --*) echo "$0: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--nproc N] [--nnodes N] [--rdzv-endpoint HOST:PORT] MODULE [ARGS...]" >&2; exit 2; }
module=$1; shift
if [ "$nproc" = 1 ] && [ "$nnodes" = 1 ]; then
  exec python -m "$module" "$@"
fi
if [ "$nnodes" = 1 ] && [ -z "$rdzv_endpoint" ]; then
  exec torchrun --standalone --nnodes 1 --nproc-per-node "$nproc" -m "$module" "$@"
fi
[ -n "$rdzv_endpoint" ] || { echo "$0: --nnodes $nnodes needs --rdzv-endpoint HOST:PORT" >&2; exit 2; }
exec torchrun --nnodes "$nnodes" --nproc-per-node "$nproc" --rdzv-backend c10d \
  --rdzv-endpoint "$rdzv_endpoint" --rdzv-id "$rdzv_id" -m "$module" "$@"
