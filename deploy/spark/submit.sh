#!/usr/bin/env bash
# Submit preprocess, train (Horovod inside Spark) or score to local[*], a standalone
# master, YARN or Kubernetes. --dry-run prints the full spark-submit command.
#
#   deploy/spark/submit.sh --dry-run --master yarn --pack-env train -- --config conf/digits_cnn.yaml --np 4
#   deploy/spark/submit.sh --master spark://127.0.0.1:7077 preprocess -- --config conf/digits_cnn.yaml
#   deploy/spark/submit.sh --master k8s://https://k8s.example:6443 --image REGISTRY/pipeline:TAG score -- \
#       --config conf/digits_cnn.yaml --model /data/runs/R/model.pt --input /data/new.csv --output /data/scored
#
# Options: see `deploy/spark/submit.sh --help` (pipeline/launch/submit.py builds the command).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
exec "$PYTHON" -m pipeline.launch.submit "$@"
