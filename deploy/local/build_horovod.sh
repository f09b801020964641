#!/usr/bin/env bash
# Build a Horovod wheel for the given Python's torch (called by setup.sh; usable alone).
#
#   deploy/local/build_horovod.sh PYTHON OUT_DIR
#   deploy/local/build_horovod.sh --mode PYTHON     # prints what it would build: nccl or cpu
#
# Always PyTorch + Gloo (CPU collectives, the rendezvous). With GPU operations (NCCL) too
# when this machine can build them: nvcc on PATH (or $CUDA_HOME/bin) and a CUDA build of
# torch; NCCL from $NCCL_HOME, else the nvidia-nccl wheel torch itself depends on.
# PIPELINE_HOROVOD_GPU=0 builds CPU-only anyway, =1 fails when GPU operations cannot be
# built. HOROVOD_SDIST names a downloaded horovod-0.28.1.tar.gz (machines without PyPI);
# HOROVOD_BUILD_LOG, where to keep the whole build log when the build fails.
set -euo pipefail
QUERY=0
if [ "${1:-}" = --mode ]; then QUERY=1; shift; fi
PY=$1
OUT=${2:-}
case $PY in /*) ;; */*) PY="$PWD/$PY" ;; esac  # the build runs in Horovod's source tree
case $OUT in "" | /*) ;; *) OUT="$PWD/$OUT" ;; esac
HOROVOD_VERSION=0.28.1
say() { printf 'build_horovod: %s\n' "$*"; }
die() { printf 'build_horovod: ERROR: %s\n' "$*" >&2; exit 1; }

# Prints "nccl" when GPU operations will be built, "cpu" otherwise (the reason on stderr).
gpu_mode() {
    local want=${PIPELINE_HOROVOD_GPU:-auto} nvcc torch_cuda
    [ "$want" = 0 ] && { echo cpu; return; }
    nvcc=$(command -v nvcc || true)
    [ -z "$nvcc" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ] && nvcc="$CUDA_HOME/bin/nvcc"
    torch_cuda=$("$PY" -c 'import torch; print(torch.version.cuda or "")')
    if [ -n "$nvcc" ] && [ -n "$torch_cuda" ]; then echo nccl; return; fi
    if [ "$want" = 1 ]; then
        [ -n "$nvcc" ] && die "PIPELINE_HOROVOD_GPU=1 but torch is a CPU build (install a CUDA build, e.g. TORCH_INDEX_URL)"
        die "PIPELINE_HOROVOD_GPU=1 but nvcc (the CUDA toolkit) is not on PATH or in \$CUDA_HOME/bin"
    fi
    echo cpu
}

# A directory with include/nccl.h and lib/libnccl.so: $NCCL_HOME, or the nvidia-nccl wheel
# (its library is only libnccl.so.2; Horovod's CMake looks for libnccl.so).
nccl_home() {
    if [ -n "${NCCL_HOME:-}" ]; then echo "$NCCL_HOME"; return; fi
    local nvidia header library home
    nvidia=$("$PY" -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null) \
        || die "no NCCL found: set NCCL_HOME, or install torch's nvidia-nccl wheel"
    header=$(find "$nvidia" -name nccl.h -path '*nccl*' | head -1)
    library=$(find "$nvidia" -name 'libnccl.so*' | head -1)
    [ -n "$header" ] && [ -n "$library" ] || die "no nccl.h and libnccl.so under $nvidia: set NCCL_HOME"
    home=$(mktemp -d)
    mkdir -p "$home/lib"
    ln -s "$(dirname "$header")" "$home/include"
    ln -s "$library" "$home/lib/libnccl.so"
    echo "$home"
}

mode=$(gpu_mode)
if [ "$QUERY" = 1 ]; then echo "$mode"; exit 0; fi
[ -n "$OUT" ] || die "usage: build_horovod.sh PYTHON OUT_DIR"
build=$(mktemp -d)
if [ -n "${HOROVOD_SDIST:-}" ]; then
    cp "$HOROVOD_SDIST" "$build/"
else
    "$PY" -m pip download --disable-pip-version-check -q --no-binary :all: --no-deps -d "$build" "horovod==$HOROVOD_VERSION"
fi
tar -xzf "$build"/horovod-"$HOROVOD_VERSION".tar.gz -C "$build"
src="$build/horovod-$HOROVOD_VERSION"
# Horovod 0.28.1 asks for C++14; PyTorch >= 2.1 headers need C++17. Upstream fixed this
# after the last release, so patch it here and fail if the line moved.
for f in CMakeLists.txt horovod/torch/CMakeLists.txt; do
    grep -q 'set(CMAKE_CXX_STANDARD 14)' "$src/$f" || die "Horovod patch: 'set(CMAKE_CXX_STANDARD 14)' not found in $f"
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/$f"
done
# Its CUDA kernels ask for C++11, which recent nvcc (CUDA 13) no longer accepts; 17 builds
# on every CUDA >= 11. HOROVOD_BUILD_CUDA_CC_LIST (e.g. 80,90) limits the GPU architectures
# compiled (default: all that nvcc knows, which takes longest).
f=horovod/common/ops/cuda/CMakeLists.txt
grep -q 'set(CMAKE_CUDA_STANDARD 11)' "$src/$f" || die "Horovod patch: 'set(CMAKE_CUDA_STANDARD 11)' not found in $f"
sed -i 's/set(CMAKE_CUDA_STANDARD 11)/set(CMAKE_CUDA_STANDARD 17)/' "$src/$f"
gpu_env=()
if [ "$mode" = nccl ]; then
    nvcc=$(command -v nvcc || echo "$CUDA_HOME/bin/nvcc")
    cuda_home=$(cd "$(dirname "$nvcc")/.." && pwd)
    gpu_env=(HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_CUDA_HOME="$cuda_home" HOROVOD_NCCL_HOME="$(nccl_home)" HOROVOD_NCCL_LINK=SHARED)
    say "building with GPU operations (NCCL; CUDA toolkit $cuda_home)"
else
    say "building for the CPU (Gloo)"
fi
# GCC 13 no longer pulls <cstdint>, <stdexcept> and <string> in through other headers, and
# Horovod 0.28.1 relies on that (group_table.h, common.h): include them in every C++ unit.
export CXXFLAGS="${CXXFLAGS:-} -include cstdint -include stdexcept -include string"
mkdir -p "$OUT"
(cd "$src" && env HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 CMAKE_POLICY_VERSION_MINIMUM=3.5 "${gpu_env[@]}" \
    MAKEFLAGS="-j$(nproc)" "$PY" -m pip wheel --disable-pip-version-check -v \
    --no-build-isolation --no-deps -w "$build/out" . ) >"$build/build.log" 2>&1 \
    || { [ -n "${HOROVOD_BUILD_LOG:-}" ] && cp "$build/build.log" "$HOROVOD_BUILD_LOG"
         { grep -n -E 'error|Error|CMake Error|No such file' "$build/build.log" | grep -v -E 'Werror|error\.h|_error\.' | head -n 40 >&2; } || true
         tail -n 20 "$build/build.log" >&2
         die "Horovod build failed (error lines and the last lines of $build/build.log above${HOROVOD_BUILD_LOG:+; the whole log: $HOROVOD_BUILD_LOG})"; }
mv "$build"/out/horovod-*.whl "$OUT"/
rm -rf "$build"
say "built $(find "$OUT" -maxdepth 1 -name 'horovod-*.whl' | head -1) ($mode)"
