#!/usr/bin/env bash
# Run a stage once: skip it while its stamp records the same content fingerprint of every
# input; otherwise run it under an exclusive lock of the stamp's directory and write the
# stamp last, only if it succeeded. See pyspk/bin/stamped.py for the whole contract:
#
#   utils/stamped.sh [--force true|false] [--param NAME=VALUE]... [--lock-wait SECONDS]
#                    [--dry-run LEDGER] STAMP [INPUT ...] -- COMMAND [ARG ...]
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
exec python -m pyspk.bin.stamped "$@"
