"""The all-reduce really averages gradients: 1 rank x batch 2b and 2 ranks x batch b (Horovod
and DDP) end an epoch of the shipped optimizer (AdamW with weight decay) with the same
parameters; so do 2 ranks x batch b/2 accumulating 2 batches per optimizer step, and, with
batch norm on, 2 ranks with synchronized batch norm."""
import json

import pytest

from tests.distributed.launch import final_weights, launch_argv, max_relative_difference, run_job

pytestmark = pytest.mark.dist

# The shipped optimizer (AdamW, from conf/digits_cnn.yaml) with weight decay; no batch norm
# (its statistics are per rank) and no dropout; the same global batch, so the same rate under
# the global-batch rule; interleaved layout so global batch k holds the same rows for any W.
SAME_MATH = [
    "model.batch_norm=false", "model.dropout=0", "train.weight_decay=0.01", "train.reference_batch=32", "train.epochs=1",
    "data.reader.layout=interleaved",
]


def test_two_ranks_of_batch_b_match_one_rank_of_batch_2b(digits_version, tmp_path):
    version_dir, _ = digits_version
    common = [f"data.root={version_dir.parent.parent}", f"run.root={tmp_path}", *SAME_MATH]
    runs = {
        "single": ("python", 1, ["dist.engine=single", "train.batch_size=32"]),
        "horovod": ("horovodrun", 2, ["dist.engine=horovod", "train.batch_size=16"]),
        "torch": ("torchrun", 2, ["dist.engine=torch", "train.batch_size=16"]),
        "horovod_accumulate": ("horovodrun", 2, ["dist.engine=horovod", "train.batch_size=8", "train.accumulate_steps=2"]),
        "torch_accumulate": ("torchrun", 2, ["dist.engine=torch", "train.batch_size=8", "train.accumulate_steps=2"]),
        # With batch norm: statistics over the global batch make 2 x 16 normalise as 1 x 32.
        "single_bn": ("python", 1, ["dist.engine=single", "train.batch_size=32", "model.batch_norm=true"]),
        "horovod_sync_bn": ("horovodrun", 2, ["dist.engine=horovod", "train.batch_size=16", "model.batch_norm=true",
                                             "model.sync_batch_norm=true"]),
        "torch_sync_bn": ("torchrun", 2, ["dist.engine=torch", "train.batch_size=16", "model.batch_norm=true",
                                         "model.sync_batch_norm=true"]),
    }
    for name, (launcher, np, extra) in runs.items():
        run_job(launch_argv(launcher, np, [*common, *extra, f"run.name={name}"]))
    reports = {name: json.loads((tmp_path / name / "report.json").read_text()) for name in runs}
    assert {r["global_steps"] for r in reports.values()} == {reports["single"]["steps_per_epoch"]} and reports["single"]["global_steps"] > 20
    assert (reports["horovod"]["engine"], reports["horovod"]["world_size"]) == ("horovod", 2)
    assert (reports["torch"]["engine"], reports["torch"]["world_size"]) == ("torch", 2)
    single = final_weights(tmp_path / "single")
    for name in ("horovod", "torch", "horovod_accumulate", "torch_accumulate"):
        diff = max_relative_difference(single, final_weights(tmp_path / name))
        assert diff <= 1e-5, f"{name}: parameters differ from the 1-rank run by {diff:.2e}"
    single_bn = final_weights(tmp_path / "single_bn")
    for name in ("horovod_sync_bn", "torch_sync_bn"):  # running statistics included
        diff = max_relative_difference(single_bn, final_weights(tmp_path / name))
        assert diff <= 1e-5, f"{name}: parameters and statistics differ from the 1-rank run by {diff:.2e}"
    # ...and training really moved them (a no-op would also "match").
    assert reports["single"]["val_accuracy"] > 0.3  # chance is 0.1
