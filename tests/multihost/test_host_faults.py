"""Whole-host faults on the rig, the failures cluster users meet: a host lost mid-epoch
(every process on it SIGKILLed), with and without Horovod elastic; a Spark worker lost
during prepare; the object store stopped during prepare."""
import json
import sys
import time

import pytest

from tests.conftest import DIGITS_CONF, DIGITS_CSV
from tests.multihost.rig import BUCKET, last_line, spark_submit

FAULTS = f"s3://{BUCKET}/faults"
DATA = [f"data.root={FAULTS}/data", f"data.source.path={DIGITS_CSV}"]
BATCH = 32


@pytest.fixture(scope="module")
def version(rig):
    proc = rig.run("n1", *spark_submit("jobs/preprocess.py", "--config", str(DIGITS_CONF), *DATA))
    return last_line(proc)


def wait_for_checkpoint(rig, run_dir: str, step: int, launcher, deadline_s: float = 300) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert launcher.poll() is None, f"the job ended before step {step}:\n{launcher.communicate()[0][-3000:]}"
        steps = [int(k[len("checkpoints/step-"):-3]) for k in rig.keys(run_dir) if k.startswith("checkpoints/step-")]
        if steps and max(steps) >= step:
            return
        time.sleep(0.5)
    pytest.fail(f"no checkpoint at step {step} within {deadline_s} s")


def metrics(rig, run_dir: str) -> list[dict]:
    return [json.loads(line) for line in rig.read_text(f"{run_dir}/metrics.jsonl").splitlines()]


def lose_host(rig, launcher, wait, node: str = "n3", timeout: float = 600) -> tuple[str, float]:
    """Once ``wait()`` returns, SIGKILL every process on ``node`` (a lost host); return the
    launcher's output and the seconds it ran after the kill. The host's services come back
    afterwards, for the tests that follow."""
    try:
        wait()
        killed_at = time.monotonic()
        rig.kill(node)
        return launcher.communicate(timeout=timeout)[0], time.monotonic() - killed_at
    finally:
        launcher.kill()
        rig.start(node, "sshd")
        rig.start(node, "spark-worker")


def test_a_lost_host_fails_the_job_naming_it_and_resume_finishes_sample_exactly(rig, version):
    train_rows = rig.read_json(f"{version}/manifest.json")["splits"]["train"]["rows"]
    steps = train_rows // (2 * BATCH)
    run_dir = f"{FAULTS}/runs/lost-host"
    common = ["--config", str(DIGITS_CONF), "--np", "2", *DATA, f"run.root={FAULTS}/runs", "run.name=lost-host",
              "train.epochs=3", "train.checkpoint_every_steps=5", f"train.batch_size={BATCH}", "dist.timeout_s=60",
              f"data.version={version.rsplit('/', 1)[1]}"]
    launcher = rig.popen("n1", sys.executable, "-m", "pipeline", "train", "--hosts", "n2:1,n3:1", *common)
    out, took = lose_host(rig, launcher, lambda: wait_for_checkpoint(rig, run_dir, steps + 5, launcher), timeout=180)  # mid-epoch 2
    assert launcher.returncode != 0 and took <= 60, (took, out[-3000:])
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "n3" in errors[0] and "lost" in errors[0], out[-3000:]
    print(f"failed {took:.1f} s after the kill: {errors[0]}")
    assert "Traceback" not in out.split(errors[0])[-1]

    resumed = rig.run("n1", sys.executable, "-m", "pipeline", "train", "--hosts", "n1:1,n2:1", "--resume", *common)
    assert last_line(resumed) == run_dir
    report = rig.read_json(f"{run_dir}/report.json")
    assert report["resumed_from"].startswith(f"{run_dir}/checkpoints/step-") and sorted(report["hosts"]) == ["n1", "n2"]
    history = metrics(rig, run_dir)
    assert [m["epoch"] for m in history] == [1, 2, 3]
    # No sample lost or read twice around the failure: every epoch trained on the plan's rows.
    assert [m["train_samples"] for m in history] == [steps * 2 * BATCH] * 3
    assert report["global_steps"] == 3 * steps


