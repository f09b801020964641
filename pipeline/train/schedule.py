"""The learning rate as a pure function of the global batch and of training progress.

The rule, written once here: with ``scale_lr`` the rate is ``lr`` times the global batch
(world size x ``batch_size`` x ``accumulate_steps``) over the reference batch ``lr`` was
tuned for (``reference_batch``; unset, the first run's ``batch_size x accumulate_steps``
on one rank, kept in its checkpoints), reached by a linear warm-up from ``lr``. So the
rate follows the global batch: a resume on fewer ranks with the same per-rank batch, or
an elastic shrink, runs at the proportionally lower rate; keep the global batch (raise
``batch_size``) to keep the rate. Progress is counted in samples, so the schedule's point
does not depend on the world size either, and no scheduler state needs saving.
"""
from __future__ import annotations

import math

from pipeline.config import TrainConfig


def reference_batch(cfg: TrainConfig) -> int:
    """The global batch ``lr`` is tuned for: ``reference_batch``, else one rank's."""
    return cfg.reference_batch or cfg.batch_size * cfg.accumulate_steps


def lr_scale(cfg: TrainConfig, world_size: int, reference: int) -> float:
    """Global batch / ``reference`` when ``scale_lr``, else 1."""
    if not cfg.scale_lr:
        return 1.0
    return world_size * cfg.batch_size * cfg.accumulate_steps / reference


def learning_rate(cfg: TrainConfig, world_size: int, progress: float, reference: int | None = None) -> float:
    """The rate after ``progress`` epochs (e.g. 2.5 = half-way through the third) for this
    world size: ``lr`` x :func:`lr_scale`, reached by a linear warm-up from ``lr`` over
    ``warmup_epochs``, times the decay of ``schedule``. ``reference`` defaults to
    :func:`reference_batch`."""
    scale = lr_scale(cfg, world_size, reference or reference_batch(cfg))
    warmed = min(1.0, progress / cfg.warmup_epochs) if cfg.warmup_epochs > 0 else 1.0
    return cfg.lr * (1.0 + (scale - 1.0) * warmed) * decay(cfg, progress)


def decay(cfg: TrainConfig, progress: float) -> float:
    """Multiplier of the schedule after ``progress`` epochs."""
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress / cfg.epochs)))
    if cfg.schedule == "step":
        return cfg.gamma ** int(progress // cfg.step_epochs)
    return 1.0


def set_learning_rate(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
