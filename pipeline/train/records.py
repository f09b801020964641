"""run.json: how each start of a run came about -- the command line, the packages, the
code's git commit, the host and the scheduler's job -- so a result can be traced and
repeated. A resumed run adds one record per start (the file is rewritten whole: object
stores cannot append)."""
from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

RECORD_NAME = "run.json"
COMMAND_ENV = "PIPELINE_COMMAND"  # the user's command, set by the CLI for the ranks it starts
PACKAGES = ("pipeline", "torch", "horovod", "numpy", "pyarrow", "pyspark", "omegaconf", "mlflow", "onnx", "onnxruntime")
SCHEDULER_ENV = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_RESTART_COUNT", "SLURM_NNODES", "OMPI_COMM_WORLD_SIZE",
                 "HOROVOD_SIZE", "WORLD_SIZE", "KUBERNETES_SERVICE_HOST", "SPARK_ENV_LOADED", "CONTAINER_ID")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a run's result depends on (absent ones left out)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def git_commit(source: Path | None = None) -> dict | None:
    """The commit of the checkout the ``pipeline`` package runs from, and whether files
    differ from it; ``PIPELINE_COMMIT`` where the code was copied without git (images)."""
    if os.environ.get("PIPELINE_COMMIT"):
        return {"commit": os.environ["PIPELINE_COMMIT"], "dirty": None, "from": "PIPELINE_COMMIT"}
    source = source or Path(__file__).resolve().parents[2]
    if not (source / "pyproject.toml").exists():  # installed as a package: not a checkout
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"], cwd=source, capture_output=True,
                                text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip()), "from": str(source)}


def start_record(resume: bool, world_size: int) -> dict:
    """One start of the run, as seen from rank 0."""
    rank_command = shlex.join([sys.executable, *sys.argv])
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "resume": resume,
        "command": os.environ.get(COMMAND_ENV, rank_command),
        "rank0_command": rank_command,
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "world_size": world_size,
        "python": platform.python_version(),
        "packages": package_versions(),
        "git": git_commit(),
        "scheduler": {k: os.environ[k] for k in SCHEDULER_ENV if k in os.environ},
    }


def record_start(run_dir: str, resume: bool, world_size: int) -> None:
    """Add this start's record to ``<run_dir>/run.json`` (rank 0 only). A record that
    cannot be read or written is a warning: it never stops training."""
    from pipeline import storage  # pyarrow: not for the command line's own import

    path = storage.join(run_dir, RECORD_NAME)
    try:
        starts = []
        if resume and storage.exists(path):
            try:
                starts = json.loads(storage.read_text(path)).get("starts", [])
            except (ValueError, AttributeError) as err:
                log.warning("%s is unreadable (%s); starting it again", path, err)
        starts.append(start_record(resume, world_size))
        storage.write_text(path, json.dumps({"starts": starts}, indent=2) + "\n")
    except Exception as err:  # noqa: BLE001 -- a record of the run must not end the run
        log.warning("could not write %s (%s: %s); training goes on", path, type(err).__name__, err)
