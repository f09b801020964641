"""deploy/slurm: the two batch scripts run as sbatch would run them, with stand-ins only
for Slurm itself (scontrol, srun: they record their arguments; srun runs its command here,
so signal-ranks.sh runs for real, on this machine's processes of this test's job id).

The run to train on a restart is decided from the real resolved config (--print-config)
and the real checkpoint listing; the pre-emption tests start the real horovodrun and the
real torchrun, whose ranks are stand-ins that behave as the trainer's contract says (on
SIGUSR1: agree, "save", exit 75), and send SIGUSR1 to the batch shell as Slurm does.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import DIGITS_CONF, REPO

TRAIN = REPO / "deploy/slurm/train.sbatch"
# The job id: signal-ranks.sh signals only processes with it in their environment, so no
# process on this machine but this test's has it.
JOB = str(10**8 + uuid.uuid4().int % 10**8)
NAME = f"digits_cnn-slurm-{JOB}"
TRAIN_TORCH = REPO / "deploy/slurm/train-torch.sbatch"

SCONTROL = """#!/bin/sh
case "$1 $2" in
  "show hostnames") echo "$FAKE_NODES" | tr , '\\n' ;;
  "requeue "*) echo "requeue $2" >> "$FAKE_OUT/scontrol.log" ;;
  *) echo "scontrol stand-in: unexpected $*" >&2; exit 1 ;;
esac
"""
# srun: record the options, run the command here (one task: the nodes are this machine).
SRUN = """#!/bin/bash
echo "$*" >> "$FAKE_OUT/srun.log"
while [[ "$1" == -* ]]; do shift; done
exec "$@"
"""
HOROVODRUN = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_OUT/horovodrun.argv"
exit "${FAKE_STATUS:-0}"
"""
# A training rank as the trainer's contract has it: on SIGUSR1, every rank agrees (here: waits
# for the others' marks), one checkpoint is saved, and each rank prints `preempted:` and exits 75.
RANK = r"""
import os, signal, sys, time
from pathlib import Path

out = Path(os.environ["FAKE_OUT"])
rank = os.environ.get("HOROVOD_RANK") or os.environ["RANK"]
size = int(os.environ.get("HOROVOD_SIZE") or os.environ["WORLD_SIZE"])
(out / f"argv-{rank}").write_text("\n".join(sys.argv[1:]))
if os.environ.get("FAKE_RANK") == "exit":
    sys.exit(0)
warned = []
signal.signal(signal.SIGUSR1, lambda *_: warned.append(1))
(out / f"ready-{rank}").touch()
deadline = time.time() + 60
while not warned and time.time() < deadline:
    time.sleep(0.05)
if not warned:
    sys.exit(3)
(out / f"preempted-{rank}").touch()
while len(list(out.glob("preempted-*"))) < size and time.time() < deadline:
    time.sleep(0.05)
print(f"preempted: rank {rank}", flush=True)
sys.exit(75)
"""


class Allocation:
    """A fake allocation: the checkout (deploy/ of this repo, a stand-in jobs/train.py),
    Slurm's commands and environment, and the files the stand-ins write."""

    def __init__(self, tmp: Path, nodes: str = "localhost", tasks_per_node: int = 2):
        self.root, self.out, self.bin = tmp / "checkout", tmp / "out", tmp / "bin"
        for d in (self.root / "jobs", self.out, self.bin):
            d.mkdir(parents=True)
        (self.root / "deploy").symlink_to(REPO / "deploy")
        (self.root / "jobs" / "train.py").write_text(RANK)
        for name, text in (("scontrol", SCONTROL), ("srun", SRUN), ("horovodrun", HOROVODRUN)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.env = {
            **os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "PYTHON": sys.executable, "PIPELINE_ROOT": str(self.root),
            "HOROVODRUN": str(self.bin / "horovodrun"), "FAKE_OUT": str(self.out),
            "FAKE_NODES": nodes, "SLURM_JOB_NODELIST": "fake[1-9]", "SLURM_JOB_NUM_NODES": str(len(nodes.split(","))),
            "SLURM_NTASKS_PER_NODE": str(tasks_per_node), "SLURM_CPUS_PER_TASK": "4", "SLURM_JOB_ID": JOB,
            "SLURM_SUBMIT_DIR": str(self.root), "RDZV_PORT": str(port), "FAKE_RANK": "exit",
        }

    def sbatch(self, script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script), str(DIGITS_CONF), *args], env={**self.env, **env}, capture_output=True,
                              text=True, timeout=120)

    def rank_argv(self, rank: int = 0) -> list[str]:
        return (self.out / f"argv-{rank}").read_text().split("\n")

    def horovodrun_argv(self) -> list[str]:
        return (self.out / "horovodrun.argv").read_text().splitlines()

    def log(self, name: str) -> list[str]:
        path = self.out / name
        return path.read_text().splitlines() if path.exists() else []


