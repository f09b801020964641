#!/usr/bin/env bash
# SIGUSR1 to this job's training ranks on this node (run on every node of the allocation by
# the batch script's USR1 trap, deploy/slurm/common.sh):
#
#   signal-ranks.sh JOB_ID
#
# A rank is a process of this user whose command line is python [-flags] .../jobs/train.py
# ..., anchored so that the launchers around the ranks (horovodrun and torchrun are python
# too, srun, ssh, the shells ssh starts) never match: SIGUSR1's default action would end
# them; and whose environment has SLURM_JOB_ID=JOB_ID (horovodrun passes the batch
# environment on to the ranks it starts over ssh, srun to torchrun's), so another job's
# ranks on a shared node are left alone.
set -uo pipefail
JOB="${1:?usage: signal-ranks.sh JOB_ID}"
RANK_PATTERN='^[^ ]*python[^ ]*( -[^ ]+)* [^ ]*jobs/train\.py( |$)'
sent=0
for pid in $(pgrep -u "$(id -u)" -f "$RANK_PATTERN"); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "SLURM_JOB_ID=$JOB" && kill -USR1 "$pid" 2>/dev/null; then
        echo "$(hostname): SIGUSR1 to rank process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
        sent=$((sent + 1))
    fi
done
echo "$(hostname): SIGUSR1 to $sent rank process(es) of job $JOB"
