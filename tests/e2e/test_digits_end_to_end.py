"""The README's commands, run as a user runs them: spark-submit, horovodrun, python -m pipeline."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.launch.horovod import horovodrun_argv, train_command
from pipeline.train.checkpoint import checkpoint_files
from tests.conftest import DIGITS_CONF, DIGITS_CSV, REPO

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
REPORT_KEYS = {"test_accuracy", "world_size", "engine", "epochs", "train_samples_per_sec", "dataset_fingerprint"}


def run(argv, timeout=900):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    proc = subprocess.run([str(a) for a in argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{argv[:4]} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout.strip().splitlines()


def check_run_dir(run_dir: Path, world_size: int, epochs: int, min_accuracy: float) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["world_size"] == world_size and report["epochs"] == epochs
    assert report["test_accuracy"] >= min_accuracy, report
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == epochs
    assert (run_dir / "config.yaml").is_file() and (run_dir / "curves.png").stat().st_size > 0
    latest = checkpoint_files(run_dir)[0]  # the epoch-end checkpoint, loadable without pickled code
    assert torch.load(latest, weights_only=True)["progress"]["epoch"] == epochs
    bundle = torch.load(run_dir / "model.pt", weights_only=True)  # no pickled code in a model file
    assert bundle["dataset_fingerprint"] == report["dataset_fingerprint"]
    return report


def test_spark_submit_prepare_then_horovodrun_train(tmp_path):
    common = [f"data.root={tmp_path / 'data'}", f"data.source.path={DIGITS_CSV}"]
    out = run([BIN / "spark-submit", "--master", "local[2]", "jobs/preprocess.py", "--config", DIGITS_CONF, *common])
    version_dir = Path(out[-1])
    assert version_dir.name.startswith("v-") and (version_dir / "manifest.json").is_file()

    overrides = [*common, f"run.root={tmp_path / 'runs'}", "train.epochs=3"]
    argv = horovodrun_argv(2, train_command(str(DIGITS_CONF), overrides), hosts="127.0.0.1:2",
                           network_interface="lo", horovodrun=str(BIN / "horovodrun"))
    out = run(argv)
    run_dir = Path(out[-1].split(">:", 1)[-1].strip())  # horovodrun prefixes rank output
    report = check_run_dir(run_dir, world_size=2, epochs=3, min_accuracy=0.85)
    assert report["dataset_version"] == str(version_dir)

    # Plain python, no launcher: a world of one.
    out = run([sys.executable, "jobs/train.py", "--config", DIGITS_CONF, *overrides[:-1], "train.epochs=1", "run.name=single"])
    check_run_dir(Path(out[-1]), world_size=1, epochs=1, min_accuracy=0.5)


def test_pipeline_run_prepares_trains_and_reports(tmp_path):
    data = [f"data.root={tmp_path / 'data'}", f"data.source.path={DIGITS_CSV}"]
    prepared = Path(run([sys.executable, "-m", "pipeline", "prepare", "--config", DIGITS_CONF, *data])[-1])
    # Another version of the same dataset published since: LATEST names it, not the one above.
    other = run([sys.executable, "-m", "pipeline", "prepare", "--config", DIGITS_CONF, *data, "data.split.salt=1"])[-1]
    assert (tmp_path / "data" / "digits" / "LATEST").read_text().strip() == Path(other).name != prepared.name
    out = run([sys.executable, "-m", "pipeline", "run", "--config", DIGITS_CONF, "--np", "2", *data,
               f"run.root={tmp_path / 'runs'}", "train.epochs=3"])
    run_dir = Path(out[-1])
    report = check_run_dir(run_dir, world_size=2, epochs=3, min_accuracy=0.85)
    summary = [line for line in out if line.startswith("summary:")]
    assert report["dataset_version"] == str(prepared) and summary and str(prepared) in summary[0]  # the version it prepared
    assert (tmp_path / "data" / "digits" / "LATEST").read_text().strip() == prepared.name  # unchanged, re-pointed
    inspected = run([sys.executable, "-m", "pipeline", "inspect", report["dataset_version"]])
    assert any("input rows 1797" in line for line in inspected)
    inspected = run([sys.executable, "-m", "pipeline", "inspect", run_dir])
    assert any("test_accuracy" in line for line in inspected)


def test_cli_errors_are_one_clear_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "train", "--config", str(DIGITS_CONF), "train.epoch=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: override 'train.epoch=1': unknown key 'train.epoch'")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "train", "--config", str(DIGITS_CONF), f"data.root={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "run `python -m pipeline prepare` first" in proc.stderr.strip().splitlines()[-1]
