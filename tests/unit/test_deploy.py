"""deploy/: launch commands as data, scripts pass bash -n and shellcheck, manifests parse and
name the right image, command and resources, dry-runs print the right commands."""
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.launch.submit import REPO, SubmitOptions, spark_submit_argv

SCRIPTS = [REPO / p for p in (
    "deploy/local/setup.sh", "deploy/local/build_horovod.sh", "deploy/spark/gpu-discovery.sh", "deploy/local/spark-cluster.sh",
    "deploy/local/multihost.sh", "deploy/spark/submit.sh", "deploy/slurm/train.sbatch", "deploy/slurm/train-torch.sbatch",
    "deploy/slurm/common.sh", "deploy/slurm/signal-ranks.sh", "deploy/k8s/spark-submit-k8s.sh", "deploy/k8s/mpi-worker.sh", "deploy/k8s/mpi-launcher.sh",
    "deploy/docker/install-deps.sh")]


def test_every_script_under_deploy_is_checked():
    shell = {p for p in (REPO / "deploy").rglob("*") if p.suffix in (".sh", ".sbatch")}
    assert shell == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse_and_pass_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    proc = subprocess.run([shellcheck, "-x", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_spark_submit_commands_per_master():
    local = spark_submit_argv("preprocess", ["--config", "c.yaml"], SubmitOptions(master="local[2]", spark_submit="ss"))
    assert local[:7] == ["ss", "--master", "local[2]", "--deploy-mode", "client", "--name", "pipeline-preprocess"]
    assert local[-3:] == [str(REPO / "jobs/preprocess.py"), "--config", "c.yaml"] and "--archives" not in local

    yarn = spark_submit_argv("train", ["--np", "4"], SubmitOptions(master="yarn", env_archive="env.tgz", py_files="p.zip", executors=4))
    assert yarn[yarn.index("--deploy-mode") + 1] == "cluster"
    assert yarn[yarn.index("--archives") + 1] == "env.tgz#environment" and yarn[yarn.index("--py-files") + 1] == "p.zip"
    assert "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python" in yarn
    assert "spark.pyspark.python=./environment/bin/python" in yarn and yarn[yarn.index("--num-executors") + 1] == "4"
    assert yarn[-3:] == [str(REPO / "jobs/train_on_spark.py"), "--np", "4"]

    standalone = spark_submit_argv("score", [], SubmitOptions(master="spark://10.0.0.1:7077", env_archive="e.tgz"))
    assert standalone[standalone.index("--deploy-mode") + 1] == "client"
    assert f"spark.pyspark.driver.python={sys.executable}" in standalone  # the driver runs here

    k8s = spark_submit_argv("score", ["--model", "s3://b/m.pt"], SubmitOptions(master="k8s://https://api:6443", image="reg/p:1", namespace="ml"))
    assert "spark.kubernetes.container.image=reg/p:1" in k8s and "spark.kubernetes.namespace=ml" in k8s
    assert k8s[-3:] == ["local:///opt/pipeline/jobs/score.py", "--model", "s3://b/m.pt"]
    with pytest.raises(ValueError, match="needs --image"):
        spark_submit_argv("score", [], SubmitOptions(master="k8s://https://api:6443"))
    with pytest.raises(ValueError, match="unknown Spark master"):
        spark_submit_argv("score", [], SubmitOptions(master="mesos://x"))


def test_cluster_deploy_mode_ships_the_config_inline():
    from pipeline.config import ConfigError, load_config

    conf = str(REPO / "conf" / "digits_cnn.yaml")
    shared = ["data.root=hdfs:///pipeline/data", "run.root=/shared/runs", "data.source.path=hdfs:///raw/digits.csv.gz"]
    yarn = spark_submit_argv("preprocess", ["--config", conf, "train.epochs=3", *shared], SubmitOptions(master="yarn"))
    shipped = yarn[yarn.index("--config") + 1]
    assert shipped.startswith("yaml+base64:") and conf not in " ".join(yarn)  # the driver elsewhere has no such file
    assert load_config(shipped, ["train.epochs=3", *shared]) == load_config(conf, ["train.epochs=3", *shared])
    # A relative location would name a directory of the driver's container: refused, naming the key.
    with pytest.raises(ConfigError, match=r"^data.root=data is relative: .*pass data.root=<URI>"):
        spark_submit_argv("preprocess", ["--config", conf, *shared[1:]], SubmitOptions(master="yarn"))
    with pytest.raises(ConfigError, match=r"^data.root=data/s3://x is relative"):  # a scheme starts the location
        spark_submit_argv("preprocess", ["--config", conf, *shared[1:], "data.root=data/s3://x"], SubmitOptions(master="yarn"))
    with pytest.raises(ConfigError, match=r"^--output scores is relative"):
        spark_submit_argv("score", ["--config", conf, "--model", "/shared/m.pt", "--input", "hdfs:///in", "--output", "scores"],
                          SubmitOptions(master="yarn"))
    client = spark_submit_argv("preprocess", ["--config", conf], SubmitOptions(master="spark://h:7077"))
    assert client[client.index("--config") + 1] == conf  # client mode: the driver runs here and reads the file


def dry_run(*args: str, env: dict | None = None) -> list[list[str]]:
    proc = subprocess.run([str(REPO / "deploy/spark/submit.sh"), "--dry-run", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("master,expect", [
    ("local[*]", []),
    ("spark://127.0.0.1:7077", ["--py-files"]),
    ("yarn", ["--archives", "--py-files"]),
])
def test_submit_dry_run_prints_the_full_command(master, expect):
    shared = ["data.root=hdfs:///pipeline/data", "run.root=hdfs:///pipeline/runs"] if master == "yarn" else []
    (argv,) = dry_run("--master", master, *(["--pack-env"] if master == "yarn" else []), "train", "--", "--config", "conf/digits_cnn.yaml",
                      "--np", "2", *shared)
    argv = argv[:len(argv) - len(shared)]
    shipped = "yaml+base64:" if master == "yarn" else "conf/digits_cnn.yaml"  # yarn: cluster mode, config inline
    assert argv[argv.index("--master") + 1] == master and argv[-4] == "--config" and argv[-3].startswith(shipped)
    assert argv[-2:] == ["--np", "2"]
    assert argv[-5].endswith("jobs/train_on_spark.py")
    for flag in expect:
        assert flag in argv
    assert not (REPO / "build" / "pipeline-env.tar.gz").exists() or master != "yarn"  # a dry run packs nothing


@pytest.mark.parametrize("job,args", [
    ("preprocess", ["data.root=hdfs:///pipeline/data", "data.source.path=hdfs:///raw/digits.csv.gz"]),
    ("train", ["--np", "4", "data.root=hdfs:///pipeline/data", "run.root=hdfs:///pipeline/runs"]),
    ("score", ["--model", "hdfs:///runs/r/model.pt", "--input", "hdfs:///new.csv", "--output", "hdfs:///scored"]),
])
def test_yarn_cluster_mode_needs_no_file_of_this_machine_on_the_driver(job, args):
    """The driver runs in a YARN container: every file of this machine the command names is
    one spark-submit uploads (the application, --files, --archives, --py-files), every
    ./name the settings use is one of those by name, and the config travels inline."""
    (argv,) = dry_run("--master", "yarn", "--deploy-mode", "cluster", "--pack-env", "--gpus-per-executor", "1", job, "--",
                      "--config", "conf/digits_cnn.yaml", *args)
    assert argv[argv.index("--deploy-mode") + 1] == "cluster"
    uploads = {argv[i + 1].split("#")[0] for i, a in enumerate(argv) if a in ("--files", "--archives", "--py-files")}
    app = next(a for a in argv if a.endswith("jobs/" + {"train": "train_on_spark.py"}.get(job, f"{job}.py")))
    names = {Path(u).name for u in uploads} | {a.split("#")[1] for i, a in enumerate(argv) if argv[i - 1] == "--archives"}
    values = [(a.split("=", 1)[1] if "=" in a and not a.startswith("yaml+base64:") else a).split("#")[0] for a in argv[1:]]
    for value in values:
        local = Path(value) if value.startswith("/") else REPO / value
        if value.startswith("./"):
            assert value[2:].split("/")[0] in names, f"{value}: not shipped by name"
        elif not value.startswith(("-", "hdfs:", "yaml+base64:")) and (value.startswith("/") or "/" in value) and (
                local.exists() or REPO in local.parents):
            assert value in uploads or value == app, f"{value}: a file of this machine the driver would not have"
    assert argv[argv.index("--config") + 1].startswith("yaml+base64:")
    assert not any(a.startswith("spark.pyspark.driver.python=") for a in argv)


def test_kubernetes_spark_example_dry_run():
    proc = subprocess.run([str(REPO / "deploy/k8s/spark-submit-k8s.sh"), "--dry-run"], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, "K8S_MASTER": "k8s://https://api:6443", "IMAGE": "reg/pipeline:1"})
    assert proc.returncode == 0, proc.stderr
    preprocess, score = (shlex.split(line) for line in proc.stdout.splitlines())
    for argv in (preprocess, score):
        assert "spark.kubernetes.container.image=reg/pipeline:1" in argv
        assert "spark.kubernetes.executor.volumes.persistentVolumeClaim.data.mount.path=/data" in argv
    assert "local:///opt/pipeline/jobs/preprocess.py" in preprocess and "local:///opt/pipeline/jobs/score.py" in score


def test_mpijob_manifest_names_image_command_and_resources():
    job = yaml.safe_load((REPO / "deploy/k8s/mpijob-train.yaml").read_text())
    assert job["kind"] == "MPIJob" and job["apiVersion"].startswith("kubeflow.org/")
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    workers = job["spec"]["mpiReplicaSpecs"]["Worker"]
    assert launcher["args"][0] == "horovodrun" and "--gloo" in launcher["args"]
    assert "/opt/pipeline/jobs/train.py" in launcher["args"]
    np = int(launcher["args"][launcher["args"].index("-np") + 1])
    assert np == workers["replicas"] * job["spec"]["slotsPerWorker"]
    worker = workers["template"]["spec"]["containers"][0]
    assert worker["image"] == launcher["image"] and worker["resources"]["limits"]["cpu"]
    dockerfile = (REPO / "deploy/docker/Dockerfile").read_text()
    assert "openjdk-17" in dockerfile and "deploy/local/build_horovod.sh" in dockerfile and "WORKDIR /opt/pipeline" in dockerfile


def _conf(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")


def test_gpu_requests_per_system():
    """Spark's resource scheduling (a GPU per task, the discovery script per master), the
    MPIJob's nvidia.com/gpu limits, the CUDA image, Slurm's --gpus-per-task."""
    k8s = _conf(spark_submit_argv("train", [], SubmitOptions(master="k8s://https://api:6443", image="r/p:1", gpus_per_executor=2)))
    assert k8s["spark.executor.resource.gpu.amount"] == "2" and k8s["spark.task.resource.gpu.amount"] == "1"
    assert k8s["spark.executor.resource.gpu.discoveryScript"] == "/opt/pipeline/deploy/spark/gpu-discovery.sh"
    assert k8s["spark.executor.resource.gpu.vendor"] == "nvidia.com"
    yarn = spark_submit_argv("train", [], SubmitOptions(master="yarn", gpus_per_executor=1))
    assert _conf(yarn)["spark.executor.resource.gpu.discoveryScript"] == "./gpu-discovery.sh"
    assert yarn[yarn.index("--files") + 1] == str(REPO / "deploy/spark/gpu-discovery.sh")
    standalone = _conf(spark_submit_argv("train", [], SubmitOptions(master="spark://h:7077", gpus_per_executor=4)))
    assert standalone["spark.executor.resource.gpu.discoveryScript"] == str(REPO / "deploy/spark/gpu-discovery.sh")
    with pytest.raises(ValueError, match="not in local mode"):
        spark_submit_argv("train", [], SubmitOptions(master="local[2]", gpus_per_executor=1))
    (argv,) = dry_run("--master", "spark://h:7077", "--gpus-per-executor", "2", "train", "--", "--config", "conf/digits_cnn.yaml")
    assert _conf(argv)["spark.task.resource.gpu.amount"] == "1"

    job = yaml.safe_load((REPO / "deploy/k8s/mpijob-train-gpu.yaml").read_text())
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    workers = job["spec"]["mpiReplicaSpecs"]["Worker"]
    worker = workers["template"]["spec"]["containers"][0]
    slots = job["spec"]["slotsPerWorker"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == slots == worker["resources"]["requests"]["nvidia.com/gpu"]
    assert int(launcher["args"][launcher["args"].index("-np") + 1]) == workers["replicas"] * slots
    assert worker["image"] == launcher["image"] and "pipeline-cuda" in worker["image"] and "train.device=cuda" in launcher["args"]
    cuda = (REPO / "deploy/docker/Dockerfile.cuda").read_text()
    assert "FROM nvidia/cuda:" in cuda and "-devel-" in cuda  # nvcc, for Horovod's NCCL operations
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu" in cuda and "PIPELINE_HOROVOD_GPU=1" in cuda
    assert "deploy/local/build_horovod.sh" in cuda and "deploy/local/build_horovod.sh" in (REPO / "deploy/docker/Dockerfile").read_text()
    assert "--gpus-per-task=1" in (REPO / "deploy/slurm/train.sbatch").read_text()


def test_gpu_discovery_script_prints_sparks_resource_json(tmp_path):
    """The script's parsing of nvidia-smi's output (a stand-in nvidia-smi here; the real
    one ran on the lent GPU machine, bench/results/gpu.json)."""
    import json

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n 2\\n'\n")
    fake.chmod(0o755)
    out = subprocess.run([str(REPO / "deploy/spark/gpu-discovery.sh")], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}).stdout
    assert json.loads(out) == {"name": "gpu", "addresses": ["0", "1", "2"]}
