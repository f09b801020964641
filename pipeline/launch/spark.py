"""Training inside Spark executors: ``horovod.spark.run`` starts one Horovod rank per Spark
task (Gloo), each running :func:`pipeline.train.worker.train_rank`.

The active SparkSession decides where tasks run (``local[N]``, a standalone master, YARN,
Kubernetes). Every executor must reach the dataset version and the run root: relative
paths are made absolute on the driver, so on a cluster they must be on shared storage or,
better, an object store (``s3://``).
"""
from __future__ import annotations

import collections
import io
import sys
from urllib.parse import urlsplit

from pipeline.config import Config, to_dict, with_absolute_locations
from pipeline.launch.horovod import LaunchError
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
    from pipeline.train.worker import train_rank

    out, err = TailStream(sys.stdout), TailStream(sys.stderr)
    nics = rank_interfaces(cfg)
    address = interface_address(nics[0]) if nics else None
    if address:
        bind_horovod_rendezvous(address)
    try:
        results = horovod.spark.run(
            train_rank, args=(shipped_config(cfg), resume), num_proc=np, use_gloo=True,
            start_timeout=start_timeout, stdout=out, stderr=err, verbose=1, nics=nics,
        )
    except Exception as error:  # noqa: BLE001 -- Spark wraps the rank's exception; report it with the tail
        tail = "\n".join([*out.tail, *err.tail][-40:])
        raise LaunchError(
            f"training on {np} ranks inside Spark failed: {str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__}\n"
            f"last lines of the ranks' output:\n{tail}"
        ) from error
    return next(r for r in results if r["is_root"])
