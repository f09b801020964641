"""Run by 2 ranks from bench/train.py: a 64 MB all-reduce vs a plain TCP transfer of the
same bytes between the same two processes, over the same interface.

    horovodrun -np 2 -H 127.0.0.1:2 --gloo python bench/allreduce_worker.py horovod OUT.json [MB] [REPEATS]
    torchrun --nproc-per-node 2 bench/allreduce_worker.py torch OUT.json [MB] [REPEATS]
"""
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Engine:
    """The three operations this benchmark needs, over Horovod or torch.distributed."""

    def __init__(self, name: str):
        self.name = name
        if name == "horovod":
            import horovod.torch as hvd

            hvd.init()
            self.hvd, self.rank, self.size = hvd, hvd.rank(), hvd.size()
        else:
            import torch.distributed as dist

            dist.init_process_group("gloo")
            self.dist, self.rank, self.size = dist, dist.get_rank(), dist.get_world_size()

    def allreduce(self, tensor: torch.Tensor, name: str) -> None:
        if self.name == "horovod":
            self.hvd.allreduce_(tensor, op=self.hvd.Sum, name=name)
        else:
            self.dist.all_reduce(tensor)

    def broadcast_object(self, obj, name: str):
        if self.name == "horovod":
            return self.hvd.broadcast_object(obj, root_rank=0, name=name)
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def shutdown(self) -> None:
        self.hvd.shutdown() if self.name == "horovod" else self.dist.destroy_process_group()


def allreduce_seconds(engine: Engine, tensor: torch.Tensor, repeats: int) -> float:
    for i in range(2):
        engine.allreduce(tensor, f"warmup.{i}")
    engine.broadcast_object(0, "sync")
    start = time.perf_counter()
    for i in range(repeats):
        engine.allreduce(tensor, f"bench.{i}")
    return (time.perf_counter() - start) / repeats


def tcp_seconds(engine: Engine, nbytes: int, repeats: int) -> float:
    """Rank 1 streams ``nbytes`` to rank 0 over the ranks' own interface (loopback on one
    machine, the veth between two hosts of the rig); seconds per transfer (receiver's clock)."""
    if engine.rank == 0:
        from pipeline.launch.network import interface_address

        iface = os.environ.get("HOROVOD_GLOO_IFACE") or os.environ.get("GLOO_SOCKET_IFNAME") or "lo"
        server = socket.create_server((interface_address(iface) or "127.0.0.1", 0))
        engine.broadcast_object(server.getsockname(), "address")
        conn, _ = server.accept()
        view = memoryview(bytearray(1 << 20))
        times = []
        for _ in range(repeats + 1):
            got, start = 0, time.perf_counter()
            while got < nbytes:
                got += conn.recv_into(view, min(len(view), nbytes - got))
            conn.sendall(b"k")
            times.append(time.perf_counter() - start)
        conn.close()
        server.close()
        return sum(times[1:]) / repeats  # the first transfer warms the connection up
    address = engine.broadcast_object(None, "address")
    payload = bytearray(nbytes)
    conn = socket.create_connection(tuple(address))
    for _ in range(repeats + 1):
        conn.sendall(payload)
        conn.recv(1)
    conn.close()
    return 0.0


def main(engine_name: str, out: str, megabytes: int = 64, repeats: int = 10) -> None:
    engine = Engine(engine_name)
    torch.set_num_threads(1)
    tensor = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32)
    nbytes = tensor.numel() * 4
    reduce_s = allreduce_seconds(engine, tensor, repeats)
    tcp_s = engine.broadcast_object(tcp_seconds(engine, nbytes, repeats), "tcp")
    if engine.rank == 0:
        n = engine.size
        result = {
            "engine": engine_name, "bytes": nbytes, "ranks": n, "allreduce_seconds": reduce_s,
            # the usual bus bandwidth of a ring all-reduce: each rank sends 2(n-1)/n of the buffer
            "allreduce_bus_bandwidth_MBps": 2 * (n - 1) / n * nbytes / reduce_s / 1e6,
            "tcp_seconds": tcp_s, "tcp_bandwidth_MBps": nbytes / tcp_s / 1e6,
        }
        with open(out, "w") as f:
            json.dump(result, f)
    engine.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
