#!/usr/bin/env bash
# One-command, idempotent setup for a fresh machine (called by `make setup`).
#
# Creates .venv, installs torch (CPU build, unless a torch is there), the project with its
# dev, tracking and export extras, a separate .venv-mlflow holding the MLflow tracking server the
# tests start (the full mlflow package pins pyarrow below what the project uses; training
# needs only the client, mlflow-skinny), checks Java and installs Horovod 0.28.1 built from its sdist with Gloo +
# PyTorch, and with NCCL when the CUDA toolkit and a CUDA torch are present
# (deploy/local/build_horovod.sh; PIPELINE_HOROVOD_GPU=0|1 forces). The Horovod wheel
# is cached outside the repo, keyed by Horovod, torch and Python versions, so later setups
# (and later clones) reuse it. A second run with nothing changed finishes in seconds.
#
# Environment:
#   PYTHON            interpreter to build the venv from (default: python3)
#   VENV              venv path (default: .venv)
#   PIPELINE_CACHE    wheels, the JVM class archive, Horovod's Gloo answer (default: ~/.cache/pipeline)
#   TORCH_VERSION     torch to install when none is present (default: 2.13.0)
#   TORCH_INDEX_URL   where that torch comes from, e.g. https://download.pytorch.org/whl/cu128
#                     for a CUDA build (default: the package index; here the CPU build)
set -euo pipefail

cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CACHE=${PIPELINE_CACHE:-$HOME/.cache/pipeline}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
HOROVOD_VERSION=0.28.1
STAMP="$VENV/.setup-stamp"
MLFLOW_VENV=${MLFLOW_VENV:-.venv-mlflow}
MLFLOW_SERVER_SPEC='mlflow>=3.5,<4'

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

