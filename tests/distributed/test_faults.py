"""A worker killed mid-epoch: elastic mode carries on with the survivor; without it the job
exits non-zero (within the collective timeout) and --resume finishes the run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.manifest import read_manifest
from pipeline.train.checkpoint import checkpoint_files
from pipeline.train.schedule import learning_rate
from tests.conftest import DIGITS_CONF, REPO

pytestmark = pytest.mark.dist


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def horovod_env(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs if k.startswith(b"HOROVOD_")}


def worker_to_kill(launcher: subprocess.Popen) -> int | None:
    """A training worker that is not rank 0 (by HOROVOD_RANK, or the second elastic host)."""
    for pid in descendants(launcher.pid):
        env = horovod_env(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
        if env.get("HOROVOD_RANK") == "1" or (env.get("HOROVOD_HOSTNAME") == "127.0.0.1" and b"jobs/train.py" in cmdline):
            return pid
    return None


def train_cli(tmp_path, name, *extra, resume=False):
    argv = [sys.executable, "-m", "pipeline", "train", "--config", str(DIGITS_CONF), "--np", "2", *(["--resume"] if resume else []),
            f"data.root={tmp_path.parent / 'data-root'}", f"run.root={tmp_path}", f"run.name={name}",
            "train.epochs=8", "train.checkpoint_every_steps=10", "dist.timeout_s=60", *extra]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_one_worker_after(launcher, run_dir: Path, step: int, deadline_s: float = 300) -> None:
    """Wait until a checkpoint at or past ``step`` exists (mid-training), then SIGKILL a worker."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and launcher.poll() is None:
        files = checkpoint_files(run_dir) if (run_dir / "checkpoints").is_dir() else []
        if files and int(Path(files[0]).stem.split("-")[1]) >= step:
            pid = worker_to_kill(launcher)
            if pid:
                os.kill(pid, signal.SIGKILL)
                return
        time.sleep(0.05)
    output = launcher.communicate(timeout=60)[0] if launcher.poll() is not None else ""
    pytest.fail(f"never saw a worker to kill at step {step}:\n{output[-3000:]}")


@pytest.fixture
def digits_root(digits_version, tmp_path):
    (tmp_path.parent / "data-root").mkdir(exist_ok=True)
    link = tmp_path.parent / "data-root" / "digits"
    if not link.exists():
        link.symlink_to(digits_version[0].parent)
    return tmp_path


def test_elastic_job_survives_a_killed_worker(digits_root):
    tmp_path = digits_root
    launcher = train_cli(tmp_path, "elastic", "dist.elastic=true", "dist.commit_every_steps=5")
    kill_one_worker_after(launcher, tmp_path / "elastic", step=60)
    output = launcher.communicate(timeout=600)[0]
    assert launcher.returncode == 0, output[-4000:]
    report = json.loads((tmp_path / "elastic" / "report.json").read_text())
    assert report["epochs"] == 8 and report["world_size"] == 1
    history = [json.loads(line) for line in (tmp_path / "elastic" / "metrics.jsonl").read_text().splitlines()]
    sizes = [h["world_size"] for h in history]
    assert sizes[0] == 2 and sizes[-1] == 1, sizes
    assert report["test_accuracy"] > 0.9
    # The rate follows the global batch (pipeline/train/schedule.py): after the shrink, 1 x 32
    # rows per step, the conf's reference batch, so lr x 1 at the schedule's point.
    cfg = load_config(DIGITS_CONF, ["train.epochs=8"]).train
    rows = read_manifest(tmp_path.parent / "data-root" / "digits")[1]["splits"]["train"]["rows"]
    progress = 7 + (rows // cfg.batch_size - 1) * cfg.batch_size / rows  # epoch 8's last step, on 1 rank
    assert history[-1]["lr"] == pytest.approx(learning_rate(cfg, 1, progress), rel=1e-9)
    assert output.strip().splitlines()[-1] == str(tmp_path / "elastic")


def test_without_elastic_a_killed_worker_fails_the_job_and_resume_finishes_it(digits_root):
    tmp_path = digits_root
    launcher = train_cli(tmp_path, "plain")
    kill_one_worker_after(launcher, tmp_path / "plain", step=60)
    started = time.monotonic()
    output = launcher.communicate(timeout=300)[0]
    assert launcher.returncode != 0, output[-3000:]
    assert time.monotonic() - started < 120, "a lost peer must end the job, not hang it"
    assert not (tmp_path / "plain" / "report.json").exists()
    resumed = train_cli(tmp_path, "plain", resume=True)
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-4000:]
    report = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert report["epochs"] == 8 and report["resumed_from"] and report["test_accuracy"] > 0.9
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 9)), "each epoch recorded once"
