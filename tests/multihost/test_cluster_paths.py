"""Every cluster path across hosts on the rig: inputs from a path every node reads, every
output on the object store, no shared writable disk.

The proof that work ran on the workers comes from Spark itself: the master's JSON lists
the application, and the driver's event log names the executor and host of every task.
"""
import json
import sys

import pytest

from tests.conftest import DIGITS_CONF, DIGITS_CSV
from tests.multihost.rig import BUCKET, last_line, spark_submit, task_executors

DATA = [f"data.root=s3://{BUCKET}/paths/data", f"data.source.path={DIGITS_CSV}"]
RUNS = f"s3://{BUCKET}/paths/runs"


@pytest.fixture(scope="module")
def prepared(rig):
    """spark-submit jobs/preprocess.py on the cluster (its master from spark-defaults.conf)."""
    before = {a["id"] for a in rig.master_json()["completedapps"]}
    proc = rig.run("n1", *spark_submit("jobs/preprocess.py", "--config", str(DIGITS_CONF), *DATA))
    apps = [a for a in rig.master_json()["completedapps"] if a["id"] not in before]
    return last_line(proc), apps


def test_preprocess_runs_on_the_workers_and_publishes_to_the_store(rig, prepared):
    version, apps = prepared
    assert version.startswith(f"s3://{BUCKET}/paths/data/digits/v-")
    assert len(apps) == 1 and apps[0]["name"] == "prepare:digits_cnn" and apps[0]["state"] == "FINISHED"
    tasks = task_executors(rig.event_log(apps[0]["id"]))
    workers = {rig.addr(n) for n in rig.nodes}
    assert tasks and "driver" not in {executor for executor, _ in tasks}
    assert {host for _, host in tasks} <= workers and len({host for _, host in tasks}) >= 2, tasks
    manifest = rig.read_json(f"{version}/manifest.json")
    named = {s["path"] for split in manifest["splits"].values() for s in split["shards"]}
    assert named <= set(rig.keys(version)) and not any(k.startswith("_staging") for k in rig.keys(version))
    assert manifest["input_rows"] == 1797


@pytest.mark.parametrize("np", [2, 3])
def test_train_on_spark_puts_one_rank_on_each_host(rig, prepared, np):
    version, _ = prepared
    proc = rig.run("n1", *spark_submit("jobs/train_on_spark.py", "--config", str(DIGITS_CONF), "--np", str(np), *DATA,
                                       f"run.root={RUNS}", f"run.name=spark{np}", "train.epochs=3",
                                       f"data.version={version.rsplit('/', 1)[1]}"))
    run_dir = last_line(proc)
    assert run_dir == f"{RUNS}/spark{np}"
    report = rig.read_json(f"{run_dir}/report.json")
    assert report["world_size"] == np and report["engine"] == "horovod" and report["dataset_version"] == version
    assert sorted(report["hosts"]) == sorted(set(report["hosts"])) and set(report["hosts"]) <= set(rig.nodes), report["hosts"]
    assert report["test_accuracy"] >= 0.8
    assert "model.pt" in rig.keys(run_dir) and any(k.startswith("checkpoints/step-") for k in rig.keys(run_dir))


def test_ddp_inside_spark_with_torch_distributor_runs_one_rank_per_host(rig, prepared):
    """dist.engine=torch under spark-submit: TorchDistributor (local_mode=False) starts each
    DDP rank in a barrier task on a worker; the event log shows where those tasks ran."""
    version, _ = prepared
    before = {a["id"] for a in rig.master_json()["completedapps"]}
    proc = rig.run("n1", *spark_submit("jobs/train_on_spark.py", "--config", str(DIGITS_CONF), "--np", "2", *DATA,
                                       f"run.root={RUNS}", "run.name=torch-spark", "train.epochs=2", "dist.engine=torch",
                                       f"data.version={version.rsplit('/', 1)[1]}"))
    assert last_line(proc) == f"{RUNS}/torch-spark"
    (app,) = [a for a in rig.master_json()["completedapps"] if a["id"] not in before]
    assert app["name"] == "train:digits_cnn" and app["state"] == "FINISHED", app
    tasks = task_executors(rig.event_log(app["id"]))
    addresses = {rig.addr(n): n for n in rig.nodes}
    assert len(tasks) == 2 and "driver" not in {e for e, _ in tasks} and {h for _, h in tasks} <= set(addresses), tasks
    report = rig.read_json(f"{RUNS}/torch-spark/report.json")
    assert report["world_size"] == 2 and report["engine"] == "torch" and report["dataset_version"] == version
    # The ranks ran in those tasks: one per host, on the hosts Spark put the tasks on.
    assert sorted(report["hosts"]) == sorted(addresses[h] for _, h in tasks) and len(set(report["hosts"])) == 2, (report["hosts"], tasks)
    assert report["test_accuracy"] >= 0.8


