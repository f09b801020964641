"""Rank 0's progress during an epoch: a tqdm bar on a terminal; otherwise (every launcher
pipes the ranks' output, so there is no terminal) one compact log line every
``train.progress_every_s`` seconds: epoch, step/steps, samples/s and the time left."""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from tqdm import tqdm

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLine:
    """Logs progress at most every ``interval_s`` seconds.

    Args:
        interval_s: seconds between lines.
        epoch: this epoch, 0-based.
        epochs: epochs in the run.
        steps: batches in this segment of the epoch (fewer than a whole epoch after a resume).
        steps_per_epoch: batches in a whole epoch (for the run's time left).
        samples_per_step: the global batch.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, interval_s: float, epoch: int, epochs: int, steps: int, steps_per_epoch: int, samples_per_step: int,
                 clock: Callable[[], float] = time.monotonic):
        self.interval_s, self.epoch, self.epochs, self.steps = interval_s, epoch, epochs, steps
        self.steps_per_epoch, self.samples_per_step, self.clock = steps_per_epoch, samples_per_step, clock
        self.done = 0
        self.started = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.interval_s and self.done < self.steps:
            self.last = now
            log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        per_step = elapsed / self.done
        left_epoch = (self.steps - self.done) * per_step
        left_run = left_epoch + (self.epochs - self.epoch - 1) * self.steps_per_epoch * per_step
        return (f"epoch {self.epoch + 1}/{self.epochs} step {self.done}/{self.steps} "
                f"{self.done * self.samples_per_step / elapsed:,.0f} samples/s, "
                f"epoch ETA {duration(left_epoch)}, run ETA {duration(left_run)} (training only)")

    def close(self) -> None:
        pass


def progress_display(is_root: bool, interval_s: float, epoch: int, epochs: int, steps: int, steps_per_epoch: int,
                     samples_per_step: int):
    """A tqdm bar (rank 0 on a terminal), a :class:`ProgressLine` (rank 0 otherwise, when
    ``interval_s`` > 0), or a display that shows nothing."""
    if is_root and sys.stderr.isatty():
        return tqdm(total=steps, desc=f"epoch {epoch + 1}", leave=False)
    if is_root and interval_s > 0:
        return ProgressLine(interval_s, epoch, epochs, steps, steps_per_epoch, samples_per_step)
    return tqdm(total=steps, disable=True)
