"""Helpers for tests that start real ranks: horovodrun / torchrun argv on 127.0.0.1, runs, results."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.launch.horovod import horovodrun_argv
from pipeline.launch.torchrun import free_port, torchrun_argv
from tests.conftest import DIGITS_CONF, REPO

HOROVODRUN = str(Path(sys.executable).parent / "horovodrun")
TRAIN = str(REPO / "jobs" / "train.py")


def launch_argv(launcher: str, np: int, overrides: list[str], resume: bool = False, config: Path = DIGITS_CONF) -> list[str]:
    """jobs/train.py on ``np`` ranks: horovodrun, torchrun, or one plain process."""
    script = [TRAIN, "--config", str(config), *(["--resume"] if resume else []), *overrides]
    if launcher == "horovodrun":
        return horovodrun_argv(np, [sys.executable, *script], hosts=f"127.0.0.1:{np}", network_interface="lo", horovodrun=HOROVODRUN)
    if launcher == "torchrun":
        return torchrun_argv(np, script, master_port=free_port())
    return [sys.executable, *script]


def run_job(argv: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{argv[0]} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]


def max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for name in a:
        if a[name].is_floating_point():
            worst = max(worst, ((a[name] - b[name]).norm() / a[name].norm().clamp_min(1e-12)).item())
    return worst
