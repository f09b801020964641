"""Ending a rank that makes no progress, so a job never hangs forever.

A rank stuck outside the collectives (a hung filesystem or object-store read, a FIFO)
leaves every other rank waiting inside one, where no engine timeout reaches: Gloo's
timeout only bounds a collective that has started on both sides, and Horovod's stall
shutdown (``HOROVOD_STALL_SHUTDOWN_TIME_SECONDS``, set too) did not fire with the Gloo
controller of the Horovod built here (measured: a rank sleeping 40 s before an all-reduce
with a 5 s shutdown time was simply waited for). The trainer calls :meth:`Watchdog.beat`
at every step, evaluation batch and agreement point; after ``timeout_s`` without one the
rank says where it is stuck and exits, and the launcher ends the others.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback


class Watchdog:
    """A daemon thread watching this rank's heartbeat.

    Args:
        timeout_s: seconds without a beat before the rank ends (``dist.timeout_s``).
        rank: this rank, for the message.
    """

    EXIT_CODE = 3

    def __init__(self, timeout_s: float, rank: int):
        self.timeout_s, self.rank = timeout_s, rank
        self._last = time.monotonic()
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="progress-watchdog", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        """This rank made progress."""
        self._last = time.monotonic()

    def close(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(min(5.0, self.timeout_s / 4)):
            idle = time.monotonic() - self._last
            if idle > self.timeout_s:
                print(f"error: rank {self.rank} made no progress for {idle:.0f} s (dist.timeout_s={self.timeout_s:g}), "
                      f"stuck in {self._where()}; ending the job (raise dist.timeout_s if a step or a checkpoint "
                      "write really takes this long)", file=sys.stderr, flush=True)
                os._exit(self.EXIT_CODE)

    def _where(self) -> str:
        frame = sys._current_frames().get(self._main)
        if frame is None:
            return "an unknown place"
        last = traceback.extract_stack(frame)[-1]
        return f"{os.path.basename(last.filename)}:{last.lineno} ({last.name})"
