#!/usr/bin/env bash
# What dist_train.sh and dist_test.sh share: torchrun over GPUS processes on
# each of NNODES machines (NODE_RANK, MASTER_ADDR, PORT from the
# environment, as mmdet's scripts). Usage: torchrun.sh GPUS SCRIPT [ARGS...]
GPUS=$1
SCRIPT=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$ROOT/.venv/bin/python" ] && PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

PYTHONPATH="$ROOT:$PYTHONPATH" exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" "$ROOT/tools/$SCRIPT" "${@:3}" --launcher pytorch
