"""Batch norm whose statistics are those of the global batch (``model.sync_batch_norm``).

torch's and Horovod's SyncBatchNorm run on CUDA only; this one uses the engine's own
all-reduce (float64 sums), so it works on CPU and GPU, under Horovod, DDP or alone. With it
N ranks x batch b normalise exactly as 1 rank x batch N*b, and every rank's running
statistics are the same. The modules keep BatchNorm's parameter and buffer names, so a
model trained with them loads into the plain model (scoring, export).
"""
from __future__ import annotations

import torch
from torch.nn.modules.batchnorm import _BatchNorm


class _GlobalBatchNorm(torch.autograd.Function):
    """Forward and backward of batch norm over every rank's rows (the standard SyncBN
    formulation: per-channel sums all-reduced in the forward pass, the two gradient sums in
    the backward pass; parameter gradients stay local, the optimizer averages them)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, collective, name):
        dims = [0, *range(2, x.dim())]
        channels = x.size(1)
        wide = x.double()
        local = torch.cat([wide.sum(dims), (wide * wide).sum(dims), wide.new_tensor([x.numel() // channels])])
        total = collective.allreduce_sum(local, name=f"{name}.forward")  # collective
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels:2 * channels] / n - mean * mean).clamp_min(0)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                unbiased = var * n / (n - 1).clamp_min(1)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        invstd = torch.rsqrt(var + eps).to(x.dtype).view(shape)
        xhat = (x - mean.to(x.dtype).view(shape)) * invstd
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.collective, ctx.name, ctx.n, ctx.dims = collective, name, n, dims
        out = xhat if weight is None else xhat * weight.view(shape)
        return out if bias is None else out + bias.view(shape)

    @staticmethod
    def backward(ctx, dy):
        xhat, invstd, weight = ctx.saved_tensors
        dims, channels = ctx.dims, dy.size(1)
        shape = [1, channels] + [1] * (dy.dim() - 2)
        sum_dy = dy.sum(dims)
        sum_dy_xhat = (dy * xhat).sum(dims)
        total = ctx.collective.allreduce_sum(torch.cat([sum_dy, sum_dy_xhat]).double(), name=f"{ctx.name}.backward")  # collective
        mean_dy = (total[:channels] / ctx.n).to(dy.dtype).view(shape)
        mean_dy_xhat = (total[channels:] / ctx.n).to(dy.dtype).view(shape)
        scale = invstd if weight is None else invstd * weight.view(shape)
        dx = scale * (dy - mean_dy - xhat * mean_dy_xhat)
        grad_weight = sum_dy_xhat if weight is not None else None
        grad_bias = sum_dy if weight is not None else None
        return dx, grad_weight, grad_bias, None, None, None, None, None, None


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over the global batch of ``collective``'s ranks (any 2D+ input)."""

    def __init__(self, num_features: int, collective, name: str, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.collective, self.sync_name = collective, name

    def _check_input_dim(self, input) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.collective.size == 1:
            return super().forward(input)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
        momentum = 0.1 if self.momentum is None else self.momentum
        return _GlobalBatchNorm.apply(input, self.weight, self.bias, self.running_mean if self.track_running_stats else None,
                                      self.running_var if self.track_running_stats else None, self.eps, momentum,
                                      self.collective, self.sync_name)


def convert(model: torch.nn.Module, collective) -> torch.nn.Module:
    """``model`` with every BatchNorm replaced by :class:`SyncBatchNorm` (weights and
    statistics carried over)."""
    count = 0

    def swap(module: torch.nn.Module) -> torch.nn.Module:
        nonlocal count
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            synced = SyncBatchNorm(module.num_features, collective, f"sync_bn.{count}", module.eps, module.momentum,
                                   module.affine, module.track_running_stats)
            count += 1
            synced.load_state_dict(module.state_dict())
            synced.train(module.training)
            return synced
        for child_name, child in module.named_children():
            setattr(module, child_name, swap(child))
        return module

    return swap(model)
