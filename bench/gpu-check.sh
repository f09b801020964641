#!/usr/bin/env bash
# Every GPU check in one command, on a machine with an NVIDIA GPU (CI has none):
#
#   bash bench/gpu-check.sh DIGITS_DATA_ROOT [OUT_DIR]
#
# 1. pytest tests/gpu (device binding, pinned uint8 batches, the trainer in fp32/bf16/fp16)
#    and the device unit tests; 2. bench/gpu.py (precision, input stall, DDP over NCCL),
#    writing bench/results/gpu.json; 3. with HOROVOD_SDIST (a horovod-0.28.1.tar.gz) set,
#    Horovod built with NCCL by deploy/local/build_horovod.sh and its GPU run. Logs and
#    gpu.json land in OUT_DIR. PYTHON picks the interpreter (default: python3); TESTS=0 skips
#    step 1, BENCH_SECTIONS picks bench/gpu.py's sections (default: precision stall ddp).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
DIGITS=${1:?usage: bench/gpu-check.sh DIGITS_DATA_ROOT [OUT_DIR]}
OUT=${2:-/tmp/gpu-check}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/nvidia-smi.txt"
if [ "${TESTS:-1}" != 0 ]; then
    PIPELINE_GPU_DIGITS=$DIGITS timeout "${TEST_TIMEOUT:-300}" "$PY" -m pytest -q -p no:cacheprovider tests/gpu tests/unit/test_device.py \
        2>&1 | tee "$OUT/pytest.log"
fi
# shellcheck disable=SC2086  # BENCH_SECTIONS is a list of words
timeout "${BENCH_TIMEOUT:-300}" "$PY" bench/gpu.py --digits "$DIGITS" --only ${BENCH_SECTIONS:-precision stall ddp} 2>&1 \
    | grep -v ' INFO ' | tee "$OUT/bench.log"
if [ -n "${HOROVOD_SDIST:-}" ]; then
    HOROVOD_BUILD_LOG="$OUT/horovod-build-full.log" HOROVOD_BUILD_CUDA_CC_LIST=${HOROVOD_BUILD_CUDA_CC_LIST:-90} \
        PIPELINE_HOROVOD_GPU=1 timeout "${HOROVOD_BUILD_TIMEOUT:-300}" \
        bash deploy/local/build_horovod.sh "$PY" /tmp/hvd-wheel >"$OUT/horovod-build.log" 2>&1
    tail -n 30 "$OUT/horovod-build.log"
    wheel=$(find /tmp/hvd-wheel -name 'horovod-*.whl' 2>/dev/null | head -1)
    if [ -n "$wheel" ]; then
        "$PY" -m pip install -q --no-deps --no-compile --target /tmp/hvd-site "$wheel" \
            && PYTHONPATH="/tmp/hvd-site:${PYTHONPATH:-}" timeout 180 "$PY" bench/gpu.py --digits "$DIGITS" --only horovod 2>&1 \
                | grep -v ' INFO ' | tee "$OUT/horovod.log"
    fi
fi
cp bench/results/gpu.json "$OUT/" 2>/dev/null
echo "gpu-check done"
