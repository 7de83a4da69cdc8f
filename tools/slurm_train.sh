#!/usr/bin/env bash
# tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]
# GPUS (default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS.
#
# Preemption: on SIGTERM train.py finishes the iteration in flight, saves
# WORK_DIR/iter_N_preempted.pth and exits with status 75. Ask Slurm for the
# signal early enough to finish an iteration and write a checkpoint, and
# resume with --resume, which continues inside the epoch:
#   SRUN_ARGS="--signal=TERM@120" tools/slurm_train.sh ... --resume
# In an sbatch script, requeue the job when the run was preempted:
#   #SBATCH --signal=TERM@120 --requeue --open-mode=append
#   tools/slurm_train.sh ... --resume; [ $? -eq 75 ] && scontrol requeue "$SLURM_JOB_ID"
exec "$(dirname "$0")/srun.sh" "$1" "$2" train.py "$3" --work-dir="$4" "${@:5}"
