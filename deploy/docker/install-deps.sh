#!/usr/bin/env bash
# The images' dependency layer: everything the project needs except its own code, so a
# code change rebuilds only the layers after it. Run from the build context's root with
# pyproject.toml (and deploy/local/build_horovod.sh when WITH_HOROVOD=1) copied in.
#
#   deploy/docker/install-deps.sh VENV          # create VENV and install into it
#   deploy/docker/install-deps.sh --list        # print the requirements it would install
#
# In VENV: torch (TORCH_VERSION from TORCH_INDEX_URL: the CPU or a CUDA build), the
# dependencies listed in pyproject.toml's [project] (DEPS_EXCLUDE: names to leave out),
# and, with WITH_HOROVOD=1 (the default), Horovod built by deploy/local/build_horovod.sh
# (Gloo; NCCL too where nvcc and a CUDA torch are there, required by PIPELINE_HOROVOD_GPU=1),
# checked with horovodrun --check-build. The project itself is installed after its code
# is copied: pip install --no-deps --no-build-isolation -e .
#
# Environment: PYTHON (python3), TORCH_VERSION (2.13.0), TORCH_INDEX_URL, WITH_HOROVOD (1),
# DEPS_EXCLUDE (space-separated names), PIPELINE_HOROVOD_GPU.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
WITH_HOROVOD="${WITH_HOROVOD:-1}"
say() { printf 'install-deps: %s\n' "$*"; }

# pyproject.toml's [project] dependencies, minus DEPS_EXCLUDE (tomllib from Python 3.11,
# else the copy pip vendors).
requirements() {
    "$PYTHON" - "${DEPS_EXCLUDE:-}" <<'PY'
import re, sys
try:
    import tomllib
except ImportError:
    from pip._vendor import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
exclude = {name.lower() for name in sys.argv[1].split()}
print("\n".join(d for d in deps if re.match(r"[A-Za-z0-9._-]+", d).group(0).lower() not in exclude))
PY
}

if [[ "${1:-}" == "--list" ]]; then
    requirements
    exit 0
fi
VENV="${1:?usage: install-deps.sh VENV | --list}"
"$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check --no-cache-dir -q)
"${PIP[@]}" --upgrade pip
say "torch==$TORCH_VERSION${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
"${PIP[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==$TORCH_VERSION"
mapfile -t deps < <(requirements)
say "the project's dependencies: ${deps[*]}"
"${PIP[@]}" "${deps[@]}" 'setuptools<81' wheel
if [[ "$WITH_HOROVOD" == 1 ]]; then
    "${PIP[@]}" cmake
    wheels="$(mktemp -d)"
    bash deploy/local/build_horovod.sh "$PY" "$wheels"
    "${PIP[@]}" --no-deps "$wheels"/horovod-*.whl
    rm -rf "$wheels"
    check="$("$VENV/bin/horovodrun" --check-build)"
    needs=(PyTorch Gloo)
    [[ "${PIPELINE_HOROVOD_GPU:-}" == 1 ]] && needs+=(NCCL)
    for need in "${needs[@]}"; do
        grep -qE "\[X\] $need" <<<"$check" || { echo "install-deps: ERROR: Horovod was built without $need:
$check" >&2; exit 1; }
    done
    say "Horovod built with ${needs[*]}"
fi
