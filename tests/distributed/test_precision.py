"""Mixed precision under real ranks: bf16 (autocast, also on CPU) trains the shipped digits
job to the accuracy fp32 reaches, under 2 Horovod ranks and under DDP; fp16 with its loss
scaler goes through Horovod's synchronize / unscale / skip_synchronize order."""
import json

import pytest

from tests.distributed.launch import launch_argv, run_job

pytestmark = pytest.mark.dist


@pytest.mark.parametrize("launcher,engine,precision", [
    ("horovodrun", "horovod", "bf16"),
    ("torchrun", "torch", "bf16"),
    ("horovodrun", "horovod", "fp16"),
])
def test_mixed_precision_trains_digits(digits_version, tmp_path, launcher, engine, precision):
    version_dir, _ = digits_version
    overrides = [f"data.root={version_dir.parent.parent}", f"run.root={tmp_path}", f"dist.engine={engine}",
                 f"train.precision={precision}", "run.name=run"]
    run_job(launch_argv(launcher, 2, overrides))  # the shipped settings otherwise (conf/digits_cnn.yaml)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert (report["engine"], report["world_size"], report["precision"], report["device"]) == (engine, 2, precision, "cpu")
    assert report["compute_dtype"] == {"bf16": "bfloat16", "fp16": "float16"}[precision]  # autocast really ran
    assert report["test_accuracy"] >= 0.97, report["test_accuracy"]
    if precision == "fp16":  # the scaler skipped a few steps at most, the rest trained
        assert report["fp16_overflow_steps"] < report["global_steps"] // 10
