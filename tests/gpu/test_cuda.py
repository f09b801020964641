"""The GPU path on a real GPU: device binding, pinned uint8 batches, the model's on-device
standardisation, and the trainer in every precision. Skipped without CUDA (CI has none);
run on a GPU machine with ``PIPELINE_GPU_DIGITS=<data root with digits/ prepared> pytest
tests/gpu`` (bench/gpu.py's results name the machine it last ran on)."""
import json
import os
from pathlib import Path

import pytest
import torch

from pipeline.config import load_config
from pipeline.data import ShardReader
from pipeline.engines import make_collective
from pipeline.engines.device import DeviceError, place
from pipeline.models import build_model
from pipeline.train.trainer import Trainer
from tests.conftest import DIGITS_CONF

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DIGITS = os.environ.get("PIPELINE_GPU_DIGITS")


def test_place_binds_this_ranks_gpu_and_refuses_more_ranks_than_gpus():
    visible = torch.cuda.device_count()
    assert place("auto", visible - 1, visible) == torch.device(f"cuda:{visible - 1}") and torch.cuda.current_device() == visible - 1
    assert place("cuda", 0, 1) == torch.device("cuda:0") and torch.cuda.current_device() == 0
    with pytest.raises(DeviceError, match=f"{visible + 1} ranks on this host but it has {visible} GPU"):
        place("auto", 0, visible + 1)
    assert place("cpu", 0, 1) == torch.device("cpu")


def test_reader_hands_out_pinned_uint8_and_the_model_standardises_on_the_gpu(tmp_path):
    from bench.gpu import write_image_dataset

    version = write_image_dataset(tmp_path, "images", 600, size=16, rows_per_shard=256, row_group_rows=64)
    reader = ShardReader(str(version), "train", 0, 1, 32, pin_memory=True)
    batch = next(iter(reader))
    assert batch["image"].dtype == torch.uint8 and all(t.is_pinned() for t in batch.values())
    cfg = load_config(DIGITS_CONF, ["model.channels=[8]"])
    torch.manual_seed(0)
    model = build_model(cfg.model, reader.manifest["schema"], reader.manifest["featurizer"]).eval()
    with torch.no_grad():
        on_cpu = model(batch)
        model.cuda()
        on_gpu = model({k: v.cuda(non_blocking=True) for k, v in batch.items()})
    assert on_gpu.device.type == "cuda" and torch.allclose(on_cpu, on_gpu.cpu(), atol=1e-4)


@pytest.mark.skipif(DIGITS is None, reason="PIPELINE_GPU_DIGITS (a data root with digits prepared) not set")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_trainer_on_the_gpu(tmp_path, precision):
    cfg = load_config(DIGITS_CONF, [f"data.root={DIGITS}", f"run.root={tmp_path}", "dist.engine=single", "train.device=cuda",
                                    f"train.precision={precision}", "run.name=run"])
    collective = make_collective(cfg.dist, cfg.train.device)
    trainer = Trainer(cfg, collective)
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    report = trainer.fit().report
    assert report["device"] == "cuda" and report["precision"] == precision
    assert report["compute_dtype"] == {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
    assert report["test_accuracy"] >= 0.97, report["test_accuracy"]
    # Outputs load on a machine without a GPU: the bundle and checkpoints hold CPU tensors or map to it.
    bundle = torch.load(Path(tmp_path) / "run" / "model.pt", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in bundle["state_dict"].values())
    checkpoint = sorted((Path(tmp_path) / "run" / "checkpoints").glob("*.pt"))[-1]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["precision"] == precision and ("scaler" in state) == (precision == "fp16") and len(state["cuda_rng"]) == 1
    assert json.loads((Path(tmp_path) / "run" / "report.json").read_text())["device_name"] == torch.cuda.get_device_name(0)
