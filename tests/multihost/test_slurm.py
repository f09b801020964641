"""The Slurm batch scripts (deploy/slurm) on a real Slurm cluster: slurm-wlm 22.05 + munge
on the rig (deploy/local/multihost.sh slurm-up: slurmctld on n1, slurmd on every node).
Jobs are submitted from inside n1 in the checkout (a path every node sees); data and runs
are on the rig's object store; Slurm's own view (scontrol) says how each job ended.

The pre-emption test sends the warning as Slurm does at the time limit (SIGUSR1 to the
batch shell): the ranks checkpoint, the script requeues the job, the restart resumes, and
the final parameters equal those of the uninterrupted job. The node-loss test SIGKILLs every
process of one allocated node (slurmd included): the job fails, Slurm marks the node down,
and a resubmit with --resume on the remaining node finishes the run.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DIGITS_CONF, DIGITS_CSV
from tests.multihost.rig import BUCKET, last_line

pytestmark = [pytest.mark.multihost, pytest.mark.slurm]

DATA = [f"data.root=s3://{BUCKET}/slurm/data", f"data.source.path={DIGITS_CSV}"]
RUNS = f"s3://{BUCKET}/slurm/runs"
# Both Horovod jobs train exactly this (the pre-empted one is compared with the whole one).
TRAINING = ["train.epochs=2", "train.batch_size=16", "train.preemption_check_steps=5", "train.keep_checkpoints=100",
            "train.progress_every_s=0.5"]
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@pytest.fixture(scope="module")
def slurm(rig):
    rig.script("slurm-up", timeout=120)
    try:
        yield rig
    finally:
        rig.script("slurm-down", timeout=120)


@pytest.fixture(scope="module")
def version(slurm):
    """digits prepared on the store (Spark local[1] on n1: the cluster's Spark is not the subject here)."""
    proc = slurm.run("n1", sys.executable, "-m", "pipeline", "prepare", "--config", str(DIGITS_CONF), *DATA,
                     env={"PYSPARK_SUBMIT_ARGS": "--master local[1] pyspark-shell"})
    return last_line(proc).rsplit("/", 1)[1]


def sbatch(rig, out: Path, script: str, *overrides: str, nodes: tuple[str, ...] = ()) -> str:
    """Submit ``script`` from n1 for 2 nodes (or exactly ``nodes``) x 1 rank; the job id."""
    where = [f"--nodes={len(nodes)}", f"--nodelist={','.join(nodes)}"] if nodes else ["--nodes=2"]
    proc = rig.run("n1", "sbatch", "--parsable", *where, "--ntasks-per-node=1", "--cpus-per-task=1",
                   f"--output={out}/slurm-%j.out", script, str(DIGITS_CONF), *overrides)
    return proc.stdout.strip().split(";")[0]


def job(rig, job_id: str) -> dict[str, str]:
    """``scontrol show job``'s fields."""
    text = rig.run("n1", "scontrol", "show", "job", "--oneliner", job_id).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", text))


def wait_until_ended(rig, job_id: str, out: Path, timeout: float = 300) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while (fields := job(rig, job_id))["JobState"] not in ENDED:
        if time.monotonic() > deadline:
            rig.run("n1", "scancel", job_id, ok=False)
            pytest.fail(f"job {job_id} still {fields['JobState']} after {timeout}s:\n{output(out, job_id)[-3000:]}")
        time.sleep(1)
    return fields


def output(out: Path, job_id: str) -> str:
    path = out / f"slurm-{job_id}.out"
    return path.read_text() if path.exists() else ""


def weights_difference(rig, run_a: str, run_b: str) -> float:
    code = """
import io, sys, torch
from pipeline import storage
from tests.distributed.launch import max_relative_difference
a, b = (torch.load(io.BytesIO(storage.read_bytes(f"{d}/model.pt")), weights_only=True)["state_dict"] for d in sys.argv[1:])
print(max_relative_difference(a, b))
"""
    return float(rig.python("n1", code, run_a, run_b).strip().splitlines()[-1])


def test_sinfo_shows_every_node_idle(slurm):
    lines = slurm.run("n2", "sinfo", "--noheader", "--Node", "--format=%N %t %c").stdout.split()
    assert sorted(zip(lines[::3], lines[1::3], lines[2::3])) == [(n, "idle", "1") for n in slurm.nodes]


@pytest.mark.parametrize("script, engine", [("deploy/slurm/train.sbatch", "horovod"), ("deploy/slurm/train-torch.sbatch", "torch")],
                         ids=["horovodrun", "srun-torchrun"])
def test_a_batch_job_trains_on_two_nodes(slurm, version, tmp_path, script, engine):
    job_id = sbatch(slurm, tmp_path, script, *DATA, f"data.version={version}", f"run.root={RUNS}", f"run.name=whole-{engine}",
                    *TRAINING)
    fields = wait_until_ended(slurm, job_id, tmp_path)
    log = output(tmp_path, job_id)
    assert (fields["JobState"], fields["ExitCode"], fields["Restarts"]) == ("COMPLETED", "0:0", "0"), log[-3000:]
    allocated = set(slurm.run("n1", "scontrol", "show", "hostnames", fields["NodeList"]).stdout.split())
    report = slurm.read_json(f"{RUNS}/whole-{engine}/report.json")
    assert report["world_size"] == 2 and report["engine"] == engine
    assert len(set(report["hosts"])) == 2 and set(report["hosts"]) == allocated <= set(slurm.nodes), (report["hosts"], allocated)
    assert report["test_accuracy"] >= 0.8, report["test_accuracy"]


def test_the_time_limit_warning_checkpoints_requeues_and_the_restart_resumes_exactly(slurm, version, tmp_path):
    whole = f"{RUNS}/whole-horovod"
    if "model.pt" not in slurm.keys(whole):
        pytest.skip("needs the uninterrupted job of test_a_batch_job_trains_on_two_nodes[horovodrun]")
    job_id = sbatch(slurm, tmp_path, "deploy/slurm/train.sbatch", *DATA, f"data.version={version}", f"run.root={RUNS}",
                    "run.name=cut", *TRAINING)
    deadline = time.monotonic() + 180
    while " training cnn on " not in output(tmp_path, job_id):  # every rank has its handler installed
        assert time.monotonic() < deadline and job(slurm, job_id)["JobState"] in {"PENDING", "RUNNING"}, output(tmp_path, job_id)
        time.sleep(0.5)
    # What Slurm does --signal=B:USR1@120 before the time limit: SIGUSR1 to the batch shell only.
    slurm.run("n1", "scancel", "--batch", "--signal=USR1", job_id)
    fields = wait_until_ended(slurm, job_id, tmp_path)
    log = output(tmp_path, job_id)
    assert (fields["JobState"], fields["ExitCode"], fields["Restarts"]) == ("COMPLETED", "0:0", "1"), log[-4000:]
    said = re.findall(r"preempted: checkpoint saved at global step (\d+)", log)
    assert said and len(set(said)) == 1, log[-4000:]
    assert f"requeueing job {job_id}" in log and "requeued (restart 1): resuming cut from its latest checkpoint" in log, log[-4000:]
    assert "resumed from" in log, log[-4000:]
    report = slurm.read_json(f"{RUNS}/cut/report.json")
    assert report["world_size"] == 2 and len(set(report["hosts"])) == 2
    diff = weights_difference(slurm, whole, f"{RUNS}/cut")
    assert diff <= 1e-6, f"pre-empted at step {said[0]} and resumed, the run ends {diff:.2e} away from the uninterrupted one"


def test_a_lost_node_fails_the_job_and_a_resubmit_on_the_other_node_resumes(slurm, version, tmp_path):
    run = ["deploy/slurm/train.sbatch", *DATA, f"data.version={version}", f"run.root={RUNS}", "run.name=lost",
           "train.epochs=3", "train.batch_size=16", "train.checkpoint_every_steps=20"]
    job_id = sbatch(slurm, tmp_path, *run)
    deadline = time.monotonic() + 180
    while "epoch 1/3 loss" not in output(tmp_path, job_id):
        assert time.monotonic() < deadline and job(slurm, job_id)["JobState"] in {"PENDING", "RUNNING"}, output(tmp_path, job_id)
        time.sleep(0.5)
    batch_host = job(slurm, job_id)["BatchHost"]
    allocated = slurm.run("n1", "scontrol", "show", "hostnames", job(slurm, job_id)["NodeList"]).stdout.split()
    lost = next(n for n in allocated if n != batch_host)
    slurm.kill(lost)  # every process on the node: slurmd, munged, sshd, the rank
    try:
        fields = wait_until_ended(slurm, job_id, tmp_path, timeout=120)
        log = output(tmp_path, job_id)
        assert (fields["JobState"], fields["ExitCode"]) == ("FAILED", "1:0"), log[-3000:]
        # One clear line, whichever process saw the loss first (rank 0's own "lost contact" line
        # is prefixed by horovodrun; horovodrun may also have ended rank 0 and printed a traceback).
        errors = [line for line in log.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0] == log.rstrip().splitlines()[-1], log[-3000:]
        assert f"node(s) {lost} lost during job {job_id}" in errors[0] and f"--exclude={lost} --nodes=1 " in errors[0], errors
        assert errors[0].endswith(" run.name=lost --resume"), errors
        print(errors[0])
        deadline = time.monotonic() + 60
        while "down" not in slurm.run("n1", "sinfo", "--noheader", "--Node", f"--nodes={lost}", "--format=%t").stdout:
            assert time.monotonic() < deadline, f"Slurm never marked {lost} down"
            time.sleep(1)

        job_id = sbatch(slurm, tmp_path, *run, "--resume", nodes=(batch_host,))
        fields = wait_until_ended(slurm, job_id, tmp_path)
        log = output(tmp_path, job_id)
        assert fields["JobState"] == "COMPLETED" and "(saved by 2 ranks, now 1)" in log, log[-3000:]
        report = slurm.read_json(f"{RUNS}/lost/report.json")
        assert report["world_size"] == 1 and report["hosts"] == [batch_host]
        assert report["resumed_from"].startswith(f"{RUNS}/lost/checkpoints/step-")
    finally:
        for service in ("munged", "sshd", "slurmd", "spark-worker"):
            slurm.start(lost, service)
