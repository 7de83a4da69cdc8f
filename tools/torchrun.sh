#!/usr/bin/env bash
# What dist_train.sh and dist_test.sh share: torchrun over GPUS processes on
# each of NNODES machines (NODE_RANK, MASTER_ADDR, PORT from the
# environment, as mmdet's scripts). Usage: torchrun.sh GPUS SCRIPT [ARGS...]
# A preempted training run (SIGTERM, Ctrl-C) exits with status 75, as
# tools/train.py does, once its processes have saved their checkpoint.
GPUS=$1
SCRIPT=$2
if ! [[ "$GPUS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: GPUS must be a whole number above 0, got '$GPUS'; usage: ${USAGE:-torchrun.sh GPUS SCRIPT [ARGS...]}" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$ROOT/.venv/bin/python" ] && PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

FLAG=$(mktemp -u "${TMPDIR:-/tmp}/mmhire-preempted.XXXXXX")
trap ':' TERM INT  # wait for torchrun and the checkpoint its workers write
MMHIRE_PREEMPTED_FLAG=$FLAG PYTHONPATH="$ROOT:$PYTHONPATH" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" "$ROOT/tools/$SCRIPT" "${@:3}" --launcher pytorch
STATUS=$?
if [ -e "$FLAG" ]; then
  rm -f "$FLAG"
  exit 75
fi
exit $STATUS
