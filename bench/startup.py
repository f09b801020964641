"""Startup overhead: seconds from launching a 2-rank training job to its first training
step, for horovodrun, horovod.spark.run in local[2], and horovod.spark.run on a Spark
standalone cluster (master + 2 workers x 1 core on 127.0.0.1), same job and data.

    .venv/bin/python bench/startup.py [--repeats 2]

The first step's wall-clock time comes from the run's report (``first_step_at``, rank 0).
Goal: Spark-launched <= 2x horovodrun. Writes bench/results/startup.json.
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

from bench.common import goal, write_result  # noqa: E402
from pipeline.launch.horovod import horovodrun_argv  # noqa: E402
from pipeline.launch.torchrun import free_port  # noqa: E402

BIN = Path(sys.executable).parent
CONF = str(REPO / "conf" / "digits_cnn.yaml")
CLUSTER = str(REPO / "deploy" / "local" / "spark-cluster.sh")


def seconds_to_first_step(argv: list[str], run_dir: Path, env: dict) -> float:
    started = time.time()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads((run_dir / "report.json").read_text())["first_step_at"] - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    cluster_env = {**env, "SPARK_CLUSTER_DIR": str(tmp / "cluster"), "SPARK_MASTER_PORT": str(free_port()),
                   "SPARK_MASTER_UI": str(free_port()), "SPARK_WORKER_UI": str(free_port()), "SPARK_WORKERS": "2",
                   "SPARK_WORKER_CORES": "1", "SPARK_WORKER_MEM": "1g", "PYTHON": sys.executable}
    data = [f"data.root={tmp / 'data'}", f"data.source.path={REPO / 'data/raw/digits/digits.csv.gz'}"]
    try:
        subprocess.run([sys.executable, "-m", "pipeline", "prepare", "--config", CONF, *data], cwd=REPO, check=True, capture_output=True, env=env)
        url = subprocess.run(["bash", CLUSTER, "start"], cwd=REPO, check=True, capture_output=True, text=True, env=cluster_env).stdout.split()[-1]
        times: dict[str, list[float]] = {"horovodrun": [], "spark_local": [], "spark_standalone": []}
        for i in range(args.repeats):
            for launcher in times:
                name = f"{launcher}-{i}"
                job = [*data, f"run.root={tmp / 'runs'}", f"run.name={name}", "train.epochs=1"]
                if launcher == "horovodrun":
                    argv = horovodrun_argv(2, [sys.executable, "jobs/train.py", "--config", CONF, *job], hosts="127.0.0.1:2",
                                           network_interface="lo", horovodrun=str(BIN / "horovodrun"))
                elif launcher == "spark_local":
                    argv = [sys.executable, "-m", "pipeline", "train", "--config", CONF, "--launcher", "spark", "--np", "2", *job]
                else:
                    argv = [str(BIN / "spark-submit"), "--master", url, "jobs/train_on_spark.py", "--config", CONF, "--np", "2", *job]
                times[launcher].append(seconds_to_first_step(argv, tmp / "runs" / name, cluster_env if launcher == "spark_standalone" else env))
                print(f"{launcher} #{i}: {times[launcher][-1]:.1f} s to the first step", flush=True)
        subprocess.run(["bash", CLUSTER, "stop"], cwd=REPO, check=True, capture_output=True, env=cluster_env)
        median = {k: statistics.median(v) for k, v in times.items()}
        goals = [
            goal("horovod.spark.run local[2] / horovodrun, seconds to first step", median["spark_local"] / median["horovodrun"], 2.0, higher_is_better=False),
            goal("horovod.spark.run standalone / horovodrun, seconds to first step", median["spark_standalone"] / median["horovodrun"], 2.0, higher_is_better=False),
        ]
        path = write_result("startup", {"job": "digits_cnn, 2 ranks, 1 epoch", "seconds_to_first_step": times, "median_seconds": median, "goals": goals})
        for g in goals:
            print(f"{g['name']}: {g['value']} (target <= {g['target']}, {'met' if g['met'] else 'NOT met'})")
        print(path)
    finally:
        subprocess.run(["bash", CLUSTER, "stop"], cwd=REPO, capture_output=True, env=cluster_env)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
