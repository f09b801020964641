"""The device choice as data, the precision contexts, the loss-scaled step, and the uint8
input standardised by the model exactly as the reader used to."""
import pytest
import torch

from pipeline.config import ConfigError, ModelConfig, load_config
from pipeline.engines.base import Collective
from pipeline.engines.device import DeviceError, autocast, choose_device, grad_scaler, place
from pipeline.models import build_model
from tests.conftest import DIGITS_CONF

NO_GPU = not torch.cuda.is_available()

# (setting, local_rank, local_size, visible GPUs, GPU the scheduler assigned) -> device
CHOICES = [
    (("auto", 0, 1, 0, None), "cpu"),
    (("auto", 1, 2, 0, None), "cpu"),
    (("cpu", 1, 2, 8, None), "cpu"),
    (("cpu", 1, 2, 8, 5), "cpu"),
    (("auto", 0, 1, 1, None), "cuda:0"),
    (("auto", 3, 4, 4, None), "cuda:3"),
    (("cuda", 1, 2, 8, None), "cuda:1"),  # fewer ranks than GPUs: the first local_size
    (("auto", 1, 2, 1, 0), "cuda:0"),  # each rank sees only its own GPU (Slurm --gpus-per-task)
    (("cuda", 0, 4, 8, 6), "cuda:6"),  # Spark's task resource: the address it assigned
]


@pytest.mark.parametrize("args,expected", CHOICES)
def test_device_choice(args, expected):
    assert choose_device(*args) == expected


def test_more_ranks_than_gpus_is_an_error_naming_the_fix():
    with pytest.raises(DeviceError, match=r"3 ranks on this host but it has 2 GPUs: start at most 2 ranks per host "
                                          r"\(horovodrun -H host:2, torchrun --nproc-per-node 2"):
        choose_device("auto", 0, 3, 2)
    with pytest.raises(DeviceError, match="set train.device=cpu"):
        choose_device("cuda", 2, 3, 2)


def test_cuda_without_a_gpu_is_an_error_and_auto_falls_back():
    with pytest.raises(DeviceError, match="train.device=cuda but this process sees no CUDA device"):
        choose_device("cuda", 0, 1, 0)
    with pytest.raises(DeviceError, match="not one of: auto, cpu, cuda"):
        choose_device("gpu", 0, 1, 1)
    with pytest.raises(DeviceError, match="assigned GPU 3 to this rank but it sees 2"):
        choose_device("auto", 0, 1, 2, 3)


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU fallback")
def test_place_on_a_machine_without_cuda():
    assert place("auto", 0, 1) == torch.device("cpu")
    assert Collective("auto").device == torch.device("cpu")
    with pytest.raises(DeviceError):
        place("cuda", 0, 1)


def test_config_names_the_choices():
    cfg = load_config(DIGITS_CONF, ["train.device=cpu", "train.precision=bf16"])
    assert (cfg.train.device, cfg.train.precision) == ("cpu", "bf16")
    assert (load_config(DIGITS_CONF).train.device, load_config(DIGITS_CONF).train.precision) == ("auto", "fp32")
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(DIGITS_CONF, ["train.precision=fp8"])
    with pytest.raises(ConfigError, match="train.device"):
        load_config(DIGITS_CONF, ["train.device=gpu"])


def test_fp32_runs_without_autocast_and_bf16_computes_in_bfloat16():
    cpu, layer, x = torch.device("cpu"), torch.nn.Linear(4, 3), torch.randn(2, 4)
    with autocast("fp32", cpu):
        assert layer(x).dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    with autocast("bf16", cpu):
        assert layer(x).dtype == torch.bfloat16
    assert grad_scaler("fp32", cpu) is None and grad_scaler("bf16", cpu) is None
    assert isinstance(grad_scaler("fp16", cpu), torch.amp.GradScaler)


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01)
    return model, optimizer


