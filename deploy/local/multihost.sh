#!/usr/bin/env bash
# A multi-host rig on this one machine: every "host" is a network namespace with its own
# address (198.18.0.0/24, the benchmarking range, no route off the machine), hostname,
# /etc/hosts and private working directory (/tmp/node-work); hosts share no writable disk,
# only the object store. The stand for everything "across nodes".
#
#   deploy/local/multihost.sh up          network + object store + Spark standalone + sshd
#   deploy/local/multihost.sh slurm-up    add a Slurm cluster to a running rig (or RIG_SERVICES=... slurm)
#   deploy/local/multihost.sh slurm-down  stop Slurm (every job step too) and munge, keep the rest
#   deploy/local/multihost.sh down        stop every process in the rig's namespaces, delete them
#   deploy/local/multihost.sh status      namespaces, routes and services
#   deploy/local/multihost.sh exec NODE CMD...   run CMD on NODE (store, n1, n2, ...)
#   deploy/local/multihost.sh addr NODE   print NODE's address
#   deploy/local/multihost.sh kill NODE   SIGKILL every process on NODE (a lost host)
#   deploy/local/multihost.sh stop NODE   stop every process on NODE (TERM, then KILL)
#   deploy/local/multihost.sh start NODE store|spark-worker|sshd|munged|slurmd   start a service again
#   deploy/local/multihost.sh env         print the variables a client on a node uses (no secrets)
#
# Settings (environment):
#   RIG_NAME      namespace prefix and default state dir name   (default: pipeline-rig)
#   RIG_DIR       state: node dirs, logs, pids, keys, configs   (default: /tmp/$RIG_NAME)
#   RIG_NODES     compute nodes n1..nN                          (default: 3)
#   RIG_SERVICES  what `up` starts: store spark ssh slurm       (default: store spark ssh)
#   RIG_KEEP      1 keeps RIG_DIR (logs) after `down`
#   PYTHON        the interpreter (and venv) every node uses    (default: .venv/bin/python)
#
# Addresses: bridge in namespace $RIG_NAME-br (no address), store 198.18.0.10, nK
# 198.18.0.(10+K); every node's interface is eth0, its only route the /24 link route.
# Services: SeaweedFS S3 on store:8333 (bucket "rig-data", generated credentials);
# Spark master on n1:7077 (UI n1:8080), one 1-core worker per node, spark.authenticate
# with a generated secret; sshd on every node (key-only, keys generated here).
# Slurm (service "slurm", Debian's slurm-wlm + munge): munged on every node (as the munge
# user, the shared key /etc/munge/munge.key), slurmctld on n1, slurmd on every node, one
# slurm.conf ($RIG_DIR/slurm, seen as /etc/slurm on every node), partition "rig" of all
# nodes, 1 CPU each. Client commands (sinfo, sbatch, scontrol) run inside a node:
#   deploy/local/multihost.sh exec n1 sbatch -o /abs/path/%j.out ...
# Nodes get the store's credentials and the Spark settings in their environment, as
# cluster nodes get them from their instance role and spark-defaults.conf.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NAME="${RIG_NAME:-pipeline-rig}"
DIR="${RIG_DIR:-/tmp/$NAME}"
NODES="${RIG_NODES:-3}"
SERVICES="${RIG_SERVICES:-store spark ssh}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SUBNET=198.18.0
BUCKET=rig-data
WORK=/tmp/node-work

die() { echo "multihost: ERROR: $*" >&2; exit 1; }
say() { echo "multihost: $*" >&2; }

hosts() { echo store; for i in $(seq 1 "$NODES"); do echo "n$i"; done; }
addr() {
  case "$1" in
    store) echo "$SUBNET.10" ;;
    n[0-9]*) echo "$SUBNET.$((10 + ${1#n}))" ;;
    *) die "unknown node '$1'; nodes are: $(hosts | tr '\n' ' ')" ;;
  esac
}
ns() { echo "$NAME-$1"; }

require_root() {
  [[ "$(id -u)" == 0 ]] || die "the rig needs root (network namespaces, mounts); run as root"
  if ! { command -v ip >/dev/null 2>&1 && ip netns list >/dev/null 2>&1; }; then
    die "'ip netns' is unavailable; install iproute2 (make setup does) and run where network namespaces are allowed"
  fi
  command -v unshare >/dev/null 2>&1 || die "unshare (util-linux) is missing"
}

