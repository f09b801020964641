"""Startup overhead: seconds from launching a 2-rank training job to its first training
step, for horovodrun, horovod.spark.run in local[2], and horovod.spark.run on a Spark
standalone cluster (master + 2 workers x 1 core on 127.0.0.1), same job and data; and for
the DDP engine, torchrun against TorchDistributor on the same standalone cluster.

    .venv/bin/python bench/startup.py [--repeats 2]
    .venv/bin/python bench/startup.py --multihost [--repeats 2]   # across 2 hosts of the rig

``--multihost`` measures, on the multi-host rig (root), one rank on each of 2 hosts, data
and run on the rig's object store: horovodrun over ssh (``train --hosts``), horovod.spark.run
on the rig's Spark standalone cluster, and one torchrun per host (c10d rendezvous) against
TorchDistributor on that cluster. It updates only the ``multihost`` section of startup.json.

The first step's wall-clock time comes from the run's report (``first_step_at``, rank 0).
Goal: Spark-launched <= 2x horovodrun, TorchDistributor <= 2x torchrun (the fastest of the
repeats on each side). Writes bench/results/startup.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import goal  # noqa: E402
from pipeline.launch.horovod import horovodrun_argv  # noqa: E402
from pipeline.launch.torchrun import free_port  # noqa: E402

BIN = Path(sys.executable).parent
CONF = str(REPO / "conf" / "digits_cnn.yaml")
CLUSTER = str(REPO / "deploy" / "local" / "spark-cluster.sh")


def seconds_to_first_step(argv: list[str], run_dir: Path, env: dict) -> tuple[float, float]:
    """Seconds from launch to rank 0's first step, and to rank 0's process start (the
    launcher's share; the rest is the rank's own: imports, init, data)."""
    started = time.time()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    report = json.loads((run_dir / "report.json").read_text())
    return report["first_step_at"] - started, report["process_started_at"] - started


def across_hosts(repeats: int) -> None:
    """The ``multihost`` section: launch-to-first-step with one rank on each of 2 hosts."""
    from bench.common import merge_section
    from bench.rig import BUCKET, DIGITS_CONF, DIGITS_CSV, prepare_on_cluster, python, rig_up, seconds_to_first_step, spark_submit

    root, runs = f"s3://{BUCKET}/startup/data", f"s3://{BUCKET}/startup/runs"
    with rig_up() as rig:
        version = prepare_on_cluster(rig, DIGITS_CONF, root, f"data.source.path={DIGITS_CSV}")
        job = ["--config", DIGITS_CONF, f"data.root={root}", f"data.source.path={DIGITS_CSV}", f"run.root={runs}",
               "train.epochs=1", f"data.version={version.rsplit('/', 1)[1]}"]
        times: dict[str, list[float]] = {"horovodrun_ssh": [], "spark_standalone": [], "torchrun": [],
                                         "torchdistributor_standalone": []}
        for i in range(repeats):
            for launcher in times:
                name = f"{launcher}-{i}"
                if launcher == "horovodrun_ssh":
                    launches = [("n1", python("-m", "pipeline", "train", "--np", "2", "--hosts", "n1:1,n2:1", *job, f"run.name={name}"))]
                elif launcher in ("spark_standalone", "torchdistributor_standalone"):
                    engine = ["dist.engine=torch"] if launcher == "torchdistributor_standalone" else []
                    launches = [("n1", list(spark_submit("jobs/train_on_spark.py", "--np", "2", *job, f"run.name={name}", *engine)))]
                else:
                    torchrun = python("-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                                      "--rdzv-endpoint", f"{rig.addr('n1')}:29400", "--rdzv-id", name, "jobs/train.py", *job,
                                      f"run.name={name}", "dist.engine=torch")
                    launches = [("n1", torchrun), ("n2", torchrun)]
                times[launcher].append(seconds_to_first_step(rig, launches, f"{runs}/{name}"))
                print(f"across hosts: {launcher} #{i}: {times[launcher][-1]:.1f} s to the first step", flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}  # as in the local section: one slow start flatters neither side
    goals = [goal("across 2 hosts: horovod.spark.run standalone / horovodrun over ssh, seconds to first step",
                  best["spark_standalone"] / best["horovodrun_ssh"], 2.0, higher_is_better=False),
             goal("across 2 hosts: TorchDistributor standalone / torchrun per host (DDP), seconds to first step",
                  best["torchdistributor_standalone"] / best["torchrun"], 2.0, higher_is_better=False)]
    path = merge_section("startup", "multihost", {"job": "digits_cnn, 2 ranks on 2 hosts of the rig, 1 epoch, data on S3",
                                                   "seconds_to_first_step": times, "median_seconds": median,
                                                   "best_seconds": best}, goals)
    for g in goals:
        print(f"{g['name']}: {g['value']} ({'met' if g['met'] else 'NOT met'})")
    print(f"wrote {path}")


def merge_local(times: dict, median: dict, best: dict, goals: list[dict], launching: dict) -> Path:
    """The one-machine figures as the ``local`` section: the ``multihost`` section (measured
    on the rig, another day) keeps its figures and dates."""
    from bench.common import RESULTS, merge_section

    path = RESULTS / "startup.json"
    if path.exists():  # figures of the older layout (top level) go with the section they become
        old = json.loads(path.read_text())
        for key in ("job", "seconds_to_first_step", "median_seconds", "measured_at", "machine"):
            old.pop(key, None)
        path.write_text(json.dumps(old, indent=2) + "\n")
    return merge_section("startup", "local", {"job": "digits_cnn, 2 ranks, 1 epoch", "seconds_to_first_step": times,
                                              "median_seconds": median, "best_seconds": best,
                                              "seconds_before_rank_process": launching}, goals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--multihost", action="store_true", help="measure across 2 hosts of the rig (root); keep the rest")
    args = parser.parse_args()
    if args.multihost:
        return across_hosts(args.repeats)
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    # SPARK_CONF_DIR: the cluster's spark-defaults.conf, with its generated spark.authenticate secret.
    cluster_env = {**env, "SPARK_CLUSTER_DIR": str(tmp / "cluster"), "SPARK_CONF_DIR": str(tmp / "cluster" / "conf"),
                   "SPARK_MASTER_PORT": str(free_port()),
                   "SPARK_MASTER_UI": str(free_port()), "SPARK_WORKER_UI": str(free_port()), "SPARK_WORKERS": "2",
                   "SPARK_WORKER_CORES": "1", "SPARK_WORKER_MEM": "1g", "PYTHON": sys.executable}
    data = [f"data.root={tmp / 'data'}", f"data.source.path={REPO / 'data/raw/digits/digits.csv.gz'}"]
    try:
        subprocess.run([sys.executable, "-m", "pipeline", "prepare", "--config", CONF, *data], cwd=REPO, check=True, capture_output=True, env=env)
        url = subprocess.run(["bash", CLUSTER, "start"], cwd=REPO, check=True, capture_output=True, text=True, env=cluster_env).stdout.split()[-1]
        times: dict[str, list[float]] = {"horovodrun": [], "spark_local": [], "spark_standalone": [], "torchrun": [],
                                         "torchdistributor_standalone": []}
        launching: dict[str, list[float]] = {}  # of each, the seconds before rank 0's process started
        for i in range(args.repeats):
            for launcher in times:
                name = f"{launcher}-{i}"
                job = [*data, f"run.root={tmp / 'runs'}", f"run.name={name}", "train.epochs=1"]
                if launcher == "horovodrun":
                    argv = horovodrun_argv(2, [sys.executable, "jobs/train.py", "--config", CONF, *job], hosts="127.0.0.1:2",
                                           network_interface="lo", horovodrun=str(BIN / "horovodrun"))
                elif launcher == "spark_local":
                    argv = [sys.executable, "-m", "pipeline", "train", "--config", CONF, "--launcher", "spark", "--np", "2", *job]
                elif launcher == "torchrun":
                    argv = [sys.executable, "-m", "pipeline", "train", "--config", CONF, "--np", "2", *job, "dist.engine=torch"]
                else:
                    argv = [str(BIN / "spark-submit"), "--master", url, "jobs/train_on_spark.py", "--config", CONF, "--np", "2", *job,
                            *(["dist.engine=torch"] if launcher == "torchdistributor_standalone" else [])]
                on_cluster = launcher.endswith("_standalone")
                total, to_rank = seconds_to_first_step(argv, tmp / "runs" / name, cluster_env if on_cluster else env)
                times[launcher].append(total)
                launching.setdefault(launcher, []).append(to_rank)
                print(f"{launcher} #{i}: {total:.1f} s to the first step, {to_rank:.1f} s of it before rank 0's process started",
                      flush=True)
        subprocess.run(["bash", CLUSTER, "stop"], cwd=REPO, check=True, capture_output=True, env=cluster_env)
        median = {k: statistics.median(v) for k, v in times.items()}
        # Goals on the fastest of the repeats, both sides alike: the launch least disturbed by
        # whatever else the machine ran (one slow horovodrun start would otherwise flatter
        # the ratio); the medians are kept beside them.
        best = {k: min(v) for k, v in times.items()}
        goals = [
            goal("horovod.spark.run local[2] / horovodrun, seconds to first step", best["spark_local"] / best["horovodrun"], 2.0, higher_is_better=False),
            goal("horovod.spark.run standalone / horovodrun, seconds to first step", best["spark_standalone"] / best["horovodrun"], 2.0, higher_is_better=False),
            goal("TorchDistributor standalone / torchrun (DDP), seconds to first step",
                 best["torchdistributor_standalone"] / best["torchrun"], 2.0, higher_is_better=False),
        ]
        path = merge_local(times, median, best, goals, launching)
        for g in goals:
            print(f"{g['name']}: {g['value']} (target <= {g['target']}, {'met' if g['met'] else 'NOT met'})")
        print(path)
    finally:
        subprocess.run(["bash", CLUSTER, "stop"], cwd=REPO, capture_output=True, env=cluster_env)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
