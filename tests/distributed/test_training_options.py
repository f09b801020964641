"""Training options with observable effects, in one process on the real digits version."""
import json

import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.models import build_model
from pipeline.train.checkpoint import checkpoint_files
from pipeline.train.worker import train_rank
from tests.conftest import digits_config


def test_early_stopping_stops_when_val_loss_stops_improving(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    # min_delta larger than any possible gain: only the first epoch is an improvement.
    result = train_rank(digits_config(root, tmp_path, "dist.engine=single", "run.name=es", "train.epochs=10",
                                      "train.early_stopping_patience=2", "train.early_stopping_min_delta=100",
                                      "train.keep_checkpoints=10"))
    report = result["report"]
    assert report["early_stopped"] and report["epochs"] == 3
    assert len((tmp_path / "es" / "metrics.jsonl").read_text().splitlines()) == 3
    # model.pt holds the best epoch's weights (the first: nothing later beat it by min_delta), not the last's.
    assert report["best_epoch"] == 1
    epoch_ends = {torch.load(p, weights_only=True)["progress"]["epoch"]: p for p in checkpoint_files(tmp_path / "es")}
    saved = torch.load(tmp_path / "es" / "model.pt", weights_only=True)["state_dict"]
    first, last = (torch.load(epoch_ends[e], weights_only=True)["model"] for e in (1, 3))
    assert all(torch.equal(saved[k], first[k]) for k in saved) and not all(torch.equal(saved[k], last[k]) for k in saved)


def test_gradient_clipping_bounds_every_update(digits_version, tmp_path):
    root = digits_version[0].parent.parent
    lr, clip = 0.1, 1e-3
    result = train_rank(digits_config(root, tmp_path, "dist.engine=single", "run.name=clip", "train.epochs=1",
                                      "train.optimizer=sgd", "train.momentum=0", f"train.lr={lr}", f"train.grad_clip={clip}",
                                      "train.schedule=none", "model.batch_norm=false", "model.dropout=0"))
    bundle = torch.load(tmp_path / "clip" / "model.pt", weights_only=True)
    torch.manual_seed(0)  # the trainer's initial weights (train.seed=0)
    start = build_model(ModelConfig(**bundle["model"]), bundle["schema"]).state_dict()
    drift = torch.sqrt(sum(((bundle["state_dict"][k] - start[k]) ** 2).sum() for k in start)).item()
    steps = result["report"]["global_steps"]
    # Each SGD step moves the parameters by lr x (clipped) gradient norm <= lr x clip.
    assert 0 < drift <= steps * lr * clip * (1 + 1e-4)
    assert json.loads((tmp_path / "clip" / "metrics.jsonl").read_text().splitlines()[0])["train_samples"] > 0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_non_finite_gradients_stop_the_run_naming_the_step_or_are_skipped_and_counted(digits_version, tmp_path, precision):
    """Also under fp16, where a non-finite loss (bad rows) is told apart from a gradient
    overflow at the loss scale (which the scaler alone handles)."""
    from pipeline.engines.base import RankFailure

    root = digits_version[0].parent.parent
    blow_up = ["dist.engine=single", "train.epochs=1", "train.lr=1e30", "train.warmup_epochs=0", "train.schedule=none",
               "model.batch_norm=false", f"train.precision={precision}"]  # the first step sends the weights to ~1e30: the next loss is not finite
    with pytest.raises(RankFailure, match=r"training stopped at global step \d+ \(epoch 1, batch \d+ of 45\): the gradients "
                                          r"are not finite.*train.skip_nonfinite=true"):
        train_rank(digits_config(root, tmp_path, *blow_up, "run.name=stop"))
    result = train_rank(digits_config(root, tmp_path, *blow_up, "run.name=skip", "train.skip_nonfinite=true"))
    report = result["report"]
    assert 0 < report["skipped_nonfinite_batches"] < report["global_steps"]
    weights = torch.load(tmp_path / "skip" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())  # no skipped step was applied