# Run "$@" on NODE: its network namespace, plus a private UTS and mount namespace giving
# it its hostname, the rig's /etc/hosts (namespaces have no DNS), its own /tmp/node-work,
# and no view of the other nodes' directories.
node_run() {
  local node=$1
  shift
  [[ -d "$DIR/nodes/$node" ]] || die "node '$node' is not up (no $DIR/nodes/$node); run: $0 up"
  # shellcheck disable=SC2016  # expanded by the inner shell
  ip netns exec "$(ns "$node")" unshare --uts --mount --propagation private \
    env RIG_NODE="$node" RIG_ADDR="$(addr "$node")" RIG_DIR="$DIR" WORK="$WORK" \
    sh -c '
      set -e
      hostname "$RIG_NODE"
      mount --bind "$RIG_DIR/hosts" /etc/hosts
      mkdir -p "$WORK" /root/.ssh
      mount --bind "$RIG_DIR/nodes/$RIG_NODE" "$WORK"
      mount --bind "$RIG_DIR/ssh/client" /root/.ssh
      [ ! -d /etc/slurm ] || [ ! -d "$RIG_DIR/slurm" ] || mount --bind "$RIG_DIR/slurm" /etc/slurm
      mount -t tmpfs -o ro,size=16k rig-hidden "$RIG_DIR/nodes"
      set -a
      . "$RIG_DIR/node.env"
      set +a
      export SPARK_LOCAL_IP="$RIG_ADDR" GLOO_SOCKET_IFNAME=eth0 HOSTNAME="$RIG_NODE"
      exec "$@"' sh "$@"
}

# start_service NODE NAME CMD...: run in the background on NODE, pid in $DIR/pids.
start_service() {
  local node=$1 name=$2
  shift 2
  node_run "$node" "$@" >"$DIR/logs/$node-$name.log" 2>&1 &
  echo $! >"$DIR/pids/$node-$name.pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out waiting for $what (logs in $DIR/logs)"
    sleep 0.3
  done
}

port_open_on() {  # port_open_on NODE ADDR PORT
  ip netns exec "$(ns "$1")" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null
}

secret() { "$PYTHON" -c 'import secrets; print(secrets.token_hex(24))'; }

network_up() {
  local h ip_addr routes
  ip netns add "$(ns br)"
  ip -n "$(ns br)" link add br0 type bridge
  ip -n "$(ns br)" link set br0 up
  for h in $(hosts); do
    ip netns add "$(ns "$h")"
    ip link add eth0 netns "$(ns "$h")" type veth peer name "v-$h" netns "$(ns br)"
    ip -n "$(ns br)" link set "v-$h" master br0
    ip -n "$(ns br)" link set "v-$h" up
    ip_addr=$(addr "$h")
    ip -n "$(ns "$h")" addr add "$ip_addr/24" dev eth0
    ip -n "$(ns "$h")" link set eth0 up
    ip -n "$(ns "$h")" link set lo up
    routes=$(ip -n "$(ns "$h")" route show table all | grep -v -E '^(local|broadcast|multicast|anycast) |^fe80::|^::1|^ff00::' || true)
    [[ "$routes" == "$SUBNET.0/24 dev eth0 proto kernel scope link src $ip_addr " || "$routes" == "$SUBNET.0/24 dev eth0 proto kernel scope link src $ip_addr" ]] \
      || die "node $h has routes other than the rig's /24: $routes"
  done
}

