"""Fetching the row groups of one epoch stream: inline from a local disk, or several ahead
in parallel from an object store, where each read is a network round trip.

On a local disk reading is CPU work and, when training runs on the same cores, more threads
would only compete with it (measured: Arrow's own thread pool slowed training), so groups
are read one at a time in the reader's background thread -- unless ``local_parallel``
asks for a pool (a GPU rank: its cores are free, and one thread decodes images slower
than the GPU trains on them). On an object store a row group costs a ranged GET whose
latency dwarfs its decoding, so ``readahead`` groups are fetched and decoded by a small
thread pool while the reader works on earlier ones (measured on a loopback S3 server:
1.1 M rows/s one at a time, 1.7-2.1 M rows/s four ahead; against local disk, alternating
runs: 0.57 of its rows/s two ahead, 0.65-0.69 four, 0.70-0.76 eight, 0.74 sixteen), and at
most ``max_bytes_ahead`` of them (their uncompressed size, from the footer): a row group of
large images can be hundreds of MB.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.data.assign import RowGroup

# Row groups in flight on an object store, uncompressed bytes (always at least one group).
READAHEAD_BYTES = 256 * 2**20
# Leaf values decoded per step when reading a row group. Decoding a whole group of wide
# rows at once runs out of the CPU caches: an 8,192-row group of 3x32x32 uint8 images
# (25 M values) took 187 ms read at once against 128 ms in 256-row steps, tabular groups
# (36 values a row) the same either way (measured on one shard, best of 5).
DECODE_STEP_VALUES = 2**20
# What works when a shard's bytes changed but not its size (prepare's "unchanged" check
# compares sizes; a version without a manifest is rebuilt).
REBUILD = "delete {version}/manifest.json and re-run prepare (it rebuilds the version)"
# Arrow's words for bytes that do not decode: a page checksum, a codec, the Thrift headers.
_CORRUPT = ("checksum", "CRC", "decompress", "deserialize", "Corrupt", "corrupt", "Unexpected end of stream", "Invalid")


class ShardError(RuntimeError):
    """A shard that is missing, altered or unreadable; the message names the file."""


class GroupFetcher:
    """Decoded row groups of a split, by their index in ``order``.

    Args:
        locations: each shard's location (path or URI), by shard index.
        footers: each shard's Parquet footer, read once at start-up.
        order: the epoch's row groups (``EpochStream.order``).
        columns: columns to read.
        decode: Arrow table -> decoded group (what the reader holds).
        readahead: groups fetched ahead in parallel on object stores; 0 reads inline.
        local_parallel: groups decoded ahead in parallel from a local disk (or the shard
            cache); 0 reads them inline.
        open_local: shard index -> a local path to read instead (the shard cache), or None.
        page_checksums: verify each data page's CRC as it is read (shards are written with
            them), so a changed byte fails at its row group.
        max_bytes_ahead: the groups fetched ahead hold at most this many bytes
            (uncompressed, per the footer), but always one.
    """

    def __init__(self, locations: list[str], footers: list, order: Sequence[RowGroup], columns: list[str],
                 decode: Callable, readahead: int, open_local: Callable[[int], str] | None = None,
                 page_checksums: bool = True, local_parallel: int = 0, max_bytes_ahead: int = READAHEAD_BYTES):
        self.locations, self.footers, self.order, self.columns, self.decode = locations, footers, order, columns, decode
        self.open_local, self.page_checksums, self.max_bytes_ahead = open_local, page_checksums, max_bytes_ahead
        remote = bool(locations) and not storage.is_local(locations[0]) and open_local is None
        self.readahead = readahead if remote else local_parallel
        self._pool = ThreadPoolExecutor(self.readahead, thread_name_prefix="row-group-fetch") if self.readahead else None
        self._sources: dict[int, object] = {}
        self._lock = threading.Lock()
        self._inflight: dict[int, Future] = {}

    def _source(self, shard: int):
        """The shard opened once: a ParquetFile inline, a shared random-access file (whose
        ranged reads are thread-safe) when fetching ahead."""
        with self._lock:
            if shard not in self._sources:
                # page_checksum_verification: a flipped byte fails at the row group holding it.
                if self.open_local is not None and self._pool is None:
                    self._sources[shard] = pq.ParquetFile(self.open_local(shard), metadata=self.footers[shard],
                                                          page_checksum_verification=self.page_checksums)
                elif self.open_local is not None:
                    self._sources[shard] = pa.OSFile(self.open_local(shard))
                elif self._pool is None:
                    self._sources[shard] = pq.ParquetFile(storage.open_input(self.locations[shard]), metadata=self.footers[shard],
                                                          pre_buffer=not storage.is_local(self.locations[shard]),
                                                          page_checksum_verification=self.page_checksums)
                else:
                    self._sources[shard] = storage.open_input(self.locations[shard])
            return self._sources[shard]

    def _load(self, g: int):
        group = self.order[g]
        location = self.locations[group.shard]
        try:
            with storage.translated(location, "read it"):
                source = self._source(group.shard)
                if self._pool is not None:  # one ParquetFile per read: readers are not shared between threads
                    # pre_buffer: the group's column chunks come in a few coalesced ranged reads.
                    source = pq.ParquetFile(source, metadata=self.footers[group.shard], pre_buffer=True,
                                            page_checksum_verification=self.page_checksums)
                table = self._read(source, group)
        except (storage.StorageError, OSError, pa.ArrowInvalid) as err:
            if not any(word in str(err) for word in _CORRUPT):
                raise
            raise ShardError(f"{location}: row group {group.index} does not decode ({str(err).splitlines()[0]}); "
                             f"the file was altered after prepare: {REBUILD.format(version=storage.parent(storage.parent(location)))}") from None
        return self.decode(table)

    def _read(self, source: pq.ParquetFile, group: RowGroup) -> pa.Table:
        """The group's columns, decoded in steps of about :data:`DECODE_STEP_VALUES` leaf
        values. use_threads=False: this already runs beside the training threads, and
        Arrow's pool would compete with them for the same cores."""
        meta = self.footers[group.shard].row_group(group.index)
        values = sum(meta.column(i).num_values for i in range(meta.num_columns)
                     if meta.column(i).path_in_schema.split(".")[0] in self.columns)
        step = max(64, DECODE_STEP_VALUES * meta.num_rows // max(values, 1))
        if step >= meta.num_rows:
            return source.read_row_group(group.index, columns=self.columns, use_threads=False)
        return pa.Table.from_batches(list(source.iter_batches(batch_size=step, row_groups=[group.index], columns=self.columns,
                                                              use_threads=False)))

    def hint(self, upcoming: Iterable[int], held: set[int]) -> None:
        """Start fetching the first groups of ``upcoming`` (in the order they will be
        needed) that are neither ``held`` nor already on their way."""
        if self._pool is None:
            return
        ahead = sum(map(self._bytes, self._inflight))
        for g in upcoming:
            if len(self._inflight) >= self.readahead:
                return
            if g not in held and g not in self._inflight:
                size = self._bytes(g)
                if self._inflight and ahead + size > self.max_bytes_ahead:
                    return
                self._inflight[g] = self._pool.submit(self._load, g)
                ahead += size

    def _bytes(self, g: int) -> int:
        group = self.order[g]
        return self.footers[group.shard].row_group(group.index).total_byte_size

    def get(self, g: int):
        """Group ``g`` decoded (waits for its fetch if one is on its way)."""
        future = self._inflight.pop(g, None)
        return future.result() if future is not None else self._load(g)

    def release(self, held: set[int]) -> None:
        """Close shards that neither ``held`` groups nor fetches on their way need: open
        footers and files would otherwise grow with the number of shards."""
        needed = {self.order[g].shard for g in (*held, *self._inflight)}
        with self._lock:
            for shard in [s for s in self._sources if s not in needed]:
                _close(self._sources.pop(shard))

    def close(self) -> None:
        if self._pool is not None:
            for future in self._inflight.values():
                future.cancel()
            self._pool.shutdown(wait=True)
        self._inflight.clear()
        with self._lock:
            for source in self._sources.values():
                _close(source)
            self._sources.clear()


def _close(source) -> None:
    if isinstance(source, pq.ParquetFile):
        source.close(force=True)  # force: also the file it was given
    else:
        source.close()
