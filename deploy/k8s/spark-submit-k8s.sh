#!/usr/bin/env bash
# Preprocess and score on Spark-on-Kubernetes with the pipeline image. Driver and
# executors mount the shared volume (PVC pipeline-data) at /data.
#
#   K8S_MASTER=k8s://https://<api-server>:6443 IMAGE=REGISTRY/pipeline:TAG deploy/k8s/spark-submit-k8s.sh [--dry-run]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MASTER="${K8S_MASTER:?set K8S_MASTER=k8s://https://host:port}"
IMAGE="${IMAGE:?set IMAGE=REGISTRY/pipeline:TAG (deploy/docker/Dockerfile)}"
NAMESPACE="${NAMESPACE:-default}"
DRY=()
[[ "${1:-}" == "--dry-run" ]] && DRY=(--dry-run)

VOLUME=spark.kubernetes
MOUNTS=()
for role in driver executor; do
  MOUNTS+=(--conf "$VOLUME.$role.volumes.persistentVolumeClaim.data.options.claimName=pipeline-data"
           --conf "$VOLUME.$role.volumes.persistentVolumeClaim.data.mount.path=/data")
done

submit() { "$ROOT/deploy/spark/submit.sh" "${DRY[@]}" --master "$MASTER" --image "$IMAGE" --namespace "$NAMESPACE" \
  --executors 2 --executor-cores 2 --executor-memory 4g "${MOUNTS[@]}" "$@"; }

submit preprocess -- --config /opt/pipeline/conf/digits_cnn.yaml data.root=/data/datasets \
  data.source.path=/data/raw/digits.csv.gz
submit score -- --config /opt/pipeline/conf/digits_cnn.yaml data.root=/data/datasets \
  --model /data/runs/digits_cnn/model.pt --input /data/raw/new.csv --output /data/scored/digits
