#!/usr/bin/env bash
# Distributed training: tools/dist_train.sh CONFIG GPUS [train.py options]
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each.
# Without CUDA, GPUS processes train with DDP over gloo on the CPU.
USAGE='tools/dist_train.sh CONFIG GPUS [train.py options]' exec "$(dirname "$0")/torchrun.sh" "$2" train.py "$1" "${@:3}"