files_up() {
  local h
  mkdir -p "$DIR"/{logs,pids,nodes,spark-conf,ssh/client,slurm}
  chmod 700 "$DIR"
  { echo "127.0.0.1 localhost"; for h in $(hosts); do echo "$(addr "$h") $h"; done; } >"$DIR/hosts"
  for h in $(hosts); do mkdir -p "$DIR/nodes/$h"/{spark-work,spark-local,spark-events,weed}; done
  local key spark_secret pyspark_home
  key=$(secret)
  spark_secret=$(secret)
  pyspark_home=$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  (
    umask 077
    cat >"$DIR/node.env" <<EOF
AWS_ENDPOINT_URL=http://$(addr store):8333
AWS_ACCESS_KEY_ID=rig
AWS_SECRET_ACCESS_KEY=$key
AWS_REGION=us-east-1
AWS_EC2_METADATA_DISABLED=true
SPARK_HOME=$pyspark_home
SPARK_CONF_DIR=$DIR/spark-conf
PYSPARK_PYTHON=$PYTHON
PYSPARK_DRIVER_PYTHON=$PYTHON
PATH=$(dirname "$PYTHON"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
    cat >"$DIR/s3.json" <<EOF
{"identities": [{"name": "rig", "credentials": [{"accessKey": "rig", "secretKey": "$key"}],
                 "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
    # spark-defaults.conf: what every driver, master and worker on the rig reads. Jobs wait
    # for every worker's executor before their first task (as a cluster sized for the job):
    # the ratio counts against spark.cores.max (without it standalone expects 0 cores and
    # never waits), and no locality wait, so reduce tasks go to free executors on every
    # host instead of queuing for the one that holds the map output.
    cat >"$DIR/spark-conf/spark-defaults.conf" <<EOF
spark.master                     spark://$(addr n1):7077
spark.authenticate               true
spark.authenticate.secret        $spark_secret
spark.eventLog.enabled           true
spark.eventLog.dir               file://$WORK/spark-events
spark.eventLog.compress          false
spark.eventLog.rolling.enabled   false
spark.ui.showConsoleProgress     false
spark.sql.execution.arrow.pyspark.enabled true
spark.scheduler.minRegisteredResourcesRatio 1.0
spark.scheduler.maxRegisteredResourcesWaitingTime 60s
spark.cores.max                  $NODES
spark.locality.wait              0s
EOF
  )
}

store_up() {
  start_weed
  wait_for 60 "bucket $BUCKET" node_run store "$PYTHON" -c "
import sys; sys.path.insert(0, '$ROOT')
from pipeline import storage
assert storage.is_dir('s3://$BUCKET')"
}

start_weed() {
  start_service store weed "$(dirname "$PYTHON")/weed" -logdir="$WORK/weed" mini -dir="$WORK/weed" \
    -ip="$(addr store)" -ip.bind="$(addr store)" -admin.ui=false -webdav=false -master.telemetry=false \
    -bucket="$BUCKET" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$DIR/s3.json" \
    -filer.localSocket="$WORK/weed/filer.sock" -s3.localSocket="$WORK/weed/s3.sock" -master.volumeSizeLimitMB=64
  wait_for 60 "the object store on $(addr store):8333" port_open_on store "$(addr store)" 8333
}

spark_class() {
  local class
  class="$(dirname "$PYTHON")/spark-class"
  [[ -x "$class" ]] || class="$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')/bin/spark-class"
  echo "$class"
}

spark_up() {
  local h
  start_service n1 spark-master "$(spark_class)" org.apache.spark.deploy.master.Master --host "$(addr n1)" --port 7077 --webui-port 8080
  wait_for 60 "the Spark master on $(addr n1):7077" port_open_on n1 "$(addr n1)" 7077
  for h in $(hosts | grep '^n'); do start_spark_worker "$h"; done
  wait_for 120 "$NODES Spark workers to register" workers_alive "$NODES"
}

start_spark_worker() {
  start_service "$1" spark-worker env SPARK_WORKER_DIR="$WORK/spark-work" SPARK_LOCAL_DIRS="$WORK/spark-local" \
    "$(spark_class)" org.apache.spark.deploy.worker.Worker --host "$(addr "$1")" --cores 1 --memory 1g \
    --work-dir "$WORK/spark-work" --webui-port 8081 "spark://$(addr n1):7077"
}

workers_alive() {
  [[ "$(master_json | "$PYTHON" -c 'import json, sys; print(sum(w["state"] == "ALIVE" for w in json.load(sys.stdin)["workers"]))')" -ge "$1" ]]
}

master_json() { node_run n1 "$PYTHON" -c "import urllib.request; print(urllib.request.urlopen('http://$(addr n1):8080/json/', timeout=3).read().decode())"; }

start_sshd() { start_service "$1" sshd /usr/sbin/sshd -D -e -f "$DIR/ssh/sshd_config-$1"; }

ssh_up() {
  local h
  command -v sshd >/dev/null 2>&1 || [[ -x /usr/sbin/sshd ]] || die "sshd is missing; make setup installs openssh-server"
  ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh/host_key" -C "rig host key"
  ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh/client/id_ed25519" -C "rig client key"
  cp "$DIR/ssh/client/id_ed25519.pub" "$DIR/ssh/authorized_keys"
  cat >"$DIR/ssh/client/config" <<EOF
Host *
  IdentityFile /root/.ssh/id_ed25519
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
EOF
  chmod 600 "$DIR/ssh/client/config"
  mkdir -p /run/sshd
  for h in $(hosts | grep '^n'); do
    # Sessions get the node's environment (store credentials, Spark settings) as an
    # instance role would give them; the file is private to root.
    (
      umask 077
      {
        echo "ListenAddress $(addr "$h")"
        echo "HostKey $DIR/ssh/host_key"
        echo "AuthorizedKeysFile $DIR/ssh/authorized_keys"
        echo "PermitRootLogin prohibit-password"
        echo "PasswordAuthentication no"
        echo "KbdInteractiveAuthentication no"
        echo "UsePAM no"
        echo "StrictModes no"
        echo "PidFile $WORK/sshd.pid"
        echo "SetEnv $(grep -v '^PATH=' "$DIR/node.env" | tr '\n' ' ') GLOO_SOCKET_IFNAME=eth0"
      } >"$DIR/ssh/sshd_config-$h"
    )
    start_sshd "$h"
  done
  for h in $(hosts | grep '^n'); do
    wait_for 30 "sshd on $h" port_open_on "$h" "$(addr "$h")" 22
  done
}

# Slurm. Every node's state, spool, logs and munge socket are under its private
# /tmp/node-work, so the same paths in the one slurm.conf name each node's own.
SLURM_WORK=$WORK/slurm
MUNGE_SOCKET=$WORK/munge/munge.socket

slurm_conf() {
  local h mem
  # RealMemory: a share of this machine's memory (slurmd refuses a node claiming more).
  mem=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 / (NODES + 1)))
  cat <<EOF
# The rig's Slurm cluster (written by deploy/local/multihost.sh; every node reads it as /etc/slurm).
ClusterName=$NAME
SlurmctldHost=n1($(addr n1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$SLURM_WORK/state
SlurmdSpoolDir=$SLURM_WORK/spool
SlurmctldPidFile=$SLURM_WORK/slurmctld.pid
SlurmdPidFile=$SLURM_WORK/slurmd.pid
SlurmctldLogFile=$SLURM_WORK/slurmctld.log
SlurmdLogFile=$SLURM_WORK/slurmd.log
# No cgroups (ip netns exec remounts /sys) and no accounting daemon.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# A lost node is noticed within half a minute; finished jobs stay visible to scontrol for 10.
SlurmdTimeout=30
MinJobAge=600
KillWait=10
InactiveLimit=0
EOF
  for h in $(hosts | grep '^n'); do
    echo "NodeName=$h NodeAddr=$(addr "$h") CPUs=1 RealMemory=$mem State=UNKNOWN"
  done
  echo "PartitionName=rig Nodes=$(hosts | grep '^n' | paste -sd, -) Default=YES MaxTime=INFINITE State=UP"
}

slurm_up() {
  local h
  if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    die "slurm-wlm and munge are missing; make setup installs them (apt-get install --no-install-recommends slurm-wlm munge)"
  fi
  [[ -r /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing; reinstall munge (its package creates the key)"
  slurm_conf >"$DIR/slurm/slurm.conf"
  # cgroup/v1 spelled out: autodetection fails under ip netns exec, which remounts /sys.
  echo "CgroupPlugin=cgroup/v1" >"$DIR/slurm/cgroup.conf"
  for h in $(hosts | grep '^n'); do start_munged "$h"; done
  for h in $(hosts | grep '^n'); do wait_for 30 "munged on $h" node_run "$h" munge -n -S "$MUNGE_SOCKET"; done
  mkdir -p "$DIR/nodes/n1/slurm/state"
  start_service n1 slurmctld slurmctld -D -f /etc/slurm/slurm.conf
  wait_for 30 "slurmctld on $(addr n1):6817" port_open_on n1 "$(addr n1)" 6817
  for h in $(hosts | grep '^n'); do start_slurmd "$h"; done
  wait_for 60 "$NODES Slurm nodes to be idle" slurm_nodes_idle "$NODES"
}

# munged runs as the munge user; its directory must be the munge user's, mode 0755.
start_munged() {
  install -d -o munge -g munge -m 0755 "$DIR/nodes/$1/munge"
  start_service "$1" munged setpriv --reuid=munge --regid=munge --init-groups \
    munged -F --socket="$MUNGE_SOCKET" --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/munge/munged.log" \
    --seed-file="$WORK/munge/munged.seed"
}

start_slurmd() {
  mkdir -p "$DIR/nodes/$1/slurm/spool"
  start_service "$1" slurmd slurmd -D -N "$1" -f /etc/slurm/slurm.conf
}

slurm_nodes_idle() {
  [[ "$(node_run n1 sinfo -h -N -t idle -o %N | sort -u | wc -l)" -ge "$1" ]]
}

# slurm-down: every Slurm and munge process on every node, job steps (slurmstepd and what
# it started) included: a killed slurmd leaves its slurmstepd running.
slurm_down() {
  local h pid
  for h in $(hosts | grep '^n'); do
    ip netns list | grep -q "^$(ns "$h")\b" || continue
    signal_until_gone slurm_pids "$h" TERM KILL
  done
  for pid in "$DIR"/pids/n*-{munged,slurmctld,slurmd}.pid; do
    [[ -f "$pid" ]] || continue
    kill -KILL "$(cat "$pid")" 2>/dev/null || true
    rm -f "$pid"
  done
  rm -rf "$DIR"/nodes/n*/slurm "$DIR"/nodes/n*/munge
  say "slurm-down: Slurm and munge stopped"
}

# NODE's Slurm and munge daemons, and every descendant of a slurmstepd (the job steps).
slurm_pids() {
  local p
  for p in $(node_pids "$1"); do
    case "$(cat "/proc/$p/comm" 2>/dev/null)" in
      munged | slurmctld | slurmd) echo "$p" ;;
      slurmstepd) echo "$p"; descendants "$p" ;;
    esac
  done | sort -u
}

descendants() {
  local c
  for c in $(pgrep -P "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done
}

up() {
  require_root
  ip netns list | grep -q "^$(ns br)\b" && die "the rig $NAME is already up; run: $0 down"
  [[ -x "$PYTHON" ]] || die "$PYTHON not found; run make setup or set PYTHON"
  trap 'say "start failed; tearing down"; down >/dev/null 2>&1 || true' ERR
  rm -rf "$DIR"
  files_up
  network_up
  local s
  for s in $SERVICES; do
    case "$s" in
      store) store_up ;;
      spark) spark_up ;;
      ssh) ssh_up ;;
      slurm) slurm_up ;;
      *) die "unknown service '$s' in RIG_SERVICES (store spark ssh slurm)" ;;
    esac
  done
  trap - ERR
  say "up: $(hosts | while read -r h; do printf '%s=%s ' "$h" "$(addr "$h")"; done)services: $SERVICES; state in $DIR"
}

