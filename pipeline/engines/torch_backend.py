"""torch.distributed (DDP over Gloo on CPU, NCCL on GPU) behind the Collective interface.

Launched by torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR and MASTER_PORT. Without them this is a world of one (no process group).
"""
from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pipeline.engines.base import Collective, DisagreementError, pin_threads
from pipeline.engines.device import place

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class TorchCollective(Collective):
    """Collectives over a torch.distributed process group.

    Args:
        timeout_s: how long a collective waits for a peer before the job fails.
    """

    engine = "torch"

    def __init__(self, timeout_s: int = 300, device: str = "auto") -> None:
        self.grouped = all(v in os.environ for v in TORCHRUN_VARIABLES)
        if self.grouped:
            self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
            self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        else:
            self.local_rank, self.local_size = 0, 1
        # The GPU is bound before the process group exists: NCCL's communicator takes the
        # current device.
        self.device = place(device, self.local_rank, self.local_size)
        if self.grouped and not dist.is_initialized():
            # On a GPU the model's tensors (gradients, parameters, buffers) go over NCCL and
            # the small CPU ones (metric sums, agreements, pickled objects, barriers) over Gloo.
            backend = "cpu:gloo,cuda:nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        if self.grouped:
            self.rank, self.size = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.size = 0, 1
        self.threads = pin_threads(self.local_size)

    def broadcast_parameters(self, model) -> None:
        if self.size == 1:
            return
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)

    def wrap_model(self, model, fp16: bool = False):
        if self.size == 1:
            return model
        wrapped = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if fp16:
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            wrapped.register_comm_hook(None, default_hooks.fp16_compress_hook)
        return wrapped

    def no_sync(self, model):
        return model.no_sync() if isinstance(model, DistributedDataParallel) else super().no_sync(model)

    def allreduce_sum(self, values: torch.Tensor, name: str) -> torch.Tensor:
        out = values.clone()
        if self.size > 1:
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def average_buffers(self, model) -> None:
        if self.size == 1:
            return
        for buf in model.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(self.size)

    def broadcast_object(self, obj: Any, name: str = "object") -> Any:
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def allgather_object(self, obj: Any, name: str = "object") -> list:
        if self.size == 1:
            return [obj]
        out: list = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def agree(self, name: str, value: int) -> int:
        if self.size == 1:
            return value
        low, high = torch.tensor([value]), torch.tensor([value])
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if low.item() != high.item():
            raise DisagreementError(f"ranks disagree on {name}: this rank has {value}, others range {low.item()}..{high.item()}")
        return value

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def shutdown(self) -> None:
        if self.grouped and dist.is_initialized():
            dist.destroy_process_group()
