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
    exit "$status"
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
