"""Failures under 2 real Horovod ranks (horovodrun, Gloo, 127.0.0.1): an error on one rank
reaches every rank at the next agreement point and ends the job at once with one line; a
rank stuck outside the collectives ends the job within about twice ``dist.timeout_s``; a
shard whose bytes changed (same size) stops training at the row group, naming the file."""
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.prep import prepare
from tests.conftest import REPO, digits_config
from tests.distributed.launch import launch_argv

pytestmark = pytest.mark.dist
FAULTS = REPO / "tests" / "faults"


def run_ranks(overrides: list[str], env: dict | None = None, resume: bool = False, timeout: float = 300):
    import os

    started = time.monotonic()
    proc = subprocess.run(launch_argv("horovodrun", 2, overrides, resume=resume), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    return proc, time.monotonic() - started


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "error: " in line]


def rank_tracebacks(proc) -> list[str]:
    """Tracebacks printed by the ranks (horovodrun prefixes their lines with [rank]);
    horovodrun's own report of a failed rank is not one of them."""
    return [line for line in (proc.stdout + proc.stderr).splitlines() if re.match(r"\[\d+\]<std(?:out|err)>:Traceback", line)]


def test_an_error_on_rank_0_only_ends_every_rank_at_once(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    # Only rank 0 looks for the run to resume; rank 1 used to wait in a broadcast until the timeout.
    proc, took = run_ranks([f"data.root={root}", f"run.root={tmp_path}", "run.name=never-ran", "dist.timeout_s=240"], resume=True)
    assert proc.returncode != 0 and took < 90, (took, proc.stderr[-3000:])
    errors = error_lines(proc)
    assert len(errors) == 1 and "no step-*.pt checkpoint to resume from" in errors[0], proc.stderr[-3000:]
    assert rank_tracebacks(proc) == []


def test_an_error_on_rank_1_only_is_reported_once_by_rank_0(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    env = {"PYTHONPATH": str(FAULTS), "PIPELINE_TEST_KILL_AT": "rank-error", "PIPELINE_TEST_RANK": "1"}
    proc, took = run_ranks([f"data.root={root}", f"run.root={tmp_path}", "run.name=r", "dist.timeout_s=240"], env=env)
    assert proc.returncode != 0 and took < 90, (took, proc.stderr[-3000:])
    errors = error_lines(proc)
    assert len(errors) == 1 and errors[0].startswith("[0]") and "shard listed in the manifest is missing" in errors[0]
    assert "(on rank 1)" in errors[0] and rank_tracebacks(proc) == []


def test_a_rank_stuck_outside_a_collective_ends_the_job_within_twice_the_timeout(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    timeout_s = 15
    env = {"PYTHONPATH": str(FAULTS), "PIPELINE_TEST_KILL_AT": "rank-hang", "PIPELINE_TEST_RANK": "1",
           "PIPELINE_TEST_MARKS": str(tmp_path / "marks")}
    proc, _ = run_ranks([f"data.root={root}", f"run.root={tmp_path}", "run.name=hang", f"dist.timeout_s={timeout_s}",
                         "train.epochs=3", "data.reader.prefetch=0"], env=env)
    ended = time.time()
    hung_at = float((tmp_path / "marks" / "hung-at").read_text())  # rank 1 blocked on a FIFO then
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert ended - hung_at <= 2 * timeout_s, f"the job hung {ended - hung_at:.0f} s, dist.timeout_s={timeout_s}"


@pytest.mark.spark
def test_a_shard_altered_in_place_stops_training_naming_the_file(spark, digits_version, tmp_path):
    version_dir, manifest = digits_version
    copy = tmp_path / "data" / "digits" / version_dir.name
    shutil.copytree(version_dir, copy)
    shard = copy / manifest["splits"]["train"]["shards"][1]["path"]
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])  # same size, other bytes
    shard.write_bytes(bytes(data))
    proc, _ = run_ranks([f"data.root={tmp_path / 'data'}", f"data.version={copy.name}", f"run.root={tmp_path}", "run.name=bad",
                         "train.epochs=1", "dist.timeout_s=60"])
    assert proc.returncode != 0, "training must not run to the end on an altered shard"
    errors = error_lines(proc)
    assert any(str(shard) in e and "row group" in e and "manifest.json and re-run prepare" in e for e in errors), errors
    assert rank_tracebacks(proc) == []
    # The fix the message names works: without its manifest the version is rebuilt by prepare.
    (copy / "manifest.json").unlink()
    result = prepare(digits_config(tmp_path / "data"), spark)
    assert result.published and Path(result.version_dir) == copy
    assert file_sha256(shard) == manifest["splits"]["train"]["shards"][1]["sha256"]
