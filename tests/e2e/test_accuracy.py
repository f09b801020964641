"""Accuracy on the bundled real datasets, trained by 2 Horovod ranks (small epoch counts,
so CI can afford them; docs/benchmarks.md has the full-length results)."""
import json

import pytest

from pipeline.config import load_config
from pipeline.prep import prepare
from tests.conftest import REPO
from tests.distributed.launch import launch_argv, run_job

pytestmark = [pytest.mark.e2e, pytest.mark.dist, pytest.mark.spark]

CASES = {
    # experiment: (epochs, minimum test accuracy the issue asks for)
    "digits_cnn": (15, 0.97),
    "gunpoint_cnn": (60, 0.93),
    "vowels_rnn": (15, 0.93),
    "vowels_cnn": (15, 0.93),  # the masked 1-D CNN on variable-length series
}


@pytest.mark.parametrize("experiment", sorted(CASES))
def test_two_ranks_reach_the_accuracy_floor(experiment, spark, tmp_path):
    epochs, floor = CASES[experiment]
    config = REPO / "conf" / f"{experiment}.yaml"
    source = load_config(config).data.source.path
    overrides = [f"data.root={tmp_path / 'data'}", f"data.source.path={REPO / source}"]
    prepare(load_config(config, overrides), spark)
    run_job(launch_argv("horovodrun", 2, [*overrides, f"run.root={tmp_path}", "run.name=run", f"train.epochs={epochs}"], config=config))
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["world_size"] == 2 and report["epochs"] == epochs
    print(f"{experiment}: test accuracy {report['test_accuracy']:.4f} on {report['test_samples']} rows")
    assert report["test_accuracy"] >= floor, report