def test_loss_scaled_step_equals_the_plain_step_and_skips_an_overflow():
    """fp16's scaler multiplies the loss by a power of two and divides the gradients by it:
    on finite gradients the step is exactly the plain one; an inf gradient skips the step
    and halves the scale (the step reports not applied)."""
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    plain, plain_opt = _model_and_optimizer()
    torch.nn.functional.cross_entropy(plain(x), y).backward()
    assert Collective("cpu").step(plain_opt) is True

    scaled, scaled_opt = _model_and_optimizer()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler.scale(torch.nn.functional.cross_entropy(scaled(x), y)).backward()
    checked = []
    assert Collective("cpu").step(scaled_opt, lambda: checked.append(scaled.weight.grad.clone()) or True, scaler) is True
    assert torch.equal(checked[0], plain.weight.grad)  # before_step saw the unscaled gradients
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), scaled.parameters()))

    before = [p.detach().clone() for p in scaled.parameters()]
    scaled_opt.zero_grad()
    scaler.scale(torch.nn.functional.cross_entropy(scaled(x), y) * float("inf")).backward()
    assert Collective("cpu").step(scaled_opt, None, scaler) is False
    assert all(torch.equal(a, b) for a, b in zip(before, scaled.parameters()))
    assert scaler.get_scale() == 2.0**15


def test_the_model_standardises_uint8_images_exactly_as_the_reader_did():
    """The arithmetic that moved from the reader to the model's first operation is the
    same, so fp32 training is bit-for-bit what it was."""
    schema = {"features": {"image": {"kind": "tensor", "dtype": "uint8", "shape": [3, 5, 5]}}, "label": {"num_classes": 4}}
    featurizer = {"image": {"type": "standardize", "axis": "channel", "mean": [10.5, 3.25, 7.0], "std": [4.0, 2.5, 0.3],
                            "applied_in": "model"}}
    torch.manual_seed(0)
    model = build_model(ModelConfig(type="cnn", channels=[4]), schema, featurizer).eval()
    raw = torch.randint(0, 256, (6, 3, 5, 5), dtype=torch.uint8)
    mean, std = torch.tensor([10.5, 3.25, 7.0]).view(-1, 1, 1), torch.tensor([4.0, 2.5, 0.3]).view(-1, 1, 1)
    as_the_reader_did = raw.float().sub_(mean).div_(std)  # the reader's former collate
    with torch.no_grad():
        assert torch.equal(model({"image": raw}), model.network(as_the_reader_did))
    # ...also for datasets prepared before (applied_in: reader), and never in state_dict.
    legacy = build_model(ModelConfig(type="cnn", channels=[4]), schema, {"image": {**featurizer["image"], "applied_in": "reader"}})
    plain = build_model(ModelConfig(type="cnn", channels=[4]), schema)
    assert legacy.standardize == model.standardize and set(model.state_dict()) == set(legacy.state_dict()) == set(plain.state_dict())


def test_a_rank_started_by_spark_takes_the_gpu_its_task_was_given(monkeypatch):
    """Under horovod.spark.run the Spark task's GPU addresses (spark.task.resource.gpu.amount)
    reach the rank through Horovod's task info; the rank takes the first."""
    pytest.importorskip("horovod.spark")
    from horovod.spark.task import task_info
    from pyspark.resource import ResourceInformation

    from pipeline.engines.device import PER_PROCESS_VARIABLE, assigned_gpu

    monkeypatch.delenv(PER_PROCESS_VARIABLE, raising=False)
    monkeypatch.delenv("HOROVOD_SPARK_WORK_DIR", raising=False)
    assert assigned_gpu() is None  # no scheduler assignment: cuda:<local rank>
    monkeypatch.setenv("HOROVOD_SPARK_WORK_DIR", "/tmp")
    monkeypatch.setattr(task_info._info, "resources", {"gpu": ResourceInformation("gpu", ["3", "4"])})
    assert assigned_gpu() == 3 and choose_device("auto", 0, 2, 8, assigned_gpu()) == "cuda:3"
    monkeypatch.setattr(task_info._info, "resources", {})
    assert assigned_gpu() is None
    monkeypatch.setenv(PER_PROCESS_VARIABLE, "1")  # Slurm --gpus-per-task: each rank sees only its own
    assert assigned_gpu() == 0
