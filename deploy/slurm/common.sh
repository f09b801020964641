# shellcheck shell=bash
# Shared by deploy/slurm/train.sbatch and train-torch.sbatch (sourced, not run): which run
# to train after a requeue, and the pre-emption warning turned into a checkpoint.
#
# Needs PYTHON and the allocation's SLURM_* variables; the caller has cd'ed to the checkout.

PREEMPTED=0
TRAPS=0

# plan_run ENGINE DEFAULT_NAME CONFIG [key=value ...]: sets RUN_ARGS to run.name=... and,
# when this is a restart and the run has a checkpoint under the resolved run.root (a
# path or a URI), --resume. See deploy/slurm/run_plan.py.
plan_run() {
    local engine=$1 name=$2 config=$3 plan
    shift 3
    plan=$("$PYTHON" -m pipeline train --config "$config" "$@" --print-config \
        | "$PYTHON" deploy/slurm/run_plan.py --engine "$engine" --name "$name" --restart "${SLURM_RESTART_COUNT:-0}")
    mapfile -t RUN_ARGS <<<"$plan"
    if [[ " ${RUN_ARGS[*]} " == *" --resume "* ]]; then
        echo "requeued (restart ${SLURM_RESTART_COUNT}): resuming ${RUN_ARGS[0]#run.name=} from its latest checkpoint"
    elif [[ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]]; then
        echo "requeued (restart ${SLURM_RESTART_COUNT}): no checkpoint yet; starting run ${RUN_ARGS[0]#run.name=}"
    fi
}

# The USR1 trap (#SBATCH --signal=B:USR1@120 reaches this batch shell only): pass SIGUSR1
# on to the training ranks on every node. Each rank finishes its step; within
# train.preemption_check_steps steps they agree, save a checkpoint and exit with status 75.
on_usr1() {
    TRAPS=$((TRAPS + 1))
    ((PREEMPTED)) && return 0
    PREEMPTED=1
    echo "$(date -u +%FT%TZ) SIGUSR1 (time limit or pre-emption near): every rank saves a checkpoint and stops"
    # --overlap: the ranks' own step (train-torch.sbatch) holds every CPU; this one shares them.
    srun --overlap --nodes="$SLURM_JOB_NUM_NODES" --ntasks="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 \
        "$PWD/deploy/slurm/signal-ranks.sh" "$SLURM_JOB_ID" || echo "warning: the step passing SIGUSR1 on failed"
}

# run_launcher COMMAND...: runs the launcher in the background (so the trap runs while it
# does), waits for it, and requeues the job when the warning came. Exits with the
# launcher's status otherwise.
run_launcher() {
    local status=0
    if ((PREEMPTED)); then  # the warning came before the ranks started
        requeue "not started"
    fi
    "$@" &
    wait_for $! || status=$?
    # A run that finished anyway (the warning came after its last check) is not requeued.
    ((PREEMPTED && status != 0)) && requeue "$status"
    ((status != 0)) && failed "$1" "$status"
    exit "$status"
}

# failed LAUNCHER STATUS: the job's last line, on stderr: why it failed and the resubmit that
# resumes it. With SSH_PROBE=1 (train.sbatch: its ranks are reached over ssh) a node of the
# allocation where nothing answers on the ssh port within 3 s is named as lost: whichever
# process noticed the loss first (a rank, or horovodrun ending the others), the line says
# the same. Needs SUBMITTED (the script and its arguments) and RUN_ARGS (plan_run).
failed() {
    local launcher status=$2 host lost=() resubmit
    launcher=$(basename "$1")
    if [[ "${SSH_PROBE:-0}" == 1 ]]; then
        for host in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do
            timeout 3 bash -c "exec 3<>/dev/tcp/$host/${SSH_PORT:-22}" 2>/dev/null || lost+=("$host")
        done
    fi
    local again=() arg
    for arg in "${SUBMITTED[@]}"; do  # the run's name and --resume come from this job's plan
        [[ "$arg" == run.name=* || "$arg" == --resume ]] || again+=("$arg")
    done
    resubmit="$(printf '%q ' "${again[@]}" "${RUN_ARGS[0]}")--resume"
    if ((${#lost[@]})); then
        local left=$((SLURM_JOB_NUM_NODES - ${#lost[@]})) names
        names=$(IFS=,; echo "${lost[*]}")
        echo "error: node(s) $names lost during job $SLURM_JOB_ID (nothing answers on their ssh port; $launcher exited with status $status); resume from the run's last checkpoint on the other nodes: sbatch --exclude=$names --nodes=$((left > 0 ? left : 1)) $resubmit" >&2
    else
        echo "error: job $SLURM_JOB_ID failed: $launcher exited with status $status (a rank's own error, or Slurm's node-failure message, is above); once that is fixed, resume from the run's last checkpoint: sbatch $resubmit" >&2
    fi
}

# wait_for PID: its exit status. `wait` returns early (status > 128) when the USR1 trap
# runs; the launcher is still running then (or its status is still kept), so wait again.
wait_for() {
    local pid=$1 traps status
    while :; do
        traps=$TRAPS
        status=0
        wait "$pid" || status=$?
        if ((TRAPS == traps || status <= 128)); then
            return "$status"
        fi
    done
}

requeue() {
    echo "launcher: $1; requeueing job $SLURM_JOB_ID (the restart resumes from the run's latest checkpoint)"
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        echo "error: scontrol requeue $SLURM_JOB_ID failed; requeue it by hand (scontrol requeue $SLURM_JOB_ID; a finished job can be requeued too) and it resumes from the checkpoint" >&2
        exit 75
    fi
    exit 0
}
