"""Training inside Spark executors, one rank per Spark task, each running
:func:`pipeline.train.worker.train_rank`: ``horovod.spark.run`` for Horovod ranks (Gloo),
``pyspark.ml.torch.distributor.TorchDistributor`` (part of pyspark; one process per task,
``local_mode=False``) for DDP ranks (``dist.engine=torch``).

The active SparkSession decides where tasks run (``local[N]``, a standalone master, YARN,
Kubernetes). Every executor must reach the dataset version and the run root: relative
paths are made absolute on the driver, so on a cluster they must be on shared storage or,
better, an object store (``s3://``).
"""
from __future__ import annotations

import collections
import io
import os
import sys
from urllib.parse import urlsplit

from pipeline.config import Config, to_dict, with_absolute_locations
from pipeline.launch.horovod import LaunchError, gloo_answered, rank_main
from pipeline.launch.network import bind_horovod_rendezvous, interface_address, interface_towards


class TailStream(io.TextIOBase):
    """Echo to ``target`` and keep the last ``lines`` lines (for the error message)."""

    def __init__(self, target, lines: int = 60):
        self.target, self.tail = target, collections.deque(maxlen=lines)

    def write(self, text: str) -> int:
        self.target.write(text)
        self.tail.extend(line for line in text.splitlines() if line.strip())
        return len(text)

    def flush(self) -> None:
        self.target.flush()


def shipped_config(cfg: Config) -> dict:
    """The config as executors get it: locations absolute (resolved on the driver)."""
    return to_dict(with_absolute_locations(cfg))


def rank_interfaces(cfg: Config) -> list[str] | None:
    """The interface ranks talk over: ``dist.network_interface``; else loopback in local
    mode; else the one this driver uses to reach a standalone master (executors sit on the
    same network); else None (Horovod's own choice)."""
    if cfg.dist.network_interface:
        return [cfg.dist.network_interface]
    from pyspark import SparkContext

    master = SparkContext.getOrCreate().master
    if master.startswith("local"):
        return ["lo"]
    host = urlsplit(master).hostname if master.startswith("spark://") else None
    found = interface_towards(host) if host else None
    return [found] if found else None


def run_on_spark(cfg: Config, np: int, resume: bool = False, start_timeout: int = 120) -> dict:
    """Train on ``np`` Horovod ranks inside the active Spark application; rank 0's result.

    Raises:
        LaunchError: Horovod's Spark support is missing, too few task slots, or a rank
            failed (with the tail of the ranks' output).
    """
    try:
        import horovod.spark
    except ImportError as err:
        raise LaunchError("horovod.spark is not importable: run `make setup` (Horovod with Gloo and pyspark)") from err
    out, err = TailStream(sys.stdout), TailStream(sys.stderr)
    nics = rank_interfaces(cfg)
    address = interface_address(nics[0]) if nics else None
    if address:
        bind_horovod_rendezvous(address)
    try:
        with gloo_answered():
            results = horovod.spark.run(
                rank_main, args=(shipped_config(cfg), resume), num_proc=np, use_gloo=True,
                start_timeout=start_timeout, stdout=out, stderr=err, verbose=1, nics=nics,
            )
    except Exception as error:  # noqa: BLE001 -- Spark wraps the rank's exception; report it with the tail
        tail = "\n".join([*out.tail, *err.tail][-40:])
        raise LaunchError(
            f"training on {np} ranks inside Spark failed: {str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__}\n"
            f"last lines of the ranks' output:\n{tail}"
        ) from error
    return next(r for r in results if r["is_root"])


def torch_rank(cfg: dict, resume: bool, threads: int) -> dict:
    """One DDP rank inside a Spark task (TorchDistributor starts it under torchrun): torch
    threads = the task's cores, which torchrun's one local process cannot know."""
    from pipeline.engines.base import THREADS_VARIABLE
    from pipeline.train.worker import train_rank

    os.environ.setdefault(THREADS_VARIABLE, str(threads))
    return train_rank(cfg, resume)


def run_torch_on_spark(cfg: Config, np: int, resume: bool = False) -> dict:
    """Train on ``np`` DDP ranks as Spark tasks of the active application (barrier mode,
    torchrun's rendezvous at the first task); rank 0's result.

    Raises:
        LaunchError: too few task slots, or a rank failed (with TorchDistributor's message,
            which carries the tail of the failing rank's output).
    """
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    conf = SparkSession.getActiveSession().sparkContext.getConf()
    task_cpus = int(conf.get("spark.task.cpus", "1"))
    task_gpus = float(conf.get("spark.task.resource.gpu.amount", "0"))
    use_gpu = cfg.train.device == "cuda" or (cfg.train.device == "auto" and task_gpus > 0)
    try:
        return TorchDistributor(num_processes=np, local_mode=False, use_gpu=use_gpu).run(
            torch_rank, shipped_config(cfg), resume, task_cpus)
    except Exception as error:  # noqa: BLE001 -- report the rank's failure on the driver, in one message
        text = str(error).strip()
        raise LaunchError(f"training on {np} DDP ranks inside Spark (TorchDistributor) failed: "
                          f"{text[-3000:] if text else type(error).__name__}") from error