# stop_node NODE SIGNALS...: signal every process in NODE's namespace (the services and
# whatever they started: executors, sshd sessions, slurmstepd...), escalating through
# SIGNALS until none is left.
stop_node() {
  signal_until_gone node_pids "$@"
}

node_pids() {
  ip netns pids "$(ns "$1")" 2>/dev/null || true
}

# signal_until_gone LISTER NODE SIGNALS...: send each signal in turn to the processes
# `LISTER NODE` prints, waiting up to 5 s after each for them to be gone.
signal_until_gone() {
  local list=$1 h=$2 sig pids
  shift 2
  for sig in "$@"; do
    pids=$("$list" "$h")
    [[ -n "$pids" ]] || return 0
    # shellcheck disable=SC2086
    kill -s "$sig" $pids 2>/dev/null || true
    for _ in $(seq 1 20); do
      [[ -z "$("$list" "$h")" ]] && return 0
      sleep 0.25
    done
  done
}

down() {
  require_root
  local h n pid
  for h in br $(hosts); do
    ip netns list | grep -q "^$(ns "$h")\b" || continue
    stop_node "$h" TERM KILL
    # A namespace whose last process just exited can be busy for a moment: retry.
    for _ in 1 2 3 4 5; do
      ip netns del "$(ns "$h")" 2>/dev/null || true
      ip netns list | grep -q "^$(ns "$h")\b" || break
      sleep 0.5
    done
    ! ip netns list | grep -q "^$(ns "$h")\b" || die "could not delete namespace $(ns "$h")"
  done
  # Launchers started in the root namespace (ip netns exec ... wrappers) that outlived them.
  for pid in "$DIR"/pids/*.pid; do
    [[ -f "$pid" ]] || continue
    n=$(cat "$pid")
    kill -0 "$n" 2>/dev/null && kill -KILL "$n" 2>/dev/null || true
  done
  [[ "${RIG_KEEP:-0}" == 1 ]] || rm -rf "$DIR"
  say "down: namespaces of $NAME deleted"
}

status() {
  local h up_count=0 pid
  for h in br $(hosts); do
    if ip netns list | grep -q "^$(ns "$h")\b"; then
      up_count=$((up_count + 1))
      [[ "$h" == br ]] && continue
      echo "$h $(addr "$h"): route $(ip -n "$(ns "$h")" route | tr -s ' ' | head -1)"
    fi
  done
  ((up_count > 0)) || { echo "multihost: $NAME is down"; return 1; }
  for pid in "$DIR"/pids/*.pid; do
    [[ -f "$pid" ]] || continue
    if kill -0 "$(cat "$pid")" 2>/dev/null; then echo "$(basename "$pid" .pid): running"; else echo "$(basename "$pid" .pid): stopped"; fi
  done
}

client_env() {
  echo "RIG_DIR=$DIR"
  echo "RIG_BUCKET=$BUCKET"
  echo "SPARK_MASTER_URL=spark://$(addr n1):7077"
  grep -E '^(AWS_ENDPOINT_URL|AWS_REGION)=' "$DIR/node.env"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  exec)
    [[ $# -ge 3 ]] || die "usage: $0 exec NODE CMD..."
    node=$2
    shift 2
    node_run "$node" "$@"
    ;;
  addr) addr "${2:?usage: $0 addr NODE}" ;;
  kill)  # a whole-host failure: SIGKILL every process on NODE
    require_root
    stop_node "${2:?usage: $0 kill NODE}" KILL
    ;;
  stop) require_root; stop_node "${2:?usage: $0 stop NODE}" TERM KILL ;;
  start)  # start SERVICE on NODE again (after kill/stop)
    require_root
    case "${3:?usage: $0 start NODE store|spark-worker|sshd|munged|slurmd}" in
      store) start_weed ;;
      spark-worker) start_spark_worker "$2" ;;
      sshd) start_sshd "$2" ;;
      munged) start_munged "$2" ;;
      slurmd) start_slurmd "$2" ;;
      *) die "unknown service '$3' (store, spark-worker, sshd, munged, slurmd)" ;;
    esac
    ;;
  env) client_env ;;
  slurm-up)
    require_root
    ip netns list | grep -q "^$(ns br)\b" || die "the rig $NAME is down; run: $0 up"
    [[ -z "$(slurm_pids n1)" ]] || die "Slurm is already up on $NAME; run: $0 slurm-down"
    trap 'say "slurm start failed; stopping Slurm"; slurm_down >/dev/null 2>&1 || true' ERR
    slurm_up
    trap - ERR
    say "slurm up: slurmctld on n1, slurmd on $(hosts | grep '^n' | paste -sd' ' -); partition rig"
    ;;
  slurm-down) require_root; slurm_down ;;
  *) echo "usage: $0 up|down|status|exec NODE CMD...|addr NODE|env|kill NODE|stop NODE|start NODE SERVICE|slurm-up|slurm-down" >&2; exit 2 ;;
esac
