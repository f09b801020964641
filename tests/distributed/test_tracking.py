"""MLflow tracking for real: a 2-rank Horovod run logs to an `mlflow server` started on
127.0.0.1 (from rank 0 only), a pre-empted and resumed run continues the same MLflow run,
the default store is SQLite beside the runs, and a dead server never stops training."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.launch.torchrun import free_port
from pipeline.models import build_model
from pipeline.train.tracking import TRACKING_FILE
from tests.conftest import REPO
from tests.distributed.launch import launch_argv, run_job
from tests.distributed.test_preemption import _preempt_after_start

pytestmark = pytest.mark.dist
mlflow = pytest.importorskip("mlflow")
SERVER = REPO / ".venv-mlflow" / "bin" / "mlflow"  # the tracking server lives in its own venv (deploy/local/setup.sh)


@pytest.fixture
def mlflow_server(tmp_path):
    if not SERVER.exists():
        pytest.fail(f"{SERVER} missing: run `make setup` (deploy/local/setup.sh installs the MLflow server for the tests)")
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    log = open(store / "server.log", "w")
    proc = subprocess.Popen([str(SERVER), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                             "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not come up:\n{(store / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield url
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
        log.close()


def _one_run(client, experiment: str):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, f"{len(runs)} MLflow runs: only rank 0 logs, and a resume continues its run"
    return runs[0]


def test_two_ranks_log_to_a_server_and_a_resume_continues_the_run(digits_version, tmp_path, mlflow_server):
    root = digits_version[0].parent.parent
    common = [f"data.root={root}", f"run.root={tmp_path}", "run.name=tracked", "train.epochs=3", "train.preemption_check_steps=5",
              "dist.engine=horovod", "run.tracking=mlflow", f"run.tracking_uri={mlflow_server}", "name=tracking_test"]
    status, output = _preempt_after_start(launch_argv("horovodrun", 2, common), rank="0")
    assert status != 0 and "preempted:" in output, output[-3000:]
    client = mlflow.MlflowClient(mlflow_server)
    assert _one_run(client, "tracking_test").info.status == "KILLED"

    run_job(launch_argv("horovodrun", 2, common, resume=True))
    run = _one_run(client, "tracking_test")
    assert run.info.status == "FINISHED"
    assert json.loads((tmp_path / "tracked" / TRACKING_FILE).read_text())["run_id"] == run.info.run_id
    assert run.data.params["train.epochs"] == "3" and run.data.params["dist.engine"] == "horovod"
    assert run.data.params["run.tracking_uri"] == mlflow_server
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert {m.step for m in history} == {1, 2, 3}
    report = json.loads((tmp_path / "tracked" / "report.json").read_text())
    assert run.data.metrics["val_accuracy"] == pytest.approx(json.loads(
        (tmp_path / "tracked" / "metrics.jsonl").read_text().splitlines()[-1])["val_accuracy"])
    assert report["world_size"] == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "curves.png", "config.yaml", "run.json"} <= artifacts, artifacts

    # The logged model is the run's model: same outputs as model.pt on real rows.
    mlflow.set_tracking_uri(mlflow_server)  # runs:/ resolves against it (else a local store would be made here)
    logged = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    bundle = torch.load(tmp_path / "tracked" / "model.pt", weights_only=True)
    model = build_model(ModelConfig(**bundle["model"]), bundle["schema"], bundle["featurizer"])
    model.load_state_dict(bundle["state_dict"])
    import pyarrow.parquet as pq

    from pipeline.manifest import read_manifest

    version_dir, manifest = read_manifest(str(root / "digits"))
    shard = manifest["splits"]["test"]["shards"][0]["path"]
    table = pq.read_table(Path(version_dir) / shard).slice(0, 64)
    images = torch.tensor(table.column("image").to_pylist(), dtype=torch.uint8).reshape(-1, 1, 8, 8)
    model.eval(), logged.eval()
    with torch.no_grad():
        assert torch.equal(logged({"image": images}), model({"image": images}))


def test_default_store_is_sqlite_beside_the_runs_and_a_dead_server_never_stops_training(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    common = [f"data.root={root}", f"run.root={tmp_path}", "train.epochs=1", "dist.engine=single", "run.tracking=mlflow",
              "name=tracking_local"]
    run_job(launch_argv("single", 1, [*common, "run.name=local"]))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = _one_run(client, "tracking_local")
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())

    dead = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    proc = subprocess.run(launch_argv("single", 1, [*common, "run.name=dead", f"run.tracking_uri={dead}"]), cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "MLflow tracking" in line]
    assert len(warnings) == 1 and "training goes on without tracking" in warnings[0], warnings
    assert (tmp_path / "dead" / "report.json").exists() and not (tmp_path / "dead" / TRACKING_FILE).exists()
