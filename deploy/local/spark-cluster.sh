#!/usr/bin/env bash
# A Spark standalone cluster on this machine, bound to 127.0.0.1: one master, N workers,
# started from the installed pyspark (spark-class), with pid files and logs.
#
#   deploy/local/spark-cluster.sh start|stop|status
#
# Settings (environment):
#   SPARK_CLUSTER_DIR   pid files, logs and work dirs          (default: .spark-cluster)
#   SPARK_MASTER_PORT   master RPC port                        (default: 7077)
#   SPARK_MASTER_UI     master web UI port                     (default: 8080)
#   SPARK_WORKERS       number of workers                      (default: 2)
#   SPARK_WORKER_CORES  cores per worker                       (default: 1)
#   SPARK_WORKER_MEM    memory per worker                      (default: 2g)
#   SPARK_WORKER_UI     first worker web UI port (+1 each)     (default: 8081)
#   PYTHON              interpreter whose pyspark to use       (default: .venv/bin/python)
#
# `start` prints the master URL on its last line; `stop` stops exactly the processes it
# started (by pid file) and nothing else.
#
# The cluster authenticates (spark.authenticate, a secret generated at start): drivers must
# use its configuration, `export SPARK_CONF_DIR=$SPARK_CLUSTER_DIR/conf` (the file also
# names the master and turns on event logs in $SPARK_CLUSTER_DIR/events, where every
# task's executor and host is recorded).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${SPARK_CLUSTER_DIR:-$ROOT/.spark-cluster}"
PORT="${SPARK_MASTER_PORT:-7077}"
UI="${SPARK_MASTER_UI:-8080}"
WORKERS="${SPARK_WORKERS:-2}"
CORES="${SPARK_WORKER_CORES:-1}"
MEM="${SPARK_WORKER_MEM:-2g}"
WORKER_UI="${SPARK_WORKER_UI:-8081}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
HOST=127.0.0.1
URL="spark://$HOST:$PORT"

die() { echo "spark-cluster: ERROR: $*" >&2; exit 1; }

spark_class() {
  local home
  home="$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" \
    || die "cannot import pyspark with $PYTHON; run make setup or set PYTHON"
  echo "$home/bin/spark-class"
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || die "timed out waiting for $what (logs in $DIR/logs)"
    sleep 0.5
  done
}

alive_workers() {
  "$PYTHON" - "$UI" <<'PY'
import json, sys, urllib.request
try:
    state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/", timeout=2))
except OSError:
    print(0)
else:
    print(sum(w["state"] == "ALIVE" for w in state.get("workers", [])))
PY
}

workers_registered() { [[ "$(alive_workers)" -ge "$WORKERS" ]]; }

start() {
  local class
  class="$(spark_class)"
  mkdir -p "$DIR/logs"
  alive "$DIR/master.pid" && die "a master started from $DIR is already running (pid $(cat "$DIR/master.pid")); stop it first"
  port_open "$PORT" && die "port $PORT is taken by another process; set SPARK_MASTER_PORT"
  write_conf
  export SPARK_LOCAL_IP=$HOST SPARK_MASTER_HOST=$HOST PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PYTHON}" SPARK_CONF_DIR="$DIR/conf"
  nohup "$class" org.apache.spark.deploy.master.Master --host "$HOST" --port "$PORT" --webui-port "$UI" \
    >"$DIR/logs/master.log" 2>&1 &
  echo $! >"$DIR/master.pid"
  wait_for 60 "the master on $URL" port_open "$PORT"
  for i in $(seq 1 "$WORKERS"); do
    mkdir -p "$DIR/work-$i"
    nohup "$class" org.apache.spark.deploy.worker.Worker --host "$HOST" --cores "$CORES" --memory "$MEM" \
      --work-dir "$DIR/work-$i" --webui-port $((WORKER_UI + i - 1)) "$URL" >"$DIR/logs/worker-$i.log" 2>&1 &
    echo $! >"$DIR/worker-$i.pid"
  done
  wait_for 90 "$WORKERS workers to register" workers_registered
  echo "spark-cluster: master $URL (UI http://$HOST:$UI), $WORKERS workers x $CORES cores, logs in $DIR/logs; drivers: export SPARK_CONF_DIR=$DIR/conf"
  echo "$URL"
}

write_conf() {
  local secret
  secret="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(24))')"
  mkdir -p "$DIR/conf" "$DIR/events"
  (
    umask 077
    # Jobs wait for an executor on every worker before their first task (the ratio counts
    # against spark.cores.max; without it a standalone app expects 0 cores and never waits).
    cat >"$DIR/conf/spark-defaults.conf" <<EOF
spark.master                 $URL
spark.authenticate           true
spark.authenticate.secret    $secret
spark.eventLog.enabled       true
spark.eventLog.dir           file://$DIR/events
spark.eventLog.compress      false
spark.eventLog.rolling.enabled false
spark.cores.max              $((WORKERS * CORES))
spark.scheduler.minRegisteredResourcesRatio 1.0
spark.scheduler.maxRegisteredResourcesWaitingTime 60s
EOF
  )
}

stop() {
  local pidfile pid stopped=0
  shopt -s nullglob
  for pidfile in "$DIR"/worker-*.pid "$DIR"/master.pid; do
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      stopped=$((stopped + 1))
    fi
    rm -f "$pidfile"
  done
  echo "spark-cluster: stopped $stopped processes"
}

status() {
  local pidfile running=0
  shopt -s nullglob
  for pidfile in "$DIR"/master.pid "$DIR"/worker-*.pid; do
    if alive "$pidfile"; then
      echo "$(basename "$pidfile" .pid): running (pid $(cat "$pidfile"))"
      running=$((running + 1))
    else
      echo "$(basename "$pidfile" .pid): not running"
    fi
  done
  if ((running == 0)); then echo "spark-cluster: not running"; return 1; fi
  echo "spark-cluster: master $URL, $(alive_workers) workers alive"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
