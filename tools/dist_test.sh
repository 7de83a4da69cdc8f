#!/usr/bin/env bash
# Distributed testing: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each.
USAGE='tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]' exec "$(dirname "$0")/torchrun.sh" "$3" test.py "$1" "$2" "${@:4}"
