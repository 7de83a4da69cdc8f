#!/usr/bin/env bash
# tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options]
# GPUS (default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS.
exec "$(dirname "$0")/srun.sh" "$1" "$2" test.py "$3" "$4" "${@:5}"
