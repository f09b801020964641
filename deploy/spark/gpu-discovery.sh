#!/usr/bin/env bash
# Spark's GPU discovery script (spark.{driver,executor,worker}.resource.gpu.discoveryScript):
# prints the GPUs this node has as Spark's ResourceInformation JSON, e.g.
#   {"name": "gpu", "addresses": ["0", "1"]}
# Spark then hands each task the addresses it was given (spark.task.resource.gpu.amount),
# and a training rank started by `train --launcher spark` takes the first of its own.
set -euo pipefail
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | tr -d ' ' | sed '/^$/d' | sed 's/.*/"&"/' | paste -sd, -)
printf '{"name": "gpu", "addresses": [%s]}\n' "$addresses"
