"""spark-submit command lines for the three Spark jobs on any master (pure functions), and
the small CLI behind ``deploy/spark/submit.sh``.

    deploy/spark/submit.sh [--dry-run] --master MASTER [options] preprocess|train|score -- JOB ARGS

Masters: ``local[N]`` / ``local[*]``; ``spark://host:port`` (standalone); ``yarn``;
``k8s://https://host:port``. Off the local machine the Python environment travels as a
packed virtualenv (``--archives env.tar.gz#environment``, made with venv-pack) and the
project as a zip of ``pipeline/`` (``--py-files``); on Kubernetes both are in the image.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import storage
from pipeline.config import INLINE_PREFIX, inline_config

REPO = Path(__file__).resolve().parents[2]
JOBS = {"preprocess": "jobs/preprocess.py", "train": "jobs/train_on_spark.py", "score": "jobs/score.py"}
ENV_ALIAS = "environment"
IMAGE_ROOT = "/opt/pipeline"  # where deploy/docker/Dockerfile puts the project


@dataclass
class SubmitOptions:
    """Where and how a job is submitted.

    Args:
        master: Spark master URL.
        deploy_mode: client or cluster (default: cluster on YARN and Kubernetes, else client).
        env_archive: packed virtualenv (tar.gz) shipped to executors; None uses their python.
        py_files: the project as a zip for executors (not needed on Kubernetes: in the image).
        image: container image (Kubernetes).
        namespace: Kubernetes namespace.
        executors / executor_cores / executor_memory / driver_memory: resources.
        gpus_per_executor: GPUs each executor gets; every task (one training rank) one of
            them, found by deploy/spark/gpu-discovery.sh (Spark's resource scheduling).
        conf: extra ``--conf key=value`` settings.
        spark_submit: the spark-submit executable.
    """

    master: str = "local[*]"
    deploy_mode: str | None = None
    env_archive: str | None = None
    py_files: str | None = None
    image: str | None = None
    namespace: str = "default"
    executors: int | None = None
    executor_cores: int | None = None
    executor_memory: str | None = None
    driver_memory: str | None = None
    gpus_per_executor: int | None = None
    conf: dict[str, str] = field(default_factory=dict)
    spark_submit: str = "spark-submit"


def master_kind(master: str) -> str:
    for prefix, kind in (("local", "local"), ("spark://", "standalone"), ("yarn", "yarn"), ("k8s://", "kubernetes")):
        if master.startswith(prefix):
            return kind
    raise ValueError(f"unknown Spark master {master!r}; use local[*], spark://host:port, yarn or k8s://https://host:port")


def spark_submit_argv(job: str, job_args: list[str], opts: SubmitOptions) -> list[str]:
    """The full spark-submit command for ``job`` (preprocess, train or score)."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; choose one of {', '.join(JOBS)}")
    kind = master_kind(opts.master)
    mode = opts.deploy_mode or ("cluster" if kind in ("yarn", "kubernetes") else "client")
    if mode == "cluster":
        job_args = shipped_job_args(job, job_args)
    argv = [opts.spark_submit, "--master", opts.master, "--deploy-mode", mode, "--name", f"pipeline-{job}"]
    conf = {"spark.sql.execution.arrow.pyspark.enabled": "true"}
    if kind == "kubernetes":
        if not opts.image:
            raise ValueError("a Kubernetes master needs --image (built from deploy/docker/Dockerfile)")
        conf.update({
            "spark.kubernetes.container.image": opts.image,
            "spark.kubernetes.namespace": opts.namespace,
            "spark.kubernetes.authenticate.driver.serviceAccountName": "spark",
            "spark.pyspark.python": f"{IMAGE_ROOT}/.venv/bin/python",
        })
        script = f"local://{IMAGE_ROOT}/{JOBS[job]}"
    else:
        script = str(REPO / JOBS[job])
        if opts.env_archive:
            argv += ["--archives", f"{opts.env_archive}#{ENV_ALIAS}"]
            conf["spark.pyspark.python"] = f"./{ENV_ALIAS}/bin/python"
            if kind == "yarn":
                conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] = f"./{ENV_ALIAS}/bin/python"
            if mode == "client":  # the driver runs here, on this machine's interpreter
                conf["spark.pyspark.driver.python"] = sys.executable
        if opts.py_files:
            argv += ["--py-files", opts.py_files]
    if opts.gpus_per_executor:
        argv, gpu_conf = gpu_resources(argv, kind, opts.gpus_per_executor)
        conf.update(gpu_conf)
    for flag, value in (("--num-executors", opts.executors), ("--executor-cores", opts.executor_cores),
                        ("--executor-memory", opts.executor_memory), ("--driver-memory", opts.driver_memory)):
        if value is not None:
            argv += [flag, str(value)]
    for key, value in {**conf, **opts.conf}.items():
        argv += ["--conf", f"{key}={value}"]
    return argv + [script, *job_args]


GPU_DISCOVERY = "deploy/spark/gpu-discovery.sh"