def test_horovod_script_builds_hosts_from_the_allocation(tmp_path):
    alloc = Allocation(tmp_path, nodes="node1,node2")
    proc = alloc.sbatch(TRAIN, "train.epochs=3")
    assert proc.returncode == 0, proc.stderr
    argv = alloc.horovodrun_argv()
    assert argv[:5] == ["-np", "4", "-H", "node1:2,node2:2", "--gloo"]
    assert argv[5:8] == [sys.executable, "jobs/train.py", "--config"] and "--resume" not in argv
    assert argv[-2:] == ["train.epochs=3", f"run.name={NAME}"]


def _listening() -> socket.socket:
    """A port where something answers, as sshd would on a node that is up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_a_failed_horovod_job_ends_with_one_line_naming_the_lost_node_and_the_resubmit(tmp_path):
    alloc = Allocation(tmp_path, nodes="127.0.0.1,lost-node.invalid")
    with _listening() as sshd:
        port = str(sshd.getsockname()[1])
        proc = alloc.sbatch(TRAIN, "train.epochs=3", FAKE_STATUS="1", SSH_PORT=port)
    assert proc.returncode == 1
    assert alloc.horovodrun_argv()[:7] == ["-np", "4", "-H", "127.0.0.1:2,lost-node.invalid:2", "--ssh-port", port, "--gloo"]
    *_, last = proc.stderr.splitlines()
    assert last == (f"error: node(s) lost-node.invalid lost during job {JOB} (nothing answers on their ssh port; horovodrun "
                    "exited with status 1); resume from the run's last checkpoint on the other nodes: sbatch "
                    f"--exclude=lost-node.invalid --nodes=1 deploy/slurm/train.sbatch {DIGITS_CONF} train.epochs=3 "
                    f"run.name={NAME} --resume"), proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")] == [last]


def test_a_failed_job_with_every_node_up_points_at_the_ranks_error(tmp_path):
    alloc = Allocation(tmp_path, nodes="127.0.0.1")
    with _listening() as sshd:
        proc = alloc.sbatch(TRAIN, "run.name=mine", FAKE_STATUS="3", SSH_PORT=str(sshd.getsockname()[1]))
    assert proc.returncode == 3
    assert proc.stderr.splitlines()[-1] == (
        f"error: job {JOB} failed: horovodrun exited with status 3 (a rank's own error, or Slurm's node-failure message, is "
        f"above); once that is fixed, resume from the run's last checkpoint: sbatch deploy/slurm/train.sbatch {DIGITS_CONF} "
        "run.name=mine --resume")


def _checkpoint(run_dir: Path) -> None:
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / ".run").write_text("{}")
    (run_dir / "checkpoints" / "step-000000200.pt").write_bytes(b"x")


@pytest.mark.parametrize("uri", [False, True], ids=["path", "file-uri"])
def test_a_requeued_job_resumes_from_a_checkpoint_under_the_resolved_run_root(tmp_path, uri):
    alloc = Allocation(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    root = f"run.root={elsewhere.as_uri() if uri else elsewhere}"
    _checkpoint(alloc.root / "runs" / NAME)  # under the default runs/: not this run's root
    proc = alloc.sbatch(TRAIN, root, SLURM_RESTART_COUNT="1")
    assert proc.returncode == 0, proc.stderr
    assert "--resume" not in alloc.horovodrun_argv() and f"run.name={NAME}" in alloc.horovodrun_argv()

    _checkpoint(elsewhere / NAME)
    proc = alloc.sbatch(TRAIN, root, SLURM_RESTART_COUNT="1")
    assert proc.returncode == 0, proc.stderr
    assert alloc.horovodrun_argv()[-2:] == [f"run.name={NAME}", "--resume"] and root in alloc.horovodrun_argv()
    assert f"resuming {NAME} from its latest checkpoint" in proc.stdout
    proc = alloc.sbatch(TRAIN, root)  # a first start never resumes
    assert "--resume" not in alloc.horovodrun_argv()


def test_a_restart_before_the_first_checkpoint_starts_a_run_of_its_own(tmp_path):
    """The first attempt claimed its run directory and was stopped before any checkpoint:
    the claimed directory cannot be started again, nor resumed; the restart trains as
    NAME-r<restart>, and a later restart resumes that one."""
    alloc = Allocation(tmp_path)
    runs = tmp_path / "runs"
    (runs / NAME).mkdir(parents=True)
    (runs / NAME / ".run").write_text("{}")
    proc = alloc.sbatch(TRAIN, f"run.root={runs}", SLURM_RESTART_COUNT="1")
    assert proc.returncode == 0, proc.stderr
    assert alloc.horovodrun_argv()[-1] == f"run.name={NAME}-r1" and "--resume" not in alloc.horovodrun_argv()
    _checkpoint(runs / f"{NAME}-r1")
    alloc.sbatch(TRAIN, f"run.root={runs}", SLURM_RESTART_COUNT="2")
    assert alloc.horovodrun_argv()[-2:] == [f"run.name={NAME}-r1", "--resume"]
    alloc.sbatch(TRAIN, f"run.root={runs}", "run.name=mine", SLURM_RESTART_COUNT="2")  # the user's name wins
    assert alloc.horovodrun_argv()[-1] == "run.name=mine"


def test_each_script_refuses_the_other_engine(tmp_path):
    alloc = Allocation(tmp_path)
    proc = alloc.sbatch(TRAIN, "dist.engine=torch")
    assert proc.returncode != 0 and "submit deploy/slurm/train-torch.sbatch instead" in proc.stderr
    assert not (alloc.out / "horovodrun.argv").exists()
    proc = alloc.sbatch(TRAIN_TORCH, "dist.engine=horovod")
    assert proc.returncode != 0 and "submit deploy/slurm/train.sbatch instead" in proc.stderr
    proc = alloc.sbatch(TRAIN_TORCH, SLURM_GPUS_PER_TASK="1")
    assert proc.returncode == 2 and "--gpus-per-node" in proc.stderr and not alloc.log("srun.log")


def _preempt(alloc: Allocation, script: Path, ranks: int = 2) -> tuple[int, str]:
    """Start ``script`` as its own session, send SIGUSR1 to the batch shell (Slurm's
    --signal=B:USR1) once every rank is up, and return its exit status and output."""
    proc = subprocess.Popen(["bash", str(script), str(DIGITS_CONF)], env={**alloc.env, "FAKE_RANK": "wait"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 90
        while len(list(alloc.out.glob("ready-*"))) < ranks and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[0]
        proc.send_signal(signal.SIGUSR1)
        output = proc.communicate(timeout=90)[0]
        return proc.returncode, output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _signalled(output: str) -> list[str]:
    """The processes deploy/slurm/signal-ranks.sh says it sent SIGUSR1 to."""
    return [line.split(": ", 2)[2] for line in output.splitlines() if ": SIGUSR1 to rank process " in line]


def _launcher_status(output: str) -> str:
    return output.split("launcher: ", 1)[1].split(";", 1)[0]


@pytest.mark.dist
def test_the_time_limit_warning_makes_every_horovod_rank_checkpoint_then_requeues(tmp_path):
    alloc = Allocation(tmp_path)
    alloc.env["HOROVODRUN"] = str(Path(sys.executable).parent / "horovodrun")
    status, output = _preempt(alloc, TRAIN)
    assert status == 0, output
    assert sorted(p.name for p in alloc.out.glob("preempted-*")) == ["preempted-0", "preempted-1"], output
    # Both ranks checkpointed (the files above); horovodrun may end the second rank once the
    # first has exited with 75, before its line is forwarded: at least one line shows.
    assert output.count("preempted: rank") >= 1
    assert alloc.log("scontrol.log") == [f"requeue {JOB}"]
    (step,) = alloc.log("srun.log")
    assert step == f"--overlap --nodes=1 --ntasks=1 --ntasks-per-node=1 {alloc.root}/deploy/slurm/signal-ranks.sh {JOB}"
    signalled = _signalled(output)  # the two ranks, never horovodrun
    assert len(signalled) == 2 and all(" jobs/train.py --config " in s and "horovodrun" not in s for s in signalled), signalled
    assert _launcher_status(output) not in ("", "0", str(128 + signal.SIGUSR1)), output  # horovodrun saw the ranks exit 75


@pytest.mark.dist
def test_the_time_limit_warning_makes_every_torchrun_rank_checkpoint_then_requeues(tmp_path):
    alloc = Allocation(tmp_path)
    status, output = _preempt(alloc, TRAIN_TORCH)
    assert status == 0, output
    assert sorted(p.name for p in alloc.out.glob("preempted-*")) == ["preempted-0", "preempted-1"], output
    assert alloc.log("scontrol.log") == [f"requeue {JOB}"]
    train_step, signal_step = alloc.log("srun.log")
    port = alloc.env["RDZV_PORT"]
    assert train_step.startswith("--nodes=1 --ntasks=1 --ntasks-per-node=1 --cpus-per-task=8 --kill-on-bad-exit=1 "
                                 f"{sys.executable} -m torch.distributed.run --nnodes 1 --nproc-per-node 2 "
                                 f"--rdzv-backend c10d --rdzv-endpoint localhost:{port} --rdzv-id {JOB} jobs/train.py --config ")
    assert "dist.engine=torch" in alloc.rank_argv(1) and f"run.name={NAME}" in alloc.rank_argv(1)
    assert signal_step.startswith("--overlap ")
    signalled = _signalled(output)  # the two ranks, never torchrun
    assert len(signalled) == 2 and all(" -u jobs/train.py " in s and "torch.distributed.run" not in s for s in signalled), signalled
    assert _launcher_status(output) not in ("", "0", str(128 + signal.SIGUSR1)), output


@pytest.mark.parametrize("cmdline,matches", [
    ("/opt/venv/bin/python jobs/train.py --config c.yaml", True),  # horovodrun's rank
    ("/usr/bin/python3.11 -u jobs/train.py --config c.yaml", True),  # torchrun's rank
    ("/opt/venv/bin/python /opt/pipeline/jobs/train.py --config c.yaml", True),
    ("/opt/venv/bin/python /opt/venv/bin/horovodrun -np 4 -H a:2 --gloo python jobs/train.py --config c", False),
    ("/opt/venv/bin/python -m torch.distributed.run --nnodes 2 jobs/train.py --config c", False),
    ("srun --nodes=2 python -m torch.distributed.run jobs/train.py", False),
    ("ssh -o PasswordAuthentication=no node2 cd /x > /dev/null 2>&1 ; env A=1 python jobs/train.py", False),
    ("bash -c cd /x > /dev/null 2>&1 ; env A=1 python jobs/train.py --config c", False),
    ("/opt/venv/bin/python jobs/train_on_spark.py --np 2", False),
])
def test_the_rank_pattern_matches_ranks_and_no_launcher(cmdline, matches):
    """The cases the pre-emption tests cannot start here (ssh, the remote shell): the pattern
    as pgrep reads it (POSIX extended regex), through grep -E."""
    pattern = next(line.split("=", 1)[1].strip("'") for line in (REPO / "deploy/slurm/signal-ranks.sh").read_text().splitlines()
                   if line.startswith("RANK_PATTERN="))
    found = subprocess.run(["grep", "-qE", pattern], input=cmdline, text=True).returncode == 0
    assert found == matches


@pytest.mark.parametrize("script", [TRAIN, TRAIN_TORCH], ids=lambda p: p.name)
def test_sbatch_directives_keep_requeue_and_the_warning(script):
    directives = [line.split(None, 1)[1] for line in script.read_text().splitlines() if line.startswith("#SBATCH ")]
    assert "--requeue" in directives and "--signal=B:USR1@120" in directives and "--open-mode=append" in directives
