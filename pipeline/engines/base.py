"""The one collective interface the trainer talks to, and its single-process version."""
from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable

import torch

from pipeline.engines.device import place

def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by its cgroup's CPU quota
    (Kubernetes and YARN limit containers by quota, which the affinity mask does not show)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.floor(quota))) if quota is not None else cores


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """CPUs this process's cgroup may use (quota / period), or None when unlimited.

    cgroup v2: ``cpu.max`` ("max 100000" or "200000 100000") in the process's own cgroup
    directory; cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: unlimited).
    """
    try:
        lines = open(proc_cgroup).read().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":  # v2 unified hierarchy
            for folder in _ancestors(os.path.join(root, path.lstrip("/")), root):
                try:
                    quota, period = open(os.path.join(folder, "cpu.max")).read().split()
                except (OSError, ValueError):
                    continue
                return None if quota == "max" else int(quota) / int(period)
        elif "cpu" in controllers.split(","):
            for base in (os.path.join(root, controllers), os.path.join(root, "cpu")):
                for folder in _ancestors(os.path.join(base, path.lstrip("/")), base):
                    try:
                        quota = int(open(os.path.join(folder, "cpu.cfs_quota_us")).read())
                        period = int(open(os.path.join(folder, "cpu.cfs_period_us")).read())
                    except (OSError, ValueError):
                        continue
                    return None if quota <= 0 else quota / period
    return None


def _ancestors(folder: str, top: str):
    """``folder`` then its parents up to ``top`` (a container sees its own cgroup mounted
    at the root, so the path /proc names may not exist below it)."""
    folder, top = os.path.normpath(folder), os.path.normpath(top)
    while folder.startswith(top):
        yield folder
        if folder == top:
            return
        folder = os.path.dirname(folder)


THREADS_VARIABLE = "PIPELINE_THREADS_PER_RANK"


