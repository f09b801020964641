import math
from pathlib import Path

import pytest
import torch

from pipeline.config import ConfigError, TrainConfig, load_config
from pipeline.train import checkpoint as ckpt
from pipeline.train.schedule import learning_rate


def test_warmup_ramps_from_lr_to_the_scaled_lr_then_cosine_decays():
    cfg = TrainConfig(lr=0.1, epochs=10, warmup_epochs=1.0, schedule="none")
    assert learning_rate(cfg, 4, 0.0) == pytest.approx(0.1)
    assert learning_rate(cfg, 4, 0.5) == pytest.approx(0.25)
    assert learning_rate(cfg, 4, 1.0) == learning_rate(cfg, 4, 7.0) == pytest.approx(0.4)
    assert learning_rate(cfg, 1, 0.0) == pytest.approx(0.1)  # nothing to warm up to
    cosine = TrainConfig(lr=0.1, epochs=10, scale_lr=False, schedule="cosine")
    assert learning_rate(cosine, 2, 0) == pytest.approx(0.1)
    assert learning_rate(cosine, 2, 5) == pytest.approx(0.05)
    assert learning_rate(cosine, 2, 10) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(lr=0.1, epochs=30, scale_lr=False, schedule="step", step_epochs=10, gamma=0.5)
    assert [learning_rate(step, 1, p) for p in (0, 9.9, 10, 25)] == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_the_rate_follows_the_global_batch_whatever_makes_it_up():
    def lr(world, batch, accumulate=1, progress=3.0):
        cfg = TrainConfig(lr=0.1, epochs=10, schedule="none", batch_size=batch, accumulate_steps=accumulate, reference_batch=32)
        return learning_rate(cfg, world, progress)

    # 64 rows per optimizer step, however they are made up: twice the reference's rate
    assert lr(2, 32) == lr(1, 64) == lr(1, 32, accumulate=2) == lr(4, 8, accumulate=2) == pytest.approx(0.2)
    assert lr(1, 32) == pytest.approx(0.1)  # the reference batch itself
    assert lr(2, 32, progress=0.0) == pytest.approx(0.1)  # warm-up starts from lr
    # A resume from 2 ranks onto 1 with the same per-rank batch halves the global batch and the rate...
    assert lr(1, 32) == lr(2, 32) / 2
    # ...an elastic shrink from 3 ranks to 2 scales it by 2/3; doubling the batch keeps it.
    assert lr(2, 16) == pytest.approx(lr(3, 16) * 2 / 3) and lr(1, 64) == lr(2, 32)
    # Unset, the reference is one rank's batch x accumulation (as the first run saw it).
    assert learning_rate(TrainConfig(lr=0.1, schedule="none", batch_size=16, accumulate_steps=2), 2, 5.0) == pytest.approx(0.2)


def test_new_training_keys_are_validated():
    with pytest.raises(ConfigError, match="train.schedule='linear' is not one of"):
        load_config(None, ["train.schedule=linear"])
    with pytest.raises(ConfigError, match="train.accumulate_steps must be > 0"):
        load_config(None, ["train.accumulate_steps=0"])
    with pytest.raises(ConfigError, match="dist.elastic=true needs dist.engine=horovod"):
        load_config(None, ["dist.elastic=true", "dist.engine=torch"])
    with pytest.raises(ConfigError, match="data.reader.layout"):
        load_config(None, ["data.reader.layout=strided"])


def test_checkpoints_are_pruned_newest_first_and_refuse_another_model(tmp_path):
    model = torch.nn.Linear(3, 2)
    for step in (5, 10, 15):
        ckpt.save_checkpoint(tmp_path, {"global_step": step, "model": model.state_dict(), "dataset_fingerprint": "f" * 64,
                                        "model_signature": ckpt.model_signature(model)}, keep=2)
    assert [Path(p).name for p in ckpt.checkpoint_files(tmp_path)] == ["step-000000015.pt", "step-000000010.pt"]
    path, state, unreadable = ckpt.load_latest(tmp_path)
    assert unreadable == []
    assert state["global_step"] == 15 and state["format_version"] == ckpt.FORMAT_VERSION
    ckpt.check_compatible(path, state, "f" * 64, model)
    with pytest.raises(ckpt.CheckpointError, match=r"different model \(bias: \[2\] vs \[4\], weight: \[2, 3\] vs \[4, 3\]"):
        ckpt.check_compatible(path, state, "f" * 64, torch.nn.Linear(3, 4))
    with pytest.raises(ckpt.CheckpointError, match="trained on dataset ffffffffffff, this run reads aaaaaaaaaaaa"):
        ckpt.check_compatible(path, state, "a" * 64, model)
    Path(path).write_bytes(b"cut short")
    _, state, unreadable = ckpt.load_latest(tmp_path)
    assert state["global_step"] == 10 and unreadable == [path]  # reported, and set aside:
    assert (tmp_path / "checkpoints" / "step-000000015.pt.unreadable").is_file()
    # so pruning after the next save keeps the checkpoint the run resumed from
    ckpt.save_checkpoint(tmp_path, {"global_step": 20, "model": model.state_dict(), "dataset_fingerprint": "f" * 64,
                                    "model_signature": ckpt.model_signature(model)}, keep=2)
    assert [Path(p).name for p in ckpt.checkpoint_files(tmp_path)] == ["step-000000020.pt", "step-000000010.pt"]
    assert not math.isnan(learning_rate(TrainConfig(), 1, 0.5))


def test_a_run_directory_is_claimed_by_one_run_only(tmp_path):
    from pipeline.config import load_config
    from pipeline.train import run_dir as rd

    cfg = load_config(None, [f"run.root={tmp_path}"])
    assert rd.default_run_name("x") != rd.default_run_name("x")  # two runs in the same second
    first = rd.create_run_dir(cfg, "r")
    assert Path(first, "config.yaml").is_file()
    with pytest.raises(rd.RunDirError, match="belongs to another run; choose another run.name, or add --resume"):
        rd.create_run_dir(cfg, "r")


def test_resume_says_which_changed_setting_applies():
    from pipeline.config import TrainConfig

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)
    saved = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 32}
    said = ckpt.apply_changed_settings("step-5.pt", saved, TrainConfig(optimizer="sgd", lr=0.1, momentum=0.5, weight_decay=0.01,
                                                                       batch_size=32), optimizer)
    assert any("train.momentum was 0.9 in step-5.pt, now 0.5: the new value applies from here" in s for s in said)
    assert optimizer.param_groups[0]["momentum"] == 0.5 and optimizer.param_groups[0]["weight_decay"] == 0.01
    with pytest.raises(ckpt.CheckpointError, match="train.optimizer=sgd, this run has adamw: its state cannot carry over"):
        ckpt.apply_changed_settings("step-5.pt", saved, TrainConfig(optimizer="adamw"), optimizer)
