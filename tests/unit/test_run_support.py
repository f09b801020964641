"""The small pieces around a run: the progress line, run.json, the pre-emption watch and
the tracking params."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess

import pytest

from pipeline.config import load_config, to_dict
from pipeline.train import records
from pipeline.train.preemption import PreemptionWatch
from pipeline.train.progress import ProgressLine, duration
from pipeline.train.tracking import flatten
from tests.conftest import DIGITS_CONF, REPO


def test_progress_line_every_interval_with_rate_and_time_left(caplog):
    now = [100.0]
    line = ProgressLine(interval_s=10, epoch=1, epochs=4, steps=50, steps_per_epoch=100, samples_per_step=64, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="pipeline.train.progress")
    for _ in range(49):  # one step a second
        now[0] += 1
        line.update()
    shown = [r.getMessage() for r in caplog.records]
    assert len(shown) == 4, shown  # at 10, 20, 30, 40 s; never for the epoch's last step (the epoch line says it)
    # 20 steps in 20 s at 64 rows: 64 samples/s; 30 steps left in this epoch, 2 more epochs of 100.
    assert shown[1] == "epoch 2/4 step 20/50 64 samples/s, epoch ETA 0:00:30, run ETA 0:03:50 (training only)"
    assert duration(3725.4) == "1:02:05"


def test_run_json_records_each_start(tmp_path, monkeypatch):
    monkeypatch.setenv(records.COMMAND_ENV, "python -m pipeline train --config conf/x.yaml --np 2")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("PIPELINE_COMMIT", raising=False)
    records.record_start(str(tmp_path), resume=False, world_size=2)
    records.record_start(str(tmp_path), resume=True, world_size=1)
    starts = json.loads((tmp_path / "run.json").read_text())["starts"]
    assert [s["resume"] for s in starts] == [False, True] and [s["world_size"] for s in starts] == [2, 1]
    first = starts[0]
    assert first["command"] == "python -m pipeline train --config conf/x.yaml --np 2"
    assert first["scheduler"] == {"SLURM_JOB_ID": "4242"}
    assert {"pipeline", "torch", "pyarrow", "numpy"} <= first["packages"].keys()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert first["git"]["commit"] == head and isinstance(first["git"]["dirty"], bool)
    monkeypatch.setenv("PIPELINE_COMMIT", "abc123")  # an image built without .git says which commit it holds
    assert records.git_commit()["commit"] == "abc123"
    monkeypatch.delenv("PIPELINE_COMMIT")
    assert records.git_commit(tmp_path) is None  # not a checkout (an installed package): no commit claimed


def test_preemption_watch_remembers_sigusr1_and_gives_it_back():
    before = signal.getsignal(signal.SIGUSR1)
    watch = PreemptionWatch(check_steps=10)
    try:
        assert watch.active and not watch.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert watch.requested
        assert [s for s in range(1, 31) if watch.due(s)] == [10, 20, 30]
    finally:
        watch.close()
    assert signal.getsignal(signal.SIGUSR1) == before  # never left ignored: later children could not trap it
    off = PreemptionWatch(check_steps=0)
    assert not off.active and not off.due(10)


def test_tracking_params_are_the_flattened_resolved_config():
    cfg = load_config(DIGITS_CONF, ["train.lr=0.05"])
    params = flatten(to_dict(cfg))
    assert params["train.lr"] == "0.05" and params["run.tracking"] == "none"
    assert json.loads(params["data.source.classes"]) == [str(i) for i in range(10)]
    assert not any(isinstance(v, dict) for v in params.values())


@pytest.mark.parametrize("root", ["s3://bucket/runs", "gs://b/r"])
def test_tracking_on_an_object_store_root_needs_a_uri(root):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="set run.tracking_uri"):
        load_config(DIGITS_CONF, ["run.tracking=mlflow", f"run.root={root}"])
    load_config(DIGITS_CONF, ["run.tracking=mlflow", f"run.root={root}", "run.tracking_uri=http://127.0.0.1:5000"])


def test_a_file_uri_root_keeps_the_default_store_beside_the_runs(tmp_path):
    from pipeline.train.tracking import default_tracking_uri

    cfg = load_config(DIGITS_CONF, ["run.tracking=mlflow", f"run.root={tmp_path.as_uri()}"])  # local: no URI needed
    assert default_tracking_uri(cfg.run.root) == (f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "mlartifacts").as_uri())
    assert default_tracking_uri(str(tmp_path)) == default_tracking_uri(cfg.run.root)


def test_credentials_in_the_tracking_uri_are_refused():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_USERNAME"):
        load_config(DIGITS_CONF, ["run.tracking=mlflow", "run.tracking_uri=https://user:secret@mlflow.example:5000"])
