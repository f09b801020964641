#!/usr/bin/env bash
# An MPIJob launcher's command: wait until every worker in the operator's hostfile answers
# ssh (its pod is scheduled, its DNS name resolves, its sshd listens), then run the given
# command (horovodrun ...). The operator may start the launcher before the workers
# (launcherCreationPolicy AtStartup, or a worker restarted), and horovodrun fails on the
# first host it cannot reach.
#
#   mpi-launcher.sh horovodrun -np 4 --hostfile /etc/mpi/hostfile -p 2222 --gloo python jobs/train.py ...
#
# Environment: MPI_HOSTFILE (/etc/mpi/hostfile; lines "host slots=N" or "host:N"),
# SSH_PORT (2222), WORKERS_TIMEOUT_S (300).
set -euo pipefail
HOSTFILE="${MPI_HOSTFILE:-/etc/mpi/hostfile}"
PORT="${SSH_PORT:-2222}"
TIMEOUT="${WORKERS_TIMEOUT_S:-300}"
(($#)) || { echo "usage: mpi-launcher.sh COMMAND [ARGS...]" >&2; exit 2; }
[[ -r "$HOSTFILE" ]] || { echo "error: no hostfile $HOSTFILE (the MPI Operator mounts it at /etc/mpi/hostfile; set MPI_HOSTFILE elsewhere)" >&2; exit 2; }

mapfile -t hosts < <(awk 'NF && $1 !~ /^#/ {sub(/:.*/, "", $1); print $1}' "$HOSTFILE")
for host in "${hosts[@]}"; do
    until ssh -p "$PORT" -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=no \
          -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "$host" true </dev/null; do
        if ((SECONDS >= TIMEOUT)); then
            echo "error: worker $host did not answer ssh on port $PORT within ${TIMEOUT}s; see its pod's log (kubectl logs) and events" >&2
            exit 1
        fi
        sleep 2
    done
    echo "launcher: worker $host is reachable"
done
exec "$@"
