"""Training through an external launcher process (horovodrun, torchrun): build its argv,
run it with secrets kept off the ranks' command lines, read rank 0's report."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from pipeline import storage
from pipeline.config import Config, ConfigError, to_yaml
from pipeline.launch import horovod, torchrun
from pipeline.launch.network import interface_address, interface_towards, is_local_host, unreachable
from pipeline.launch.process import run_launcher
from pipeline.launch.secrets import secrets_in_file

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = str(REPO_ROOT / "jobs" / "train.py")
HOROVODRUN = str(Path(sys.executable).parent / "horovodrun")


def _result(run_dir: str) -> dict:
    return {"run_dir": run_dir, "report": json.loads(storage.read_text(storage.join(run_dir, "report.json"))), "is_root": True}


def run_local_subprocess(cfg: Config, np: int, resume: bool, kind: str) -> dict:
    """``np`` ranks on this machine under torchrun or elastic horovodrun, on the resolved
    config (written to a temporary file every local rank reads)."""
    with tempfile.TemporaryDirectory(prefix="pipeline-launch-") as tmp, secrets_in_file(os.environ) as env:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(to_yaml(cfg))
        # An absolute script: ranks run in this directory, so relative paths keep their meaning.
        command = horovod.train_command(str(config_path), [], resume=resume, script=TRAIN_SCRIPT)
        if kind == "torchrun":
            argv = torchrun.torchrun_argv(np, command[1:], master_port=torchrun.free_port())
        else:
            script = horovod.write_discovery_script(Path(tmp) / "discover-hosts.sh", horovod.local_discovery_hosts(np))
            argv = bound(horovod.elastic_horovodrun_argv(cfg.dist.min_np, np, str(script), command, network_interface="lo"),
                         "127.0.0.1")
            from pipeline.engines.base import THREADS_VARIABLE, available_cores

            env[THREADS_VARIABLE] = str(max(1, available_cores() // np))  # both "hosts" are this machine
        return _result(run_launcher(argv, f"{kind} ({np} ranks)", env=env))


def located_overrides(cfg: Config) -> list[str]:
    """The resolved locations as overrides, so ranks elsewhere read them, not their own
    working directory's idea of a relative path."""
    out = [f"data.root={cfg.data.root}", f"run.root={cfg.run.root}"]
    if cfg.data.source.path:
        out.append(f"data.source.path={cfg.data.source.path}")
    if cfg.data.reader.cache_dir:
        out.append(f"data.reader.cache_dir={cfg.data.reader.cache_dir}")
    return out


def run_on_hosts(cfg: Config, np: int, hosts: str, resume: bool, source: tuple[str, list[str]]) -> dict:
    """``np`` Horovod ranks on ``hosts`` (``host:slots,...``) through horovodrun over ssh.

    Every host runs ``jobs/train.py`` with the same experiment file and overrides (the
    project and the file at the same path everywhere, as horovodrun assumes), plus the
    locations resolved here. Ranks talk over ``dist.network_interface``, or the interface
    this machine uses to reach the first host.
    """
    if cfg.dist.engine != "horovod":
        raise ConfigError(f"--hosts starts Horovod ranks (got dist.engine={cfg.dist.engine!r}); for DDP run one torchrun "
                          "per host (torchrun --nnodes N --rdzv-backend c10d ...) or srun under Slurm")
    names = [h.rsplit(":", 1)[0] for h in hosts.split(",") if h]
    if not names:
        raise ConfigError(f"--hosts {hosts!r}: give host:slots,host:slots")
    if all(is_local_host(n) for n in names):
        interface = "lo"  # horovodrun insists on loopback when every host is this one
    else:
        interface = cfg.dist.network_interface or interface_towards(names[0])
    config_path, overrides = source
    command = horovod.train_command(os.path.abspath(config_path), [*overrides, *located_overrides(cfg)], resume=resume,
                                    script=TRAIN_SCRIPT)
    with tempfile.TemporaryDirectory(prefix="pipeline-launch-") as tmp, secrets_in_file(os.environ) as env:
        if cfg.dist.elastic:
            script = horovod.write_discovery_script(Path(tmp) / "discover-hosts.sh", hosts.split(","))
            argv = horovod.elastic_horovodrun_argv(cfg.dist.min_np, np, str(script), command, network_interface=interface)
        else:
            argv = horovod.horovodrun_argv(np, command, hosts=hosts, network_interface=interface)
        argv = bound(argv, interface_address(interface) if interface else None)
        return _result(run_launcher(argv, f"horovodrun on {hosts}", env=env, diagnose=lambda: _lost(names)))


def bound(horovodrun_argv: list[str], address: str | None) -> list[str]:
    """``horovodrun ARGS`` as run here: with its rendezvous server listening on ``address``
    only (see :mod:`pipeline.launch.bound_horovodrun`), or on every interface when the
    address is unknown."""
    if address is None:
        return [HOROVODRUN, *horovodrun_argv[1:]]
    return [sys.executable, "-m", "pipeline.launch.bound_horovodrun", address, *horovodrun_argv[1:]]


def _lost(names: list[str]) -> str:
    lost = unreachable(sorted(set(names)))
    return f"host(s) {', '.join(lost)} lost (nothing answers on their ssh port)" if lost else ""