java_major() {
    # `java -version` prints e.g. 'openjdk version "17.0.15"' or '"1.8.0_392"' on stderr.
    local v
    v=$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
    v=${v#1.}
    echo "${v%%.*}"
}

check_java() {
    if command -v java >/dev/null 2>&1 && [ "$(java_major)" -ge 17 ] 2>/dev/null; then
        return
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "Java >= 17 missing: installing openjdk-17-jre-headless with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless
        [ "$(java_major)" -ge 17 ] || die "java is still older than 17 after installing openjdk-17"
    else
        die "Spark needs Java >= 17 on PATH (found: $(java -version 2>&1 | head -1 || echo none)). Install a JDK/JRE 17+ (e.g. 'sudo apt-get install openjdk-17-jre-headless') or set JAVA_HOME, then rerun 'make setup'."
    fi
}

# System packages the tests' multi-host rig needs: iproute2 (ip netns), util-linux
# (unshare), openssh-server (horovodrun over ssh between the rig's hosts), slurm-wlm and
# munge (the rig's Slurm cluster, deploy/local/multihost.sh slurm-up).
SYSTEM_PACKAGES=(iproute2 util-linux openssh-server openssh-client slurm-wlm munge)
SYSTEM_COMMANDS=(ip unshare /usr/sbin/sshd ssh slurmd munged)

check_system_packages() {
    local missing=() i
    for i in "${!SYSTEM_COMMANDS[@]}"; do
        command -v "${SYSTEM_COMMANDS[$i]}" >/dev/null 2>&1 || missing+=("${SYSTEM_PACKAGES[$i]}")
    done
    ((${#missing[@]})) || return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${missing[*]} with apt-get (the multi-host test rig needs them)"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
            die "apt-get could not install ${missing[*]}"
        fi
    else
        say "WARNING: ${missing[*]} missing and not root with apt-get: the multihost tests will fail; install them"
    fi
}

# What setup depends on: its scripts, the project's dependencies, and whether the CUDA
# toolkit is there (installing it later makes the next setup build Horovod with NCCL).
setup_inputs_hash() {
    { cat pyproject.toml deploy/local/setup.sh deploy/local/build_horovod.sh
      command -v nvcc || true; echo "${CUDA_HOME:-}" "${PIPELINE_HOROVOD_GPU:-}"; } | sha256sum | cut -c1-16
}

up_to_date() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(setup_inputs_hash)" ] \
        && "$VENV/bin/python" -c 'import horovod.torch, pipeline' >/dev/null 2>&1 \
        && [ -x "$MLFLOW_VENV/bin/mlflow" ]
}

# The driver JVM's class archive (faster Spark start-up; pipeline/prep/cds.py): built once
# per Java and pyspark install, kept in the cache; without it Spark only starts slower.
class_archive() {
    "$VENV/bin/python" -m pipeline.prep.cds >/dev/null \
        || say "WARNING: no JVM class archive (see the line above); Spark sessions start ~1.5 s slower"
}

check_java
check_system_packages
if up_to_date; then
    class_archive
    say "up to date ($VENV)"
    exit 0
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "Python >= 3.10 needed; $PYTHON is $("$PYTHON" --version 2>&1)"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$(cd "$VENV" && pwd)/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    say "installing torch==$TORCH_VERSION${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
    "${PIP[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==$TORCH_VERSION"
fi
say "installing the project and its dependencies"
"${PIP[@]}" -e '.[dev,tracking,export]'

install_horovod() {
    local torch_v py_v key wheel_dir wheel
    torch_v=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
    py_v=$("$PY" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')
    key="horovod-$HOROVOD_VERSION-torch$torch_v-$py_v-$(uname -m)$([ "$MODE" = nccl ] && echo -nccl || true)"
    wheel_dir="$CACHE/wheels/$key"
    wheel=$(find "$wheel_dir" -maxdepth 1 -name "horovod-*.whl" 2>/dev/null | head -1 || true)
    if [ -z "$wheel" ]; then
        say "building Horovod $HOROVOD_VERSION for torch $torch_v, $MODE (several minutes; cached in $wheel_dir)"
        "${PIP[@]}" cmake 'setuptools<81' wheel
        bash deploy/local/build_horovod.sh "$PY" "$wheel_dir"
        wheel=$(find "$wheel_dir" -maxdepth 1 -name "horovod-*.whl" | head -1)
    else
        say "using cached Horovod wheel $wheel"
    fi
    "${PIP[@]}" --no-deps --force-reinstall "$wheel"
}

# "nccl" when this machine builds Horovod's GPU operations (nvcc + a CUDA torch), else "cpu".
MODE=$(bash deploy/local/build_horovod.sh --mode "$PY")
if ! "$PY" -c 'import horovod.torch' >/dev/null 2>&1 \
    || { [ "$MODE" = nccl ] && ! "$PY" -c 'import horovod.torch as h, sys; sys.exit(not h.nccl_built())' >/dev/null 2>&1; }; then
    install_horovod
fi

check=$("$VENV/bin/horovodrun" --check-build 2>&1) || die "horovodrun --check-build failed: $check"
needs=(PyTorch Gloo)
[ "$MODE" = nccl ] && needs+=(NCCL)
for need in "${needs[@]}"; do
    grep -qE "\[X\] $need" <<<"$check" || die "Horovod was built without $need:
$check"
done
say "Horovod built with ${needs[*]}"

if [ ! -x "$MLFLOW_VENV/bin/mlflow" ]; then
    say "installing the MLflow tracking server the tests start ($MLFLOW_SERVER_SPEC) in $MLFLOW_VENV"
    "$PYTHON" -m venv "$MLFLOW_VENV"
    "$MLFLOW_VENV/bin/python" -m pip install --disable-pip-version-check -q "$MLFLOW_SERVER_SPEC" \
        || die "could not install $MLFLOW_SERVER_SPEC into $MLFLOW_VENV"
fi
class_archive  # says so when it builds one (once per Java and pyspark install, ~20 s)
setup_inputs_hash >"$STAMP"
say "done ($VENV). Try: make run"
