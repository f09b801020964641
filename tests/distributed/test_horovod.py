"""Two real Horovod processes over Gloo on 127.0.0.1."""
import json
import sys

import pytest
import torch

from pipeline.engines import available_cores
from pipeline.launch.horovod import horovodrun_argv
from tests.conftest import DIGITS_CONF, REPO
from tests.distributed.launch import HOROVODRUN, run_job

pytestmark = pytest.mark.dist


def run_ranks(command: list[str]) -> None:
    run_job(horovodrun_argv(2, command, hosts="127.0.0.1:2", network_interface="lo", horovodrun=HOROVODRUN))


def test_two_ranks_end_with_identical_parameters_and_summed_metrics(digits_version, tmp_path):
    version_dir, manifest = digits_version
    overrides = [
        f"data.root={version_dir.parent.parent}", f"run.root={tmp_path / 'runs'}", "run.name=dist",
        "train.epochs=2", "train.batch_size=16",
    ]
    run_ranks([sys.executable, str(REPO / "tests/distributed/hvd_worker.py"), str(tmp_path), "--config", str(DIGITS_CONF), *overrides])
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (r0["size"], r1["size"]) == (2, 2) and {r0["rank"], r1["rank"]} == {0, 1}
    assert r0["threads"] == r1["threads"] == max(1, available_cores() // 2), "threads pinned per local rank"
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), f"parameter {name} differs between ranks"
    for name, b in r0["buffers"].items():
        if b.is_floating_point():
            assert torch.allclose(b, r1["buffers"][name]), f"buffer {name} differs between ranks"
    by_hand = r0["local"] + r1["local"]
    assert torch.equal(r0["reduced"], by_hand) and torch.equal(r1["reduced"], by_hand)
    assert by_hand[2].item() == manifest["splits"]["val"]["rows"], "eval shares cover the split once"
    # The trainer's own global validation accuracy (last epoch) equals the by-hand sum.
    metrics = [json.loads(line) for line in (tmp_path / "runs" / "dist" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    assert metrics[-1]["val_accuracy"] == pytest.approx(by_hand[1].item() / by_hand[2].item(), abs=1e-12)
    assert metrics[-1]["val_samples"] == by_hand[2].item()
    assert r0["report"]["world_size"] == 2 and r0["report"]["engine"] == "horovod"
    assert metrics[-1]["train_samples"] == 2 * r0["report"]["steps_per_epoch"] * 16
