"""Parquet output from Spark tasks that holds under task retries, speculation and object
stores: every task attempt writes its own file, and only the files named by the results
the driver collected (one per partition: Spark keeps exactly one successful attempt) are
moved into place.

    staging = Staging(final_dir)                     # <final_dir>/_staging/<run id>/
    files = staging.write(df, "train", ...)          # Spark job: one attempt file per task
    staging.commit(files)                            # move the named files; drop the rest

Files under ``_staging/`` are never referenced by a manifest or a score's metrics; a run
that dies leaves them to the next run of the same output, which deletes them.
"""
from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from functools import partial
from typing import Callable

from pipeline import storage

log = logging.getLogger(__name__)

STAGING_DIR = "_staging"
FILE_META_DDL = "path string, staged string, rows long, row_groups array<long>, bytes long, sha256 string, counts map<string,long>"
# What the manifest (or a score's metrics) records per committed file.
RECORDED = ("path", "rows", "row_groups", "bytes", "sha256")


class _HashingSink:
    """A write-only file that hashes and counts what passes through it to ``stream``."""

    def __init__(self, stream):
        self.stream, self.digest, self.bytes, self.closed = stream, hashlib.sha256(), 0, False

    def write(self, data) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.bytes += view.nbytes
        self.stream.write(data)
        return view.nbytes

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self.bytes

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.close()


def write_partition(batches, *, staging: str, rel_dir: str, row_group_rows: int, compression: str,
                    convert: Callable | None = None, schema=None, tally: Callable | None = None):
    """mapInArrow body: write this task attempt's rows to its own staging file and return
    one row of metadata (final path, staged path, rows, row groups, bytes, sha256, counts).

    Args:
        staging: the run's staging prefix.
        rel_dir: output folder under the final directory (``train``, ``rejected``, ...).
        row_group_rows: rows per Parquet row group (buffered, so sizes do not depend on
            Arrow batch sizes).
        compression: zstd, snappy, gzip or none.
        convert: batch -> batch in the file's schema (e.g. the shard schema).
        schema: the file's schema; None takes the first batch's.
        tally: batch -> {name: count}, summed into the ``counts`` column.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark import TaskContext

    ctx = TaskContext.get()
    part = ctx.partitionId()
    # taskAttemptId is unique within the application, the staging prefix per run: a retry
    # or a speculative copy never writes another attempt's file.
    staged = f"{rel_dir}/part-{part:05d}.attempt-{ctx.taskAttemptId()}.parquet"
    counts: Counter = Counter()
    writer = sink = None
    pending, pending_rows = [], 0

    def flush(rows: int) -> None:
        nonlocal pending, pending_rows
        table = pa.Table.from_batches(pending, schema=pending[0].schema)
        writer.write_table(table.slice(0, rows), row_group_size=row_group_rows)
        rest = table.slice(rows)
        pending, pending_rows = rest.to_batches(), rest.num_rows

    location = storage.join(staging, staged)
    with storage.translated(location, "write it"):
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                if convert is not None:
                    batch = convert(batch)
                if tally is not None:
                    counts.update(tally(batch))
                if writer is None:
                    sink = _HashingSink(storage.open_stream(location))
                    writer = pq.ParquetWriter(sink, schema or batch.schema, compression=None if compression == "none" else compression,
                                              write_page_checksum=True)
                pending.append(batch)
                pending_rows += batch.num_rows
                if pending_rows >= row_group_rows:
                    flush((pending_rows // row_group_rows) * row_group_rows)
            if pending_rows:
                flush(pending_rows)
        finally:
            if writer is not None:
                writer.close()
            if sink is not None:
                sink.close()
    if writer is None:
        return
    meta = writer.writer.metadata
    yield pa.RecordBatch.from_pydict(
        {
            "path": [f"{rel_dir}/part-{part:05d}.parquet"],
            "staged": [staged],
            "rows": [meta.num_rows],
            "row_groups": [[meta.row_group(i).num_rows for i in range(meta.num_row_groups)]],
            "bytes": [sink.bytes],
            "sha256": [sink.digest.hexdigest()],
            "counts": [list(counts.items())],
        },
        schema=pa.schema([
            ("path", pa.string()), ("staged", pa.string()), ("rows", pa.int64()), ("row_groups", pa.list_(pa.int64())),
            ("bytes", pa.int64()), ("sha256", pa.string()), ("counts", pa.map_(pa.string(), pa.int64())),
        ]),
    )


class Staging:
    """One run's private staging prefix under ``final_dir``; see the module docstring."""

    def __init__(self, final_dir: str):
        self.final_dir = final_dir
        self.dir = storage.join(final_dir, STAGING_DIR, uuid.uuid4().hex[:16])

    def write(self, df, rel_dir: str, *, row_group_rows: int, compression: str, convert: Callable | None = None,
              schema=None, tally: Callable | None = None) -> list[dict]:
        """Run a Spark job writing ``df`` under ``rel_dir``; the collected file metadata,
        one entry per non-empty partition, sorted by path."""
        body = partial(write_partition, staging=self.dir, rel_dir=rel_dir, row_group_rows=row_group_rows,
                       compression=compression, convert=convert, schema=schema, tally=tally)
        rows = df.mapInArrow(body, FILE_META_DDL).collect()
        files = [{**r.asDict(), "row_groups": list(r["row_groups"]), "counts": dict(r["counts"] or {})} for r in rows]
        return sorted(files, key=lambda f: f["path"])

    def commit(self, files: list[dict]) -> None:
        """Move exactly ``files`` into place under ``final_dir``, then drop the staging
        prefix with whatever else (failed or speculative attempts) is in it."""
        storage.move_all([(storage.join(self.dir, f["staged"]), storage.join(self.final_dir, f["path"])) for f in files])
        self.discard()

    def discard(self) -> None:
        storage.delete_dir(self.dir)


def recorded(files: list[dict]) -> list[dict]:
    """The fields a manifest keeps per file."""
    return [{k: f[k] for k in RECORDED} for f in files]


def ensure_readable(final_dir: str, rel_dir: str, files: list[dict], schema) -> None:
    """When no task wrote under ``rel_dir``, write a zero-row file there, so the folder
    still opens as a table with ``schema`` (a pyarrow schema)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if files:
        return
    with storage.open_output(storage.join(final_dir, rel_dir, "part-00000.parquet")) as f:
        pq.write_table(pa.Table.from_batches([], schema=schema), f)


def remove_leftover_staging(final_dir: str) -> None:
    """Delete staging left by runs that died before their commit (say so in the log)."""
    leftovers = storage.list_dirs(storage.join(final_dir, STAGING_DIR))
    if leftovers:
        log.info("removing staging left by %d unfinished run(s) under %s", len(leftovers), final_dir)
        storage.delete_dir(storage.join(final_dir, STAGING_DIR))
