"""Launching Horovod ranks on this machine (horovodrun argv, or horovod.run in-process)."""
from __future__ import annotations

import sys

from pipeline.config import Config, to_dict


class LaunchError(RuntimeError):
    """Ranks that could not be started or that failed; the message says which and why."""


def local_hosts(np: int) -> str:
    """Horovod host string for ``np`` slots on this machine."""
    return f"localhost:{np}"


def train_command(config_path: str, overrides: list[str], python: str | None = None) -> list[str]:
    """What each rank runs: jobs/train.py with the experiment config."""
    return [python or sys.executable, "jobs/train.py", "--config", config_path, *overrides]


def horovodrun_argv(np: int, command: list[str], hosts: str | None = None,
                    network_interface: str | None = None, horovodrun: str = "horovodrun") -> list[str]:
    """The ``horovodrun`` command that runs ``command`` on ``np`` ranks over Gloo."""
    argv = [horovodrun, "-np", str(np), "-H", hosts or local_hosts(np), "--gloo"]
    if network_interface:
        argv += ["--network-interface", network_interface]
    return argv + list(command)


def horovod_run_kwargs(np: int, hosts: str | None = None, network_interface: str | None = None) -> dict:
    """Keyword arguments for ``horovod.runner.run`` starting ``np`` Gloo ranks."""
    kwargs = {"np": np, "hosts": hosts or local_hosts(np), "use_gloo": True, "executable": sys.executable}
    if network_interface:
        kwargs["network_interface"] = network_interface
    return kwargs


def run_local(cfg: Config, np: int) -> dict:
    """Train on ``np`` Horovod ranks on this machine; returns rank 0's result.

    Uses Horovod's Python launcher (``horovod.runner.run``), which starts ``np`` processes
    that each call :func:`pipeline.train.worker.train_rank`.
    """
    from pipeline.train.worker import train_rank

    try:
        from horovod.runner import run as horovod_run
    except ImportError as err:
        raise LaunchError("Horovod is not installed: run `make setup`, or use --np 1 with dist.engine=single") from err
    try:
        results = horovod_run(train_rank, args=(to_dict(cfg),), **horovod_run_kwargs(np))
    except RuntimeError as err:
        raise LaunchError(f"training on {np} Horovod ranks failed: {err} (each rank's log lines are above, prefixed [rank N])") from err
    return results[0]
