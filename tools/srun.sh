#!/usr/bin/env bash
# What slurm_train.sh and slurm_test.sh share: srun over GPUS tasks
# (GPUS_PER_NODE per node, CPUS_PER_TASK each, SRUN_ARGS passed on).
# Usage: srun.sh PARTITION JOB_NAME SCRIPT [ARGS...]
set -x
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GPUS_PER_NODE=${GPUS_PER_NODE:-8}

PYTHONPATH="$ROOT:$PYTHONPATH" \
srun -p "$1" --job-name="$2" --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="${GPUS:-8}" --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "${PYTHON:-python}" -u "$ROOT/tools/$3" "${@:4}" --launcher=slurm