def pin_threads(local_size: int) -> int:
    """Give each local rank an equal share of the cores (at least one).

    Ranks that each keep torch's default (all cores) oversubscribe the machine: measured
    ~20x slower for 2 ranks on 2 cores. ``PIPELINE_THREADS_PER_RANK`` overrides the share
    where the launcher knows better than the engine (local elastic mode names this machine
    twice, so Horovod reports one rank per "host").
    """
    override = os.environ.get(THREADS_VARIABLE)
    threads = int(override) if override else max(1, available_cores() // max(1, local_size))
    torch.set_num_threads(threads)
    return threads


class Collective:
    """Rank identity plus the collectives training needs. Rank 0 is the root everywhere.

    The single-process implementation below is also the base: a world of one, where
    every collective is the identity.
    """

    engine = "single"
    device = torch.device("cpu")  # where this rank's model and batches live (``train.device``)

    def __init__(self, device: str = "auto") -> None:
        self.rank, self.size, self.local_rank, self.local_size = 0, 1, 0, 1
        self.threads = pin_threads(self.local_size)
        self.device = place(device, self.local_rank, self.local_size)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def broadcast_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, with_optimizer: bool) -> None:
        """Make every rank start from rank 0's parameters and buffers, and its optimizer
        state when ``with_optimizer`` (a resume: a fresh optimizer has none to send).

        The optimizer state goes whole, as an object, and is loaded on the other ranks.
        Not ``hvd.broadcast_optimizer_state``: that first runs a zero-gradient step on every
        rank whose optimizer has no state yet (for AdamW a counted step and weight decay
        on weights already broadcast, so the ranks would part ways).
        """
        self.broadcast_parameters(model)  # collective
        if with_optimizer:
            # Pickled as CPU tensors (a GPU tensor would unpickle onto the root's device
            # index on every rank); load_state_dict moves them beside the parameters.
            state = self.broadcast_object(to_cpu(optimizer.state_dict()) if self.is_root else None, "optimizer_state")  # collective
            if not self.is_root:
                optimizer.load_state_dict(state)

    def broadcast_parameters(self, model: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank, in place."""

    def wrap_model(self, model: torch.nn.Module, fp16: bool = False) -> torch.nn.Module:
        """The module to call in training (DDP wraps it; Horovod and single use it as is)."""
        return model

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, fp16: bool = False,
                       accumulate_steps: int = 1) -> torch.optim.Optimizer:
        """Return an optimizer whose step applies gradients averaged over all ranks."""
        return optimizer

    def no_sync(self, model: torch.nn.Module):
        """Context for a backward pass whose gradients are only accumulated (not all-reduced)."""
        return contextlib.nullcontext()

    def step(self, optimizer: torch.optim.Optimizer, before_step: Callable[[], bool] | None = None,
             scaler: torch.amp.GradScaler | None = None) -> bool:
        """Average gradients over ranks (collective), run ``before_step`` on the averaged
        gradients (e.g. clipping, a finiteness check), then apply them unless it returned
        False. Returns whether the step was applied (the same on every rank: every rank
        sees the same averaged gradients).

        With an fp16 loss ``scaler`` the gradients are unscaled before ``before_step``
        sees them, and the scaler steps and updates its scale (a step it skips for
        overflow counts as not applied).
        """
        return _apply(optimizer, before_step, scaler)

    def allgather_object(self, obj: Any, name: str = "object") -> list:
        """Every rank's ``obj``, in rank order, on every rank; ``name`` tags the collective."""
        return [obj]

    def allreduce_sum(self, values: torch.Tensor, name: str) -> torch.Tensor:
        """Element-wise sum of ``values`` over ranks (float64 in, float64 out).

        ``name`` names the collective, not the call: reuse it for the same collective at
        every step (Horovod negotiates a name it has not seen in full, a cached one in a
        bit; measured on its timeline: median 151 us vs 12 us), and give collectives
        that can be in flight together different names."""
        return values.clone()

    def synchronize_batch_norm(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` with batch norm over the global batch (``model.sync_batch_norm``)."""
        from pipeline.engines import sync_batch_norm

        return sync_batch_norm.convert(model, self)

    def average_buffers(self, model: torch.nn.Module) -> None:
        """Average float buffers (batch-norm running stats), so every rank evaluates one model."""

    def broadcast_object(self, obj: Any, name: str = "object") -> Any:
        """Rank 0's ``obj`` on every rank (other ranks may pass None); ``name`` tags the collective."""
        return obj

    def agree(self, name: str, value: int) -> int:
        """Check every rank holds the same integer ``value``; raise naming ``name`` if not."""
        return value

    def passes_through(self, error: BaseException) -> bool:
        """Errors an agreement point must not catch: the engine's own signals (Horovod's
        elastic mode resets on them)."""
        return False

    def settle(self, error: BaseException | None) -> None:
        """Agreement point: every rank says whether its part of the work since the last one
        failed. If any rank's did, every rank raises, at once, the first failing rank's
        error (collective): no rank is left waiting for the others in a later collective.

        Rank 0 raises its own error when it failed (the type its callers expect), and
        otherwise :class:`RankFailure` with the failing rank's message, which it prints.
        Other ranks raise a quiet :class:`RankFailure` with the same message -- except a
        rank whose failure is a bug, which re-raises it (its traceback is what helps).
        """
        failures = self.allgather_object(None if error is None else _describe(error), "settle")  # collective
        first = next((r for r, f in enumerate(failures) if f is not None), None)
        if first is None:
            return
        _, message = failures[first]
        if error is not None and (self.is_root or failures[self.rank][0]):
            raise error
        where = f" (on rank {first})" if first != 0 else ""
        raise RankFailure(f"{message}{where}", quiet=not self.is_root) from error

    def barrier(self) -> None:
        """Wait for every rank."""

    def refresh(self) -> None:
        """Re-read rank and world size (after an elastic reset)."""

    def shutdown(self) -> None:
        """Release the engine's resources."""


def to_cpu(obj):
    """``obj`` (nested dicts, lists, tuples) with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def _apply(optimizer, before_step, scaler) -> bool:
    """The step on gradients already averaged: unscale (fp16), check, step, update the scale."""
    if scaler is None:
        if before_step is not None and before_step() is False:
            return False
        optimizer.step()
        return True
    scaler.unscale_(optimizer)
    if before_step is not None and before_step() is False:
        scaler.update()  # an overflow lowers the scale; the step is not taken
        return False
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= scale  # a lowered scale: the scaler found inf/NaN and skipped


class DisagreementError(RuntimeError):
    """Ranks hold different values for something they must share (steps, dataset)."""


class RankFailure(RuntimeError):
    """A rank's error, raised on every rank (see :meth:`Collective.settle`).

    Args:
        quiet: the CLI prints nothing for it (rank 0 prints the one line for all).
    """

    def __init__(self, message: str, quiet: bool = False):
        super().__init__(message)
        self.quiet = quiet


def _describe(error: BaseException) -> tuple[bool, str]:
    """(is it a bug, one line about it)."""
    from pipeline.errors import is_user_error

    if is_user_error(error):
        return False, str(error)
    return True, f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
