"""Pre-emption: a warning signal becomes a checkpoint and a clean exit every rank agrees on.

Batch schedulers warn a job before they stop it (Slurm ``--signal=B:USR1@120``; the batch
script passes SIGUSR1 on to the ranks, see deploy/slurm/). The signal may reach one rank or
all of them, between any two instructions, so the handler only remembers it; every
``train.preemption_check_steps`` optimizer steps (a step count, the same on every rank) the
ranks sum their flags in one small all-reduce, and if any rank was warned they all save a
checkpoint at that step (sample-exact, as ``checkpoint_every_steps`` does) and stop with
:class:`Preempted`: one ``preempted:`` line and exit status :data:`PREEMPTED_EXIT`.
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later", what a requeued job does
PREEMPTION_SIGNAL = signal.SIGUSR1
NOTICE_ENV = "PIPELINE_PREEMPTED_NOTICE"  # a file where ranks leave their preempted: line for a local launcher


class Preempted(RuntimeError):
    """Training stopped on a pre-emption warning after saving a checkpoint; the message says
    where and how to continue."""


class PreemptionWatch:
    """Remembers a SIGUSR1 from the moment it is installed until :meth:`close`.

    Args:
        check_steps: optimizer steps between the ranks' agreements; 0 leaves SIGUSR1 alone
            (its default action ends the process).
    """

    def __init__(self, check_steps: int):
        self.check_steps = check_steps
        self.requested = False
        self._previous = None
        # Python runs signal handlers in the main thread only; a trainer started elsewhere
        # (an embedding application) leaves the process's handlers as they are.
        if check_steps > 0 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(PREEMPTION_SIGNAL, self._on_signal)

    @property
    def active(self) -> bool:
        return self._previous is not None

    def _on_signal(self, signum, frame) -> None:
        self.requested = True

    def due(self, global_step: int) -> bool:
        """Whether the ranks compare flags after ``global_step`` (the same answer on every rank)."""
        return self.check_steps > 0 and global_step % self.check_steps == 0

    def close(self) -> None:
        """Give SIGUSR1 its previous action back. (Not "ignored": that would be inherited by
        every process this one starts later, and a shell started with SIGUSR1 ignored cannot
        trap it -- a batch script's pre-emption trap would never fire.)"""
        if self._previous is not None:
            signal.signal(PREEMPTION_SIGNAL, self._previous)
            self._previous = None


def leave_notice(error: Preempted) -> None:
    """Tell the local launcher that started this rank (see :func:`launcher_notice`) why it stopped."""
    path = os.environ.get(NOTICE_ENV)
    if path:
        with contextlib.suppress(OSError), open(path, "w") as f:
            f.write(str(error))


@contextlib.contextmanager
def launcher_notice():
    """Around a local launcher (horovod.run, torchrun, horovodrun) that starts ranks on this
    machine: a launcher failure because the ranks were pre-empted becomes :class:`Preempted`
    (exit status 75), and the launcher itself ignores SIGUSR1 (the ranks act on it)."""
    previous = signal.signal(PREEMPTION_SIGNAL, signal.SIG_IGN) if threading.current_thread() is threading.main_thread() else None
    fd, path = tempfile.mkstemp(prefix="pipeline-preempted-")
    os.close(fd)
    os.environ[NOTICE_ENV] = path
    try:
        yield
    except Exception as err:
        with open(path) as f:
            said = f.read().strip()
        if said.startswith("preempted:"):
            raise Preempted(said) from err
        raise
    finally:
        os.environ.pop(NOTICE_ENV, None)
        os.unlink(path)
        if previous is not None:
            signal.signal(PREEMPTION_SIGNAL, previous)