def gpu_resources(argv: list[str], kind: str, gpus: int) -> tuple[list[str], dict[str, str]]:
    """Spark's GPU scheduling for ``gpus`` per executor and one per task: the executor
    finds its GPUs with the discovery script (in the image on Kubernetes, shipped with
    --files on YARN, at this checkout's path on a standalone cluster, whose workers need
    ``spark.worker.resource.gpu.*`` in their own spark-defaults too)."""
    if kind == "local":
        raise ValueError("--gpus-per-executor needs a cluster master: Spark schedules GPUs on standalone, YARN and "
                         "Kubernetes, not in local mode (there the ranks take cuda:<local rank>)")
    script = {"kubernetes": f"{IMAGE_ROOT}/{GPU_DISCOVERY}", "yarn": "./gpu-discovery.sh"}.get(kind, str(REPO / GPU_DISCOVERY))
    conf = {"spark.executor.resource.gpu.amount": str(gpus), "spark.task.resource.gpu.amount": "1",
            "spark.executor.resource.gpu.discoveryScript": script}
    if kind == "kubernetes":
        conf["spark.executor.resource.gpu.vendor"] = "nvidia.com"
    if kind == "yarn":
        argv = [*argv, "--files", str(REPO / GPU_DISCOVERY)]
    return argv, conf


# The locations each job reads or writes: in cluster deploy mode they must mean the same
# on the cluster's driver as here.
JOB_LOCATIONS = {"preprocess": ("data.root", "data.source.path"), "train": ("data.root", "run.root"), "score": ()}
JOB_LOCATION_FLAGS = ("--model", "--input", "--output")


def shipped_job_args(job: str, job_args: list[str]) -> list[str]:
    """In cluster deploy mode the driver runs on a cluster machine that lacks this one's
    files: the experiment file named by ``--config`` travels inline in the argument, and a
    relative location the job uses is refused (it would name a directory of the driver's
    container)."""
    out = list(job_args)
    for i, arg in enumerate(out[:-1]):
        if arg in JOB_LOCATION_FLAGS:
            _refuse_relative(arg, out[i + 1], f"{arg} <URI>")
        if arg == "--config" and not out[i + 1].startswith(INLINE_PREFIX) and Path(out[i + 1]).is_file():
            _refuse_relative_locations(job, out[i + 1], [a for a in out if "=" in a and not a.startswith("-")])
            out[i + 1] = inline_config(out[i + 1])
    return out


def _refuse_relative_locations(job: str, config_path: str, overrides: list[str]) -> None:
    from pipeline.config import load_config

    cfg = load_config(config_path, overrides)
    values = {"data.root": cfg.data.root, "run.root": cfg.run.root, "data.source.path": cfg.data.source.path}
    for key in JOB_LOCATIONS.get(job, ()):
        if values[key] is not None:
            _refuse_relative(f"{key}=", values[key], f"{key}=<URI>")


def _refuse_relative(what: str, value: str, fix: str) -> None:
    from pipeline.config import ConfigError

    if not storage.scheme(value) and not Path(value).is_absolute():
        shown = f"{what}{value}" if what.endswith("=") else f"{what} {value}"
        raise ConfigError(f"{shown} is relative: in cluster deploy mode the driver runs on a cluster machine, where it would "
                          f"name another directory; pass {fix} (hdfs://, s3://) or an absolute path every node sees")


def zip_project(out: Path) -> Path:
    """``pipeline/`` as a zip for ``--py-files`` (importable as ``pipeline`` on executors)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted((REPO / "pipeline").rglob("*.py")):
            z.write(path, path.relative_to(REPO))
    return out


def pack_env(out: Path) -> Path:
    """This virtualenv packed with venv-pack (relocatable tar.gz for ``--archives``)."""
    try:
        import venv_pack
    except ImportError as err:
        raise SystemExit("venv-pack is not installed: pip install venv-pack (or pass --env-archive)") from err
    venv_pack.pack(prefix=sys.prefix, output=str(out), force=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/spark/submit.sh", description="Submit a pipeline job with spark-submit.")
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--deploy-mode", choices=("client", "cluster"))
    parser.add_argument("--env-archive", help="packed virtualenv tar.gz to ship (see --pack-env)")
    parser.add_argument("--pack-env", action="store_true", help="pack this virtualenv with venv-pack into build/ and ship it")
    parser.add_argument("--no-project-zip", action="store_true", help="do not ship pipeline/ as --py-files")
    parser.add_argument("--image"), parser.add_argument("--namespace", default="default")
    parser.add_argument("--executors", type=int), parser.add_argument("--executor-cores", type=int)
    parser.add_argument("--executor-memory"), parser.add_argument("--driver-memory")
    parser.add_argument("--gpus-per-executor", type=int, help="GPUs per executor, one per task (training rank)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--spark-submit", default=str(Path(sys.executable).parent / "spark-submit"))
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    parser.add_argument("job_args", nargs=argparse.REMAINDER, help="after --: the job's own arguments")
    args = parser.parse_args(argv)
    job_args = args.job_args[1:] if args.job_args[:1] == ["--"] else args.job_args
    kind = master_kind(args.master)
    build = REPO / "build"
    env_archive, py_files = args.env_archive, None
    if kind not in ("local", "kubernetes"):
        if args.pack_env and not env_archive:
            env_archive = str(build / "pipeline-env.tar.gz")
            if not args.dry_run:
                build.mkdir(exist_ok=True)
                pack_env(Path(env_archive))
        if not args.no_project_zip:
            py_files = str(build / "pipeline.zip")
            if not args.dry_run:
                build.mkdir(exist_ok=True)
                zip_project(Path(py_files))
    opts = SubmitOptions(
        master=args.master, deploy_mode=args.deploy_mode, env_archive=env_archive, py_files=py_files, image=args.image,
        namespace=args.namespace, executors=args.executors, executor_cores=args.executor_cores,
        executor_memory=args.executor_memory, driver_memory=args.driver_memory, gpus_per_executor=args.gpus_per_executor,
        conf=dict(item.split("=", 1) for item in args.conf), spark_submit=args.spark_submit,
    )
    try:
        command = spark_submit_argv(args.job, job_args, opts)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(shlex.join(command))
        return 0
    env = {**os.environ, "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
