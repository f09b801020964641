"""Which network interface ranks on this machine use to reach their peers."""
from __future__ import annotations

import socket


def interface_towards(host: str) -> str | None:
    """The local interface whose address this machine would use to reach ``host`` (the
    kernel's route choice, read by connecting a UDP socket: nothing is sent), or None when
    ``host`` does not resolve or no interface holds that address."""
    import psutil

    try:
        address = socket.gethostbyname(host)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((address, 9))
            local = s.getsockname()[0]
    except OSError:
        return None
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == local for a in addresses):
            return name
    return None


def unreachable(hosts: list[str], port: int = 22, timeout: float = 3.0) -> list[str]:
    """The hosts among ``hosts`` where nothing answers on ``port`` (ssh) within ``timeout``:
    lost machines, after a job that ran on them failed."""
    lost = []
    for host in hosts:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError:
            lost.append(host)
    return lost


def is_local_host(host: str) -> bool:
    """Whether ``host`` names this machine (resolves to one of its own addresses)."""
    import psutil

    try:
        address = socket.gethostbyname(host)
    except OSError:
        return False
    if address.startswith("127."):
        return True
    return any(a.address == address for addrs in psutil.net_if_addrs().values() for a in addrs)


def interface_address(interface: str) -> str | None:
    """The IPv4 address of ``interface`` on this machine, or None."""
    import psutil

    for a in psutil.net_if_addrs().get(interface, []):
        if a.family == socket.AF_INET:
            return a.address
    return None


def bind_horovod_rendezvous(address: str) -> None:
    """Make the rendezvous servers Horovod's launchers start in this process (the Gloo
    key-value store ranks meet at) listen on ``address`` only, not on every interface.

    Horovod binds them to all interfaces; the ranks are told to reach the launcher at the
    address of the interface it runs on (``--network-interface``), so that address is all
    they need.
    """
    from horovod.runner.http import http_server

    original = getattr(http_server.find_port, "__wrapped__", http_server.find_port)

    def find_port(server_factory):
        return original(lambda addr: server_factory((address, addr[1])))

    find_port.__wrapped__ = original
    http_server.find_port = find_port
