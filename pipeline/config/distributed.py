"""The ``dist`` section: the engine (Horovod, torch.distributed, single), elastic mode, timeouts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class DistConfig:
    """Distributed engine.

    Args:
        engine: horovod (horovodrun / horovod.run / Spark), torch (DDP, torchrun), or
            single (one process, no launcher).
        fp16_allreduce: compress gradients to fp16 for the all-reduce.
        elastic: Horovod elastic mode: ranks may leave or join; progress is committed in
            memory every ``commit_every_steps`` and training continues on the survivors.
        timeout_s: how long a collective waits for a lost peer before the job fails.
        commit_every_steps: elastic mode: steps between in-memory commits (the most a
            lost worker can cost).
        min_np: elastic mode: fewest ranks the job continues with (default 1).
        network_interface: the interface ranks talk over (``eth0``, ``ib0``, ...); None:
            the launcher detects it (Spark launcher: the interface that routes to the
            Spark master).
    """

    engine: str = "horovod"
    fp16_allreduce: bool = False
    elastic: bool = False
    timeout_s: int = 300
    commit_every_steps: int = 20
    min_np: int = 1
    network_interface: Optional[str] = None
