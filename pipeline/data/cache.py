"""A node-local cache of whole shards (``data.reader.cache_dir``), for stores where
ranged reads are slow or every epoch would fetch the same bytes again.

Files are named by their sha256, so a cached file is the manifest's shard or nothing:
a download is checked against the manifest before it is renamed into place. Ranks on one
node share the cache: a lock per shard makes one download and the others wait for it.
The total size is bounded; the least recently used shards are evicted first.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid

from pipeline import storage

log = logging.getLogger(__name__)


class CacheError(RuntimeError):
    """A download that does not match the manifest; the message names the shard."""


class ShardCache:
    """Whole-shard copies in ``directory``, at most ``max_bytes`` in all (bar the shard in use).

    Args:
        directory: a local directory on this node (created if missing).
        max_bytes: size bound; older shards are removed to stay under it.
    """

    def __init__(self, directory: str, max_bytes: int):
        if not storage.is_local(directory):
            raise CacheError(f"data.reader.cache_dir={directory!r} must be a local directory on each node")
        self.directory = storage.resolve(directory)[1]
        self.max_bytes = max_bytes
        os.makedirs(self.directory, exist_ok=True)

    def local_copy(self, location: str, sha256: str, size: int) -> str:
        """A local path holding exactly the shard at ``location`` (downloaded on first use).

        Raises:
            CacheError: the downloaded bytes differ from the manifest's sha256.
        """
        path = os.path.join(self.directory, f"{sha256}.parquet")
        with self._locked(sha256):
            if _size(path) == size:
                os.utime(path)  # recently used: evicted last
                return path
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                got = storage.download(location, tmp)
                if got != sha256:
                    raise CacheError(f"{location}: downloaded bytes have sha256 {got[:12]}..., the manifest says "
                                     f"{sha256[:12]}...; the shard was altered: re-run prepare")
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        self._evict(keep=path)
        return path

    @contextlib.contextmanager
    def _locked(self, sha256: str):
        with open(os.path.join(self.directory, f".{sha256}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _evict(self, keep: str) -> None:
        """Remove least recently used shards until the cache fits ``max_bytes``."""
        entries = []
        for name in os.listdir(self.directory):
            if name.endswith(".parquet"):
                full = os.path.join(self.directory, name)
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(full)
                    entries.append((st.st_mtime, st.st_size, full))
        total = sum(e[1] for e in entries)
        for _, size, full in sorted(entries):
            if total <= self.max_bytes:
                break
            if full == keep:
                continue
            # A reader holding the file open keeps reading it: unlinking only drops the name.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(full)
                total -= size
        if total > self.max_bytes:
            log.warning("shard cache %s holds %d bytes, above data.reader.cache_max_bytes=%d: one shard is larger "
                        "than the bound; raise it", self.directory, total, self.max_bytes)


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return None
