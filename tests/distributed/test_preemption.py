"""Pre-emption for real: SIGUSR1 to one rank of a running 2-rank Horovod job makes both
ranks save a mid-epoch checkpoint and exit with status 75; --resume then ends where the
uninterrupted run ends. (The uninterrupted run also shows rank 0's progress lines.)"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from pipeline.train.preemption import PREEMPTED_EXIT
from tests.conftest import DIGITS_CONF, REPO
from tests.distributed.launch import final_weights, launch_argv, max_relative_difference, run_job
from tests.distributed.test_faults import descendants, horovod_env

pytestmark = pytest.mark.dist


def _rank_pid(launcher: subprocess.Popen, rank: str) -> int:
    for pid in descendants(launcher.pid):
        if horovod_env(pid).get("HOROVOD_RANK") == rank:
            return pid
    raise AssertionError(f"no process of rank {rank} under horovodrun")


def _preempt_after_start(argv: list[str], rank: str) -> tuple[int, str]:
    """Start ``argv``, send SIGUSR1 to ``rank`` once training has begun, return exit status and output."""
    launcher = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in launcher.stdout:
            lines.append(line)
            if " training cnn on " in line:  # logged by rank 0 after every rank has installed its handler
                os.kill(_rank_pid(launcher, rank), signal.SIGUSR1)
                break
        lines.extend(launcher.stdout)
        return launcher.wait(timeout=300), "".join(lines)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)


def test_sigusr1_on_one_rank_checkpoints_every_rank_and_resume_matches_the_whole_run(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    common = [f"data.root={root}", f"run.root={tmp_path}", "train.epochs=3", "train.preemption_check_steps=5",
              "train.keep_checkpoints=100", "dist.engine=horovod", "train.progress_every_s=0.05"]
    whole = run_job(launch_argv("horovodrun", 2, [*common, "run.name=whole"]))
    # Under a launcher stderr is a pipe: rank 0 (only) prints progress lines instead of a bar.
    shown = [line for line in (whole.stdout + whole.stderr).splitlines() if "pipeline.train.progress" in line]
    assert shown and all("[rank 0]" in line for line in shown), shown[:3]
    assert re.search(r"epoch \d/3 step \d+/\d+ [\d,]+ samples/s, epoch ETA \d:\d\d:\d\d, run ETA \d:\d\d:\d\d", shown[0]), shown[0]

    status, output = _preempt_after_start(launch_argv("horovodrun", 2, [*common, "run.name=cut"]), rank="1")
    assert status != 0, output[-3000:]
    said = re.findall(r"preempted: checkpoint saved at global step (\d+) \(([^)]*)\) in (\S+);", output)
    assert len(said) == 2, f"each rank says it was pre-empted:\n{output[-3000:]}"
    assert len(set(said)) == 1, said  # both ranks stopped at the same step
    step, where, run_dir = said[0]
    assert run_dir == str(tmp_path / "cut") and int(step) % 5 == 0
    assert (tmp_path / "cut" / "checkpoints" / f"step-{int(step):09d}.pt").exists(), sorted(os.listdir(tmp_path / "cut" / "checkpoints"))
    assert not (tmp_path / "cut" / "report.json").exists()
    assert "status code 75" in output or "exit code 75" in output or "exited with 75" in output, output[-2000:]

    resumed = run_job(launch_argv("horovodrun", 2, [*common, "run.name=cut"], resume=True))
    assert "resumed from" in resumed.stdout + resumed.stderr
    diff = max_relative_difference(final_weights(tmp_path / "whole"), final_weights(tmp_path / "cut"))
    assert diff <= 1e-6, f"pre-empted ({where}) and resumed, the run ends {diff:.2e} away from the uninterrupted one"


def test_one_process_exits_75_with_one_line(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    argv = launch_argv("single", 1, [f"data.root={root}", f"run.root={tmp_path}", "run.name=one", "train.epochs=2",
                                     "train.preemption_check_steps=3", "dist.engine=single"])
    launcher = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if " training cnn on " in line:
            launcher.send_signal(signal.SIGUSR1)
            break
    lines.extend(launcher.stdout)
    assert launcher.wait(timeout=300) == PREEMPTED_EXIT, "".join(lines)[-3000:]
    preempted = [line for line in lines if "preempted:" in line]
    assert len(preempted) == 1 and preempted[0].startswith("preempted: checkpoint saved at global step "), lines[-5:]
    assert "Traceback" not in "".join(lines)


def _rank_env(pid: int) -> dict[str, str]:
    try:
        raw = open(f"/proc/{pid}/environ", "rb").read()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)


@pytest.mark.parametrize("engine,rank_variable", [("horovod", "HOROVOD_RANK"), ("torch", "RANK")])
def test_the_local_launcher_exits_75_when_its_ranks_are_preempted(digits_version, tmp_path, engine, rank_variable):
    """`python -m pipeline train --np 2` (horovod.run / torchrun under it): a SIGUSR1 to one
    rank ends the command with the ranks' preempted: line and status 75, not a launch failure."""
    root = digits_version[0].parent.parent
    argv = [sys.executable, "-m", "pipeline", "train", "--config", str(DIGITS_CONF), "--np", "2", f"data.root={root}",
            f"run.root={tmp_path}", "run.name=local", "train.epochs=3", "train.preemption_check_steps=5", f"dist.engine={engine}"]
    launcher = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in launcher.stdout:
            lines.append(line)
            if " training cnn on " in line:
                ranks = [p for p in descendants(launcher.pid) if _rank_env(p).get(rank_variable) == "1"]
                assert ranks, "".join(lines)[-2000:]
                os.kill(ranks[0], signal.SIGUSR1)
                break
        lines.extend(launcher.stdout)
        status = launcher.wait(timeout=300)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    output = "".join(lines)
    assert status == PREEMPTED_EXIT, output[-3000:]
    assert output.strip().splitlines()[-1].startswith("preempted: checkpoint saved at global step "), output[-1500:]
    assert "error:" not in output.strip().splitlines()[-1]
