"""deploy/docker: each Dockerfile read instruction by instruction — dependencies installed
in a layer before the code is copied, a fixed non-root user before CMD/ENTRYPOINT, every
COPY source present and let through by the Dockerfile's own .dockerignore — and the
dependency step's requirement list taken from pyproject.toml. (No image is built here:
no Docker daemon and no registry on this machine.)"""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.launch.submit import IMAGE_ROOT
from tests.conftest import REPO

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

DOCKER = REPO / "deploy/docker"
IMAGES = ["Dockerfile", "Dockerfile.cuda", "Dockerfile.spark"]
CODE = ("pipeline/", "jobs/", "conf/")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` per instruction, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, f"{dockerfile.name}: a continuation line runs off the end"
    return out


def copies(steps) -> list[tuple[int, list[str], str]]:
    """``(index, sources, destination)`` of each COPY from the build context."""
    found = []
    for i, (word, args) in enumerate(steps):
        if word == "COPY" and "--from=" not in args:
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            found.append((i, parts[:-1], parts[-1]))
    return found


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` leave ``path`` (or a folder above it) out; the
    last matching pattern decides, ``!`` lets back in (Docker's rules, without ``**`` in the middle)."""
    path = path.rstrip("/")
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p.split("/")[-1], pattern[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            verdict = not keep
    return verdict


@pytest.mark.parametrize("name", IMAGES)
def test_dependencies_install_in_a_layer_before_the_code(name):
    steps = instructions(DOCKER / name)
    assert steps[0][0] in ("FROM", "ARG") and any(w == "FROM" for w, _ in steps)
    deps = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "deploy/docker/install-deps.sh" in a)
    first_code = min(i for i, sources, _ in copies(steps) if any(s.startswith(CODE) for s in sources))
    assert deps < first_code, f"{name}: the dependency layer must come before the code is copied"
    for i, sources, _ in copies(steps):
        if i < deps:  # what the dependency layer may depend on: nothing that changes with the code
            assert all(s in ("pyproject.toml", "deploy/local/build_horovod.sh", "deploy/docker/install-deps.sh", "deploy/docker/ssh_config")
                       for s in sources), (name, sources)
    project = [a for w, a in steps[first_code:] if w == "RUN" and "pip install" in a]
    assert project and all("--no-deps" in a and "-e ." in a for a in project)  # no dependency resolved after the code


def test_every_copy_source_is_in_the_repository_and_in_the_build_context():
    for name in IMAGES:
        patterns = [line.strip() for line in (DOCKER / f"{name}.dockerignore").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
        for _, sources, _ in copies(instructions(DOCKER / name)):
            for source in sources:
                assert (REPO / source).exists(), f"{name}: COPY {source}: no such file"
                assert not ignored(source, patterns), f"{name}: COPY {source} is left out by {name}.dockerignore"
        assert ignored(".venv/bin/python", patterns) and ignored("data/raw/digits/digits.csv.gz", patterns)
        assert ignored("pipeline/__pycache__/x.pyc", patterns) and not ignored("pipeline/cli.py", patterns)


def _user_and_start(steps) -> tuple[str, int, int]:
    users = [(i, a) for i, (w, a) in enumerate(steps) if w == "USER"]
    start = max(i for i, (w, _) in enumerate(steps) if w in ("CMD", "ENTRYPOINT"))
    return users[-1][1], users[-1][0], start


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_the_pipeline_images_run_as_a_fixed_non_root_user_with_sshd(name):
    steps = instructions(DOCKER / name)
    user, at, start = _user_and_start(steps)
    assert at < start and user not in ("root", "0") and user.isdigit()
    uid = next(a.split("=", 1)[1] for w, a in steps if w == "ARG" and a.startswith("UID="))
    assert uid == user  # useradd --uid "$UID": the user the manifests run as
    setup = " ".join(a for w, a in steps if w == "RUN")
    assert re.search(r'useradd --uid "\$UID" .*--create-home .*pipeline', setup) and "openssh-server" in setup
    assert ("WORKDIR", IMAGE_ROOT) in steps
    dests = {f"{IMAGE_ROOT}/{d}" + s.rsplit("/", 1)[-1] for _, sources, d in copies(steps) for s in sources if d.endswith("/")}
    assert {f"{IMAGE_ROOT}/deploy/k8s/mpi-worker.sh", f"{IMAGE_ROOT}/deploy/k8s/mpi-launcher.sh"} <= dests
    assert "deploy/local/build_horovod.sh" in " ".join(a for w, a in steps if w == "COPY")


def test_the_spark_image_keeps_sparks_entrypoint_user_and_version():
    steps = instructions(DOCKER / "Dockerfile.spark")
    base = next(a.split("=", 1)[1] for w, a in steps if w == "ARG" and a.startswith("SPARK_IMAGE="))
    pin = next(d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"] if d.startswith("pyspark"))
    assert base == f"apache/spark:{pin.split('==')[1]}-python3"  # the JVM side and pyspark of one version
    assert ("FROM", "${SPARK_IMAGE}") in steps
    user, at, start = _user_and_start(steps)
    assert user == "185" and at < start and ("ENTRYPOINT", '["/opt/entrypoint.sh"]') in steps
    assert ("WORKDIR", "/opt/spark/work-dir") in steps  # the official image's working directory, restored
    deps = next(a for w, a in steps if w == "RUN" and "install-deps.sh" in a)
    assert f"install-deps.sh {IMAGE_ROOT}/.venv" in deps and "WITH_HOROVOD=0" in deps
    assert f"PYSPARK_PYTHON={IMAGE_ROOT}/.venv/bin/python" in " ".join(a for w, a in steps if w == "ENV")


def test_install_deps_lists_pyprojects_dependencies():
    want = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]

    def listed(**env):
        proc = subprocess.run(["bash", str(DOCKER / "install-deps.sh"), "--list"], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHON": sys.executable, **env}, check=True)
        return proc.stdout.splitlines()

    assert listed() == want
    assert listed(DEPS_EXCLUDE="pyspark Pandas") == [d for d in want if not d.startswith(("pyspark", "pandas"))]
