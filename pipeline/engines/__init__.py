"""The only place that knows about ranks: one Collective interface, several engines.

``make_collective(cfg.dist)`` returns the engine the config names; the trainer receives
it and reads rank and world size from it, never from the environment.
"""
from __future__ import annotations

import os

from pipeline.config import DistConfig
from pipeline.engines.base import Collective, DisagreementError, available_cores, pin_threads


def make_collective(cfg: DistConfig, device: str = "auto") -> Collective:
    """Initialise the configured engine (horovod, torch (DDP) or single) on this rank's
    device for the ``train.device`` setting ``device`` (see :mod:`pipeline.engines.device`)."""
    if cfg.engine == "horovod":
        from pipeline.engines.horovod_backend import HorovodCollective

        return HorovodCollective(timeout_s=cfg.timeout_s, device=device)
    if cfg.engine == "torch":
        from pipeline.engines.torch_backend import TorchCollective

        if cfg.network_interface:  # Gloo's own setting; an explicit environment wins
            os.environ.setdefault("GLOO_SOCKET_IFNAME", cfg.network_interface)
        return TorchCollective(timeout_s=cfg.timeout_s, device=device)
    if cfg.engine == "single":
        return Collective(device)
    raise ValueError(f"dist.engine={cfg.engine!r} is not one of: horovod, torch, single")


__all__ = ["Collective", "DisagreementError", "available_cores", "make_collective", "pin_threads"]