def test_elastic_horovod_goes_on_without_a_lost_host(rig, version):
    train_rows = rig.read_json(f"{version}/manifest.json")["splits"]["train"]["rows"]
    run_dir = f"{FAULTS}/runs/elastic"
    launcher = rig.popen("n1", sys.executable, "-m", "pipeline", "train", "--config", str(DIGITS_CONF), "--np", "3",
                         "--hosts", "n1:1,n2:1,n3:1", *DATA, f"run.root={FAULTS}/runs", "run.name=elastic", "train.epochs=2",
                         "train.checkpoint_every_steps=5", f"train.batch_size={BATCH}", "dist.elastic=true", "dist.min_np=2",
                         "dist.commit_every_steps=5", "dist.timeout_s=60", f"data.version={version.rsplit('/', 1)[1]}")
    out, _ = lose_host(rig, launcher, lambda: wait_for_checkpoint(rig, run_dir, 8, launcher))
    assert launcher.returncode == 0, out[-4000:]
    report = rig.read_json(f"{run_dir}/report.json")
    assert report["world_size"] == 2 and sorted(report["hosts"]) == ["n1", "n2"]
    history = metrics(rig, run_dir)
    assert [m["epoch"] for m in history] == [1, 2], history
    # Every epoch trained on exactly the plan's rows, whatever epoch lost the host: 3 x 32
    # per global batch before it, 2 x 32 after; the epoch that lost it ran c global batches
    # of 3 ranks (up to the last commit), then the rest of its rows on 2.
    full = {3: (train_rows // (3 * BATCH)) * 3 * BATCH, 2: (train_rows // (2 * BATCH)) * 2 * BATCH}
    switched = {c * 3 * BATCH + ((train_rows - c * 3 * BATCH) // (2 * BATCH)) * 2 * BATCH for c in range(train_rows // (3 * BATCH) + 1)}
    lost_in = next(i for i, m in enumerate(history) if m["world_size"] == 2)
    assert all(m["world_size"] == 3 and m["train_samples"] == full[3] for m in history[:lost_in]), history
    assert history[lost_in]["train_samples"] in switched, (history[lost_in], sorted(switched))
    assert all(m["world_size"] == 2 and m["train_samples"] == full[2] for m in history[lost_in + 1:]), history


def _wait_for_task_on(rig, host_addr: str, launcher, deadline_s: float = 180) -> None:
    """Until the running application's event log shows a task started on ``host_addr``."""
    events = rig.state / "nodes" / "n1" / "spark-events"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert launcher.poll() is None, launcher.communicate()[0][-3000:]
        for log in events.glob("*.inprogress"):
            if f'"Host":"{host_addr}"' in log.read_text() and "SparkListenerTaskStart" in log.read_text():
                return
        time.sleep(0.3)
    pytest.fail(f"no task started on {host_addr} within {deadline_s} s")


def test_a_spark_worker_lost_during_prepare_changes_nothing(rig, version):
    data = [f"data.root={FAULTS}/worker-lost", f"data.source.path={DIGITS_CSV}"]
    launcher = rig.popen("n1", *spark_submit("jobs/preprocess.py", "--config", str(DIGITS_CONF), *data))
    out, _ = lose_host(rig, launcher, lambda: _wait_for_task_on(rig, rig.addr("n3"), launcher))
    assert launcher.returncode == 0, out[-4000:]
    again = rig.read_json(f"{out.strip().splitlines()[-1]}/manifest.json")
    undisturbed = rig.read_json(f"{version}/manifest.json")
    assert again["fingerprint"] == undisturbed["fingerprint"]
    for split in undisturbed["splits"]:
        assert [s["sha256"] for s in again["splits"][split]["shards"]] == [s["sha256"] for s in undisturbed["splits"][split]["shards"]]


def test_the_store_stopped_during_prepare_fails_clearly_and_publishes_nothing(rig):
    data = [f"data.root={FAULTS}/store-down", f"data.source.path={DIGITS_CSV}", "data.split.salt=7"]
    launcher = rig.popen("n1", *spark_submit("jobs/preprocess.py", "--config", str(DIGITS_CONF), *data))
    try:
        _wait_for_task_on(rig, rig.addr("n2"), launcher)
        rig.script("stop", "store")
        out = launcher.communicate(timeout=600)[0]
    finally:
        launcher.kill()
        rig.start("store", "store")
    assert launcher.returncode == 1, out[-4000:]
    last = out.strip().splitlines()[-1]
    print(last)
    assert last.startswith("error: ") and "rig-data" in last and "store is up" in last, out[-3000:]
    listing = rig.python("n1", "import sys; from pipeline import storage; print([e.uri for e in storage.list_files(sys.argv[1])])",
                         f"{FAULTS}/store-down")
    assert "manifest.json" not in listing
    rerun = rig.run("n1", *spark_submit("jobs/preprocess.py", "--config", str(DIGITS_CONF), *data))
    assert rig.read_json(f"{last_line(rerun)}/manifest.json")["input_rows"] == 1797
