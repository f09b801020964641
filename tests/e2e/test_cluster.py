"""Cluster mode for real: a Spark standalone master + 2 workers (1 core each) on 127.0.0.1
started by deploy/local/spark-cluster.sh; preprocess, train inside Spark (2 Horovod ranks,
one per worker) and score, all with spark-submit, and DDP ranks through TorchDistributor;
then the cluster is stopped. The
master's JSON, the workers' JSON and the driver's event log show that the applications
registered and their tasks ran in executors on both workers, not in the driver. Also
``train --launcher spark`` in local[2], and a rank failure surfacing on the driver."""
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from pipeline.launch.torchrun import free_port
from tests.conftest import DIGITS_CONF, DIGITS_CSV, REPO

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.dist]
BIN = Path(sys.executable).parent
CLUSTER = str(REPO / "deploy/local/spark-cluster.sh")


def run(argv, env=None, timeout=900, ok=True):
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if ok and proc.returncode != 0:
        pytest.fail(f"{' '.join(argv[:3])} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "SPARK_CLUSTER_DIR": str(directory), "SPARK_CONF_DIR": str(directory / "conf"), "SPARK_MASTER_PORT": str(free_port()),
           "SPARK_MASTER_UI": str(free_port()), "SPARK_WORKER_UI": str(free_port()), "SPARK_WORKERS": "2",
           "SPARK_WORKER_CORES": "1", "SPARK_WORKER_MEM": "1g", "PYTHON": sys.executable,
           "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    started = run(["bash", CLUSTER, "start"], env=env, timeout=300)
    url = started.stdout.strip().splitlines()[-1]
    assert url == f"spark://127.0.0.1:{env['SPARK_MASTER_PORT']}"
    pids = [int(p.read_text()) for p in Path(env["SPARK_CLUSTER_DIR"]).glob("*.pid")]
    assert len(pids) == 3
    try:
        yield url, env
    finally:
        run(["bash", CLUSTER, "stop"], env=env)
        assert run(["bash", CLUSTER, "status"], env=env, ok=False).returncode != 0
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def get_json(port: str) -> dict:
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/", timeout=5))


def workers_json(env: dict) -> list[dict]:
    """Each worker's own JSON, found through the master's list of workers (a worker whose
    UI port was taken at start moves to the next one, so the port is read, not assumed)."""
    workers = get_json(env["SPARK_MASTER_UI"])["workers"]
    assert len(workers) == 2, workers
    return [json.load(urllib.request.urlopen(f"{w['webuiaddress']}/json/", timeout=5)) for w in workers]


def test_preprocess_train_and_score_on_a_standalone_cluster(cluster, tmp_path):
    url, env = cluster
    # The master comes from the cluster's spark-defaults.conf (SPARK_CONF_DIR), as on a real cluster.
    submit = [str(BIN / "spark-submit"), "--conf", "spark.ui.enabled=false"]
    data = [f"data.root={tmp_path / 'data'}", f"data.source.path={DIGITS_CSV}"]
    version = run([*submit, "jobs/preprocess.py", "--config", str(DIGITS_CONF), *data], env=env).stdout.strip().splitlines()[-1]
    assert (Path(version) / "manifest.json").is_file()
    apps = get_json(env["SPARK_MASTER_UI"])["completedapps"]
    assert [a["name"] for a in apps] == ["prepare:digits_cnn"], apps
    app_id = apps[0]["id"]
    events = [json.loads(line) for line in (Path(env["SPARK_CLUSTER_DIR"]) / "events" / app_id).read_text().splitlines()]
    executors = {e["Task Info"]["Executor ID"] for e in events if e["Event"] == "SparkListenerTaskEnd"}
    assert executors and "driver" not in executors, executors
    for worker in workers_json(env):  # each worker ran an executor of the application
        assert app_id in {x["appid"] for x in worker["finishedexecutors"] + worker["executors"]}, worker
    out = run([*submit, "jobs/train_on_spark.py", "--config", str(DIGITS_CONF), "--np", "2", *data,
               f"run.root={tmp_path / 'runs'}", "run.name=cluster", "train.epochs=5"], env=env).stdout
    run_dir = Path(out.strip().splitlines()[-1])
    report = json.loads((run_dir / "report.json").read_text())
    assert run_dir == tmp_path / "runs" / "cluster" and report["world_size"] == 2 and report["engine"] == "horovod"
    assert report["threads_per_rank"] == 1 and report["test_accuracy"] >= 0.9
    scored = run([*submit, "jobs/score.py", "--config", str(DIGITS_CONF), *data, "--model", str(run_dir / "model.pt"),
                  "--input", str(DIGITS_CSV), "--output", str(tmp_path / "scored")], env=env).stdout
    assert scored.strip().splitlines()[-1] == str(tmp_path / "scored")
    metrics = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert metrics["scored_rows"] == 1797 and metrics["accuracy"] >= 0.9

    # The DDP engine launches the Spark-native way too: TorchDistributor, one rank per task.
    out = run([*submit, "jobs/train_on_spark.py", "--config", str(DIGITS_CONF), "--np", "2", *data, "dist.engine=torch",
               f"run.root={tmp_path / 'runs'}", "run.name=ddp", "train.epochs=3"], env=env).stdout
    report = json.loads((tmp_path / "runs" / "ddp" / "report.json").read_text())
    assert out.strip().splitlines()[-1] == str(tmp_path / "runs" / "ddp")
    assert report["world_size"] == 2 and report["engine"] == "torch" and report["test_accuracy"] >= 0.9
    # The newest application (ids are app-<time>-<counter>): the DDP training just run.
    ddp_id = max(a["id"] for a in get_json(env["SPARK_MASTER_UI"])["completedapps"] if a["name"] == "train:digits_cnn")
    events = [json.loads(line) for line in (Path(env["SPARK_CLUSTER_DIR"]) / "events" / ddp_id).read_text().splitlines()]
    executors = {e["Task Info"]["Executor ID"] for e in events if e["Event"] == "SparkListenerTaskEnd"}
    assert len(executors) == 2 and "driver" not in executors, executors  # the two ranks ran in two executors
    for worker in workers_json(env):
        assert ddp_id in {x["appid"] for x in worker["finishedexecutors"] + worker["executors"]}, worker


def test_train_launcher_spark_in_local_mode_and_a_failing_rank(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    base = [sys.executable, "-m", "pipeline", "train", "--config", str(DIGITS_CONF), "--launcher", "spark", "--np", "2",
            f"data.root={root}", f"run.root={tmp_path}"]
    out = run([*base, "run.name=local", "train.epochs=2"], env=env).stdout
    report = json.loads((tmp_path / "local" / "report.json").read_text())
    assert out.strip().splitlines()[-1] == str(tmp_path / "local") and report["world_size"] == 2
    failed = run([*base, "run.name=bad", "data.version=v-does-not-exist"], env=env, ok=False)
    assert failed.returncode != 0
    err = failed.stderr.strip().splitlines()
    assert any("inside Spark failed" in line for line in err), failed.stderr[-3000:]
    assert "v-does-not-exist" in failed.stderr  # the rank's own error, in the tail shown on the driver
