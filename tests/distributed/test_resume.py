"""Checkpoints and --resume: a run continued from a mid-epoch checkpoint ends where the
uninterrupted run ends, on the same world size and from 2 ranks onto 1."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.train.checkpoint import CheckpointError, checkpoint_files
from pipeline.train.worker import train_rank
from tests.conftest import digits_config
from tests.distributed.launch import final_weights, launch_argv, max_relative_difference, run_job
from tests.distributed.test_engines import SAME_MATH

TIMING = ("epoch_seconds", "samples_per_sec", "input_wait_fraction", "optimizer_step_seconds")


def stopped_copy(run_dir, name, keep_step):
    """What a run stopped just after checkpoint ``keep_step`` leaves: its directory with no
    later checkpoint, no model and no report, plus a newer checkpoint cut short by the crash."""
    copy = run_dir.parent / name
    shutil.copytree(run_dir, copy)
    for f in map(Path, checkpoint_files(copy)):
        if int(f.stem.split("-")[1]) > keep_step:
            f.unlink()
    (copy / "model.pt").unlink()
    (copy / "report.json").unlink()
    (copy / "checkpoints" / f"step-{keep_step + 1:09d}.pt").write_bytes(b"truncated")
    return copy


def metrics(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_mid_epoch_is_exact_in_one_process(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    base = ["dist.engine=single", "train.epochs=2", "train.batch_size=32", "train.checkpoint_every_steps=10",
            "train.keep_checkpoints=100", "model.dropout=0.2"]  # dropout: the RNG state must come back too
    whole = train_rank(digits_config(root, tmp_path, *base, "run.name=whole"))
    steps_per_epoch = whole["report"]["steps_per_epoch"]
    assert steps_per_epoch > 30, "step 30 must fall mid-epoch 1"
    stopped_copy(tmp_path / "whole", "resumed", keep_step=30)
    resumed = train_rank(digits_config(root, tmp_path, *base, "run.name=resumed"), resume=True)
    assert resumed["report"]["resumed_from"].endswith("step-000000030.pt"), "the truncated newer file is skipped"
    for name, w in final_weights(tmp_path / "whole").items():
        assert torch.equal(w, final_weights(tmp_path / "resumed")[name]), f"{name} differs after resume"
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "whole")  # same samples, losses, accuracies per epoch
    assert resumed["report"]["test_accuracy"] == whole["report"]["test_accuracy"]
    state = torch.load(checkpoint_files(tmp_path / "whole")[0], weights_only=True)
    assert {"model", "optimizer", "scheduler", "progress", "rng", "config", "dataset_fingerprint", "world_size", "format_version"} <= state.keys()
    assert state["progress"]["reader"] is None and state["progress"]["epoch"] == 2  # the epoch-end checkpoint


def test_resume_refuses_another_model_or_a_run_without_checkpoints(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    base = ["dist.engine=single", "train.epochs=1", "run.name=r"]
    train_rank(digits_config(root, tmp_path, *base))
    with pytest.raises(CheckpointError, match="different model"):
        train_rank(digits_config(root, tmp_path, *base, "model.channels=[8,8]"), resume=True)
    with pytest.raises(CheckpointError, match="no step-.*checkpoint"):
        train_rank(digits_config(root, tmp_path, "dist.engine=single", "run.name=never-ran"), resume=True)


@pytest.mark.dist
def test_resume_from_two_horovod_ranks_onto_one(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    # One epoch (45 steps): over more, float rounding differences between 1 and 2 ranks
    # grow chaotically past 1e-4 even without a resume (measured 5e-4 after 2 epochs).
    common = [f"data.root={root}", f"run.root={tmp_path}", *SAME_MATH,
              "train.checkpoint_every_steps=10", "train.keep_checkpoints=100"]
    run_job(launch_argv("horovodrun", 2, [*common, "dist.engine=horovod", "train.batch_size=16", "run.name=two"]))
    stopped_copy(tmp_path / "two", "one", keep_step=20)
    run_job(launch_argv("python", 1, [*common, "dist.engine=single", "train.batch_size=32", "run.name=one"], resume=True))
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report["world_size"] == 1 and report["global_steps"] == json.loads((tmp_path / "two" / "report.json").read_text())["global_steps"]
    diff = max_relative_difference(final_weights(tmp_path / "two"), final_weights(tmp_path / "one"))
    assert diff <= 1e-4, f"resumed on 1 rank, parameters differ from the 2-rank run by {diff:.2e}"
    assert [m["train_samples"] for m in metrics(tmp_path / "one")] == [m["train_samples"] for m in metrics(tmp_path / "two")]


@pytest.mark.dist
def test_resume_of_two_ranks_with_batch_norm_is_exact(digits_version, tmp_path):
    """Mid-epoch, each rank's batch-norm statistics are its own: the checkpoint keeps every
    rank's, and a resume on the same world size gives each rank back its own."""
    root = digits_version[0].parent.parent
    common = [f"data.root={root}", f"run.root={tmp_path}", "model.batch_norm=true", "model.dropout=0", "train.epochs=1",
              "train.batch_size=16", "train.checkpoint_every_steps=10", "train.keep_checkpoints=100", "dist.engine=horovod"]
    run_job(launch_argv("horovodrun", 2, [*common, "run.name=whole"]))
    stopped_copy(tmp_path / "whole", "resumed", keep_step=20)
    run_job(launch_argv("horovodrun", 2, [*common, "run.name=resumed"], resume=True))
    whole, resumed = final_weights(tmp_path / "whole"), final_weights(tmp_path / "resumed")
    assert any("running_mean" in name for name in whole)
    diff = max_relative_difference(whole, resumed)
    assert diff <= 1e-6, f"a 2-rank resume with batch norm ends {diff:.2e} away from the uninterrupted run"
