"""Launching torch.distributed (DDP) ranks with torchrun."""
from __future__ import annotations

import socket
import sys


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (for the rendezvous)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def torchrun_argv(nproc_per_node: int, script_args: list[str], master_addr: str = "127.0.0.1", master_port: int = 29500,
                  nnodes: int = 1, node_rank: int = 0, python: str | None = None, rdzv_id: str | None = None) -> list[str]:
    """``python -m torch.distributed.run`` (torchrun) starting ``nproc_per_node`` ranks on this
    node of ``nnodes``, each running ``script_args`` (a script and its arguments).

    With ``rdzv_id`` the nodes meet through the c10d rendezvous hosted at
    ``master_addr:master_port`` (one torchrun per node, the same command on each, node
    ranks assigned by the rendezvous); without it, the static rendezvous of one node.
    """
    if rdzv_id is not None:
        meet = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{master_addr}:{master_port}", "--rdzv-id", rdzv_id]
    else:
        meet = ["--node-rank", str(node_rank), "--master-addr", master_addr, "--master-port", str(master_port)]
    return [python or sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes),
            "--nproc-per-node", str(nproc_per_node), *meet, *script_args]
