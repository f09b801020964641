"""What training carries from step to step and across restarts (progress, optimizer,
batch-norm statistics), and where a run's inputs and outputs are."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pipeline import storage
from pipeline.config import Config, TrainConfig
from pipeline.manifest import dataset_dir
from pipeline.train import checkpoint as ckpt


@dataclass
class Progress:
    """Where training stands, besides model and optimizer: what a checkpoint or an elastic
    commit saves. Fields are replaced, never mutated in place (an elastic commit keeps
    references, not copies).

    ``reader`` is the train reader's state mid-epoch (None at an epoch boundary); ``sums``
    are this epoch's global [loss x n, correct, seen] folded in so far, ``seconds`` and
    ``waited`` its wall time and input wait, ``stepping`` its time in the optimizer step,
    which waits for the gradient all-reduce (means over ranks).
    """

    epoch: int = 0
    global_step: int = 0
    reader: dict | None = None
    sums: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    seconds: float = 0.0
    waited: float = 0.0
    stepping: float = 0.0
    history: list = field(default_factory=list)
    best: float | None = None
    bad_epochs: int = 0
    stopped: bool = False
    skipped: int = 0
    overflow_steps: int = 0  # fp16: steps the loss scaler skipped (gradients overflowed at its scale)
    best_epoch: int | None = None
    best_state: dict | None = None

    def commit(self) -> None:
        """Outside elastic mode progress lives in checkpoints only."""

    @classmethod
    def fields_of(cls, state) -> dict:
        """The Progress fields of ``state`` (a Progress or Horovod's elastic state)."""
        return {k: getattr(state, k) for k in cls.__dataclass_fields__}


def dataset_path(cfg: Config) -> str:
    """The dataset version training reads: ``data.version`` if set, else LATEST."""
    ddir = dataset_dir(cfg.data.root, cfg.data.name or cfg.name)
    return storage.join(ddir, cfg.data.version) if cfg.data.version else ddir


def make_optimizer(cfg: TrainConfig, params, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def find_run_to_resume(cfg: Config) -> str:
    """``run.root/run.name`` if named, else the run of this experiment whose newest
    checkpoint is the most recent."""
    root = cfg.run.root
    if cfg.run.name:
        return storage.join(root, cfg.run.name)
    newest = {}
    for run in storage.list_dirs(root):
        if storage.basename(run).startswith(f"{cfg.name}-"):
            files = ckpt.checkpoint_entries(run)
            if files:
                newest[run] = max(f.mtime_ns or 0 for f in files)
    if not newest:
        raise ckpt.CheckpointError(
            f"--resume: no run of {cfg.name!r} with a checkpoint under {root}/; name one with run.name=<dir>"
        )
    return max(newest, key=newest.get)


def float_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's floating-point buffers (batch-norm running statistics), copied to the CPU."""
    return {name: buf.detach().to("cpu", copy=True) for name, buf in model.named_buffers() if buf.is_floating_point()}


def mean_buffers(per_rank: list[dict]) -> dict[str, torch.Tensor]:
    """The mean of several ranks' buffers (a resume on another world size)."""
    return {name: torch.stack([b[name] for b in per_rank]).mean(0) for name in per_rank[0]}