def test_ddp_with_one_torchrun_per_host(rig, prepared):
    version, _ = prepared
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"{rig.addr('n1')}:29400", "--rdzv-id", "ddp-rig", "jobs/train.py", "--config", str(DIGITS_CONF),
               *DATA, f"run.root={RUNS}", "run.name=ddp", "train.epochs=2", "dist.engine=torch",
               f"data.version={version.rsplit('/', 1)[1]}"]
    nodes = [rig.popen(node, *command) for node in ("n1", "n2")]
    outputs = [p.communicate(timeout=600)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    report = rig.read_json(f"{RUNS}/ddp/report.json")
    assert report["world_size"] == 2 and report["engine"] == "torch" and sorted(report["hosts"]) == ["n1", "n2"]


def test_horovodrun_over_ssh(rig, prepared):
    version, _ = prepared
    proc = rig.run("n1", sys.executable, "-m", "pipeline", "train", "--config", str(DIGITS_CONF), "--np", "2",
                   "--hosts", "n1:1,n2:1", *DATA, f"run.root={RUNS}", "run.name=ssh", "train.epochs=2",
                   f"data.version={version.rsplit('/', 1)[1]}")
    assert last_line(proc) == f"{RUNS}/ssh"
    report = rig.read_json(f"{RUNS}/ssh/report.json")
    assert report["world_size"] == 2 and report["hosts"] == ["n1", "n2"]


def test_score_on_the_cluster_equals_local_scoring(rig, prepared):
    version, _ = prepared
    run_dir = f"{RUNS}/spark2"
    if "model.pt" not in rig.keys(run_dir):
        pytest.skip("needs the model trained by test_train_on_spark_puts_one_rank_on_each_host[2]")
    args = ["--config", str(DIGITS_CONF), *DATA, "--model", f"{run_dir}/model.pt", "--input", str(DIGITS_CSV)]
    cluster = f"s3://{BUCKET}/paths/scored-cluster"
    local = f"s3://{BUCKET}/paths/scored-local"
    rig.run("n1", *spark_submit("jobs/score.py", *args, "--output", cluster))
    rig.run("n2", sys.executable, "-m", "pipeline", "score", *args, "--output", local,
            env={"PYSPARK_SUBMIT_ARGS": "--master local[1] pyspark-shell"})
    compare = """
import io, json, sys
import numpy as np, pyarrow.parquet as pq
from pipeline import storage
def table(out):
    files = json.loads(storage.read_text(out + "/metrics.json"))["files"]["predictions"]
    parts = [pq.read_table(io.BytesIO(storage.read_bytes(out + "/" + f["path"]))) for f in files]
    t = parts[0] if len(parts) == 1 else __import__("pyarrow").concat_tables(parts)
    return t.sort_by("row_id").to_pydict()
a, b = table(sys.argv[1]), table(sys.argv[2])
probs = np.abs(np.array(a["probabilities"]) - np.array(b["probabilities"])).max()
print(json.dumps({"rows": len(a["row_id"]), "same_ids": a["row_id"] == b["row_id"],
                  "same_predictions": a["prediction_index"] == b["prediction_index"], "max_prob_diff": float(probs)}))
"""
    result = json.loads(rig.python("n1", compare, cluster, local).strip().splitlines()[-1])
    assert result == {"rows": 1797, "same_ids": True, "same_predictions": True, "max_prob_diff": result["max_prob_diff"]}
    assert result["max_prob_diff"] <= 1e-6
