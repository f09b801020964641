"""The learning rate as a pure function of training progress (epochs, fractional).

Progress is counted in samples, so the rate at a given point does not depend on the world
size, survives resume on another number of ranks, and needs no scheduler state.
"""
from __future__ import annotations

import math

from pipeline.config import TrainConfig


def learning_rate(cfg: TrainConfig, world_size: int, progress: float) -> float:
    """The rate after ``progress`` epochs (e.g. 2.5 = half-way through the third).

    ``lr`` x world size when ``scale_lr``, reached by a linear warm-up from ``lr`` over
    ``warmup_epochs``, times the decay of ``schedule``.
    """
    scale = world_size if cfg.scale_lr else 1
    warm = 1.0
    if scale > 1 and cfg.warmup_epochs > 0:
        warm = (1.0 + (scale - 1) * min(1.0, progress / cfg.warmup_epochs)) / scale
    return cfg.lr * scale * warm * decay(cfg, progress)


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
