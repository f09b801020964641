"""Which device a rank trains on (``train.device``) and the numeric precision it computes in
(``train.precision``).

The choice is a pure function of the setting, the rank's place on its host and the GPUs
it can see (:func:`choose_device`), so it is tested as data; :func:`place` reads the
machine and binds the process to the chosen GPU before any collective runs.
"""
from __future__ import annotations

import contextlib
import os

import torch

from pipeline.config import CHOICES

# Set where a scheduler gives each rank GPUs of its own and hides the others (Slurm
# --gpus-per-task binds each task to its GPUs): the rank takes the first it sees.
PER_PROCESS_VARIABLE = "PIPELINE_GPUS_PER_PROCESS"

DEVICES = CHOICES["train.device"]
PRECISIONS = CHOICES["train.precision"]


class DeviceError(RuntimeError):
    """A device setting this machine cannot honour; the message names the fix."""


def choose_device(setting: str, local_rank: int, local_size: int, visible: int, assigned: int | None = None) -> str:
    """The device for one rank: ``cpu`` or ``cuda:<index>``.

    Args:
        setting: auto (a GPU when one is visible, else the CPU), cpu, or cuda (a GPU or an error).
        local_rank: this rank's index among the ranks on its host.
        local_size: ranks on this host.
        visible: GPUs this process sees (``torch.cuda.device_count()``).
        assigned: the GPU the scheduler gave this rank, by index among the visible ones
            (Spark's task resources; 0 where each rank sees only its own), or None.
    """
    if setting not in DEVICES:
        raise DeviceError(f"train.device={setting!r} is not one of: {', '.join(DEVICES)}")
    if setting == "cpu" or (setting == "auto" and visible == 0):
        return "cpu"
    if visible == 0:
        raise DeviceError("train.device=cuda but this process sees no CUDA device (torch.cuda.is_available() is False: "
                          "a CPU build of torch, no driver, or CUDA_VISIBLE_DEVICES empty); set train.device=auto or cpu")
    if assigned is not None:
        if not 0 <= assigned < visible:
            raise DeviceError(f"the scheduler assigned GPU {assigned} to this rank but it sees {visible} GPU(s) "
                              "(CUDA_VISIBLE_DEVICES narrower than the assignment?); check the GPU discovery script")
        return f"cuda:{assigned}"
    if local_rank >= visible or local_size > visible:
        raise DeviceError(
            f"{local_size} ranks on this host but it has {visible} GPU{'s' if visible != 1 else ''}: start at most "
            f"{visible} rank{'s' if visible != 1 else ''} per host (horovodrun -H host:{visible}, torchrun "
            f"--nproc-per-node {visible}, Spark spark.task.resource.gpu.amount=1), or set train.device=cpu")
    return f"cuda:{local_rank}"


def assigned_gpu() -> int | None:
    """The GPU a scheduler assigned to this rank: under ``horovod.spark.run`` the Spark
    task's ``gpu`` resource (``spark.task.resource.gpu.amount``), where
    ``PIPELINE_GPUS_PER_PROCESS`` is set the first visible one, else None."""
    if os.environ.get(PER_PROCESS_VARIABLE, "") not in ("", "0"):
        return 0
    if "HOROVOD_SPARK_WORK_DIR" in os.environ:  # a rank started by horovod.spark.run's task service
        from horovod.spark.task import get_available_devices

        addresses = get_available_devices()
        if addresses:
            return int(addresses[0])
    return None


def place(setting: str, local_rank: int, local_size: int) -> torch.device:
    """Choose this rank's device on this machine and make it the current CUDA device
    (NCCL and every ``.cuda()`` without an index then use it)."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assigned = assigned_gpu() if visible and setting != "cpu" else None
    device = torch.device(choose_device(setting, local_rank, local_size, visible, assigned))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot compute in, naming the fix."""
    if precision not in PRECISIONS:
        raise DeviceError(f"train.precision={precision!r} is not one of: {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"train.precision=bf16 but {torch.cuda.get_device_name(device)} has no bfloat16 support "
                          "(it needs compute capability 8.0, Ampere, or newer); use train.precision=fp16")


def autocast(precision: str, device: torch.device):
    """The forward pass's context: nothing for fp32 (the computation is exactly that of a
    plain model), ``torch.autocast`` in bfloat16 or float16 otherwise."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (its small exponent range underflows unscaled gradients);
    None for fp32 and bf16, which have float32's exponent range."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch on ``device``: an asynchronous copy from pinned memory to a GPU; on the CPU
    the very same tensors."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def describe_cuda() -> dict:
    """What ``doctor`` and report.json say about CUDA on this machine."""
    info = {"torch_cuda": torch.version.cuda, "available": torch.cuda.is_available(), "devices": []}
    if info["available"]:
        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        try:
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001 -- a build without NCCL
            info["nccl"] = None
    return info
