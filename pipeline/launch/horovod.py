"""Launching Horovod ranks: horovodrun argv (fixed or elastic), or horovod.run in-process."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from pipeline import cache_dir
from pipeline.config import Config, to_dict


class LaunchError(RuntimeError):
    """Ranks that could not be started or that failed; the message says which and why."""


def local_hosts(np: int) -> str:
    """Horovod host string for ``np`` slots on this machine."""
    return f"localhost:{np}"


def train_command(config_path: str, overrides: list[str], python: str | None = None, resume: bool = False,
                  script: str = "jobs/train.py") -> list[str]:
    """What each rank runs: ``script`` (jobs/train.py) with the experiment config."""
    return [python or sys.executable, script, "--config", config_path, *(["--resume"] if resume else []), *overrides]


def horovodrun_argv(np: int, command: list[str], hosts: str | None = None,
                    network_interface: str | None = None, horovodrun: str = "horovodrun") -> list[str]:
    """The ``horovodrun`` command that runs ``command`` on ``np`` ranks over Gloo."""
    argv = [horovodrun, "-np", str(np), "-H", hosts or local_hosts(np), "--gloo"]
    if network_interface:
        argv += ["--network-interface", network_interface]
    return argv + list(command)


def elastic_horovodrun_argv(min_np: int, max_np: int, discovery_script: str, command: list[str],
                            network_interface: str | None = None, horovodrun: str = "horovodrun") -> list[str]:
    """``horovodrun`` in elastic mode: hosts come from ``discovery_script``; the job goes on
    while at least ``min_np`` ranks are alive."""
    argv = [horovodrun, "-np", str(max_np), "--min-np", str(min_np), "--max-np", str(max_np),
            "--host-discovery-script", discovery_script, "--gloo"]
    if network_interface:
        argv += ["--network-interface", network_interface]
    return argv + list(command)


def local_discovery_hosts(np: int) -> list[str]:
    """This machine's slots under two names (localhost, 127.0.0.1).

    Horovod blacklists a whole host when one of its workers dies; two names for the same
    machine let the ranks under the other name carry on (measured: kill 1 of 2, the
    other finishes).
    """
    first = (np + 1) // 2
    return [f"localhost:{first}"] + ([f"127.0.0.1:{np - first}"] if np > first else [])


def write_discovery_script(path: Path, hosts: list[str]) -> Path:
    """An executable script printing ``hosts`` one per line (Horovod's discovery protocol)."""
    lines = "".join(f"echo {h}\n" for h in hosts)
    path.write_text(f"#!/bin/sh\n{lines}")
    path.chmod(0o755)
    return path


def horovod_run_kwargs(np: int, hosts: str | None = None, network_interface: str | None = None) -> dict:
    """Keyword arguments for ``horovod.runner.run`` starting ``np`` Gloo ranks."""
    kwargs = {"np": np, "hosts": hosts or local_hosts(np), "use_gloo": True, "executable": sys.executable}
    if network_interface:
        kwargs["network_interface"] = network_interface
    return kwargs


def rank_main(cfg: dict, resume: bool) -> dict:
    """What a launched rank runs: :func:`pipeline.train.worker.train_rank`, imported in the
    rank. Launchers that pickle the rank's function (``horovod.runner.run``,
    ``horovod.spark.run``) hand over this one, by reference, so the launching process never
    imports torch: 0.8 s here, spent before the first rank could start."""
    from pipeline.train.worker import train_rank

    return train_rank(cfg, resume)


# Before starting any rank, Horovod's launcher asks whether it was built with Gloo by
# importing horovod.torch -- torch -- in a forked child: 0.8 s of a 9 s Spark launch here
# (traced), every launch. The answer only changes with the Horovod build, so it is asked
# once per build of the extension and remembered.
_GLOO_QUESTION = "import horovod.torch as hvd; print('gloo' if hvd.gloo_built() else 'no gloo')"


@functools.cache
def gloo_built() -> bool:
    """Whether this Horovod's torch extension has Gloo, remembered per build (the
    extension's path, size and mtime) under ``$PIPELINE_CACHE`` (~/.cache/pipeline)."""
    spec = importlib.util.find_spec("horovod")
    extensions = sorted(Path(spec.origin).parent.glob("torch/mpi_lib_v2*.so")) if spec and spec.origin else []
    if not extensions:
        return False
    st = extensions[0].stat()
    key = hashlib.sha256(f"{extensions[0]}|{st.st_size}|{st.st_mtime_ns}|{sys.executable}".encode()).hexdigest()[:16]
    remembered = cache_dir() / "horovod" / f"gloo-{key}"
    if remembered.is_file():
        return remembered.read_text().strip() == "gloo"
    asked = subprocess.run([sys.executable, "-c", _GLOO_QUESTION], capture_output=True, text=True)
    answer = asked.stdout.split()[-1:] == ["gloo"]
    if asked.returncode == 0:  # an import that failed is asked again next time
        staged = remembered.with_name(f"{remembered.name}.{os.getpid()}")
        try:
            remembered.parent.mkdir(parents=True, exist_ok=True)
            staged.write_text("gloo\n" if answer else "no gloo\n")
            os.replace(staged, remembered)
        except OSError:  # a cache that cannot be written: asked again at the next launch
            with contextlib.suppress(OSError):
                staged.unlink(missing_ok=True)
    return answer


@contextlib.contextmanager
def gloo_answered():
    """Horovod's launcher (``horovod.runner.run``, ``horovod.spark.run``) handed
    :func:`gloo_built`'s answer instead of asking itself; when the answer is no, it raises
    its own error (Gloo support has not been built, reinstall Horovod with Gloo)."""
    from horovod.runner import launch

    asked = launch.gloo_built
    launch.gloo_built = lambda verbose=False: gloo_built()
    try:
        yield
    finally:
        launch.gloo_built = asked


def run_local(cfg: Config, np: int, resume: bool = False) -> dict:
    """Train on ``np`` Horovod ranks on this machine; returns rank 0's result.

    Uses Horovod's Python launcher (``horovod.runner.run``), which starts ``np`` processes
    that each call :func:`pipeline.train.worker.train_rank`. Secret environment variables
    reach the ranks through a private file, not their command lines (see
    :mod:`pipeline.launch.secrets`).
    """
    from pipeline.launch.network import bind_horovod_rendezvous
    from pipeline.launch.secrets import environ_replaced, secrets_in_file

    try:
        from horovod.runner import run as horovod_run
    except ImportError as err:
        raise LaunchError("Horovod is not installed: run `make setup`, or use --np 1 with dist.engine=single") from err
    bind_horovod_rendezvous("127.0.0.1")  # every rank is on this machine
    try:
        with secrets_in_file(os.environ) as env, environ_replaced(env), gloo_answered():
            results = horovod_run(rank_main, args=(to_dict(cfg), resume), **horovod_run_kwargs(np, network_interface="lo"))
    except RuntimeError as err:
        raise LaunchError(f"training on {np} Horovod ranks failed: {err} (each rank's log lines are above, prefixed [rank N])") from err
    return results[0]
