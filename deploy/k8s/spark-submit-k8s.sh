#!/usr/bin/env bash
# Preprocess and score on Spark-on-Kubernetes (cluster deploy mode) with the Spark image of
# deploy/docker/Dockerfile.spark (apache/spark's entrypoint and /opt/spark, the project in
# /opt/pipeline). The driver runs as ServiceAccount "spark" (deploy/k8s/spark-rbac.yaml,
# applied once per namespace); driver and executors run as uid 185, non-root
# (deploy/k8s/spark-pod-template.yaml) and mount the shared volume (PVC pipeline-data) at /data.
#
#   kubectl apply -n NAMESPACE -f deploy/k8s/spark-rbac.yaml
#   K8S_MASTER=k8s://https://<api-server>:6443 IMAGE=REGISTRY/pipeline-spark:TAG NAMESPACE=NAMESPACE \
#       deploy/k8s/spark-submit-k8s.sh [--dry-run]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MASTER="${K8S_MASTER:?set K8S_MASTER=k8s://https://host:port}"
IMAGE="${IMAGE:?set IMAGE=REGISTRY/pipeline-spark:TAG (deploy/docker/Dockerfile.spark)}"
NAMESPACE="${NAMESPACE:-default}"
DRY=()
[[ "${1:-}" == "--dry-run" ]] && DRY=(--dry-run)

KUBE=spark.kubernetes
CONF=()
for role in driver executor; do
  CONF+=(--conf "$KUBE.$role.podTemplateFile=$ROOT/deploy/k8s/spark-pod-template.yaml"
         --conf "$KUBE.$role.podTemplateContainerName=spark"
         --conf "$KUBE.$role.volumes.persistentVolumeClaim.data.options.claimName=pipeline-data"
         --conf "$KUBE.$role.volumes.persistentVolumeClaim.data.mount.path=/data")
done

submit() { "$ROOT/deploy/spark/submit.sh" "${DRY[@]}" --master "$MASTER" --image "$IMAGE" --namespace "$NAMESPACE" \
  --executors 2 --executor-cores 2 --executor-memory 4g "${CONF[@]}" "$@"; }

submit preprocess -- --config /opt/pipeline/conf/digits_cnn.yaml data.root=/data/datasets \
  data.source.path=/data/raw/digits.csv.gz
submit score -- --config /opt/pipeline/conf/digits_cnn.yaml data.root=/data/datasets \
  --model /data/runs/digits_cnn/model.pt --input /data/raw/new.csv --output /data/scored/digits
