"""Writing one split as balanced Parquet shards, from inside Spark tasks.

Each task writes its partition with pyarrow (so the file has exactly the manifest's
schema: uint8 fixed-size lists, chosen row-group size, compression) and returns one row
of metadata: path, rows, row-group row counts, bytes, sha256. The driver only collects
those rows, never the data.
"""
from __future__ import annotations

import math
import os
from functools import partial

from pipeline.manifest import file_sha256
from pipeline.schema import LABEL_COLUMN, ROW_ID_COLUMN, feature_columns, shard_schema

SHARD_META_DDL = "path string, rows long, row_groups array<long>, bytes long, sha256 string"


def to_shard_batch(batch, features: dict):
    """Convert a Spark Arrow batch (Spark arrays are variable lists of int32/float) to the
    shard schema (fixed-size lists of the storage dtype; float32 lists for sequences)."""
    import pyarrow as pa

    schema = shard_schema(features)
    arrays = []
    for field in schema:
        col = batch.column(batch.schema.get_field_index(field.name))
        if pa.types.is_fixed_size_list(field.type):
            values = col.flatten().cast(field.type.value_type)
            if len(values) != len(col) * field.type.list_size:
                raise ValueError(f"column {field.name}: rows hold {len(values)} values in all, expected {len(col)} x {field.type.list_size}")
            col = pa.FixedSizeListArray.from_arrays(values, field.type.list_size)
        else:
            col = col.cast(field.type)
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def write_partition(batches, *, out_dir: str, rel_dir: str, features: dict, row_group_rows: int, compression: str):
    """mapInArrow body: write this task's rows to ``out_dir/rel_dir/part-NNNNN.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark import TaskContext

    part = TaskContext.get().partitionId()
    rel_path = f"{rel_dir}/part-{part:05d}.parquet"
    path = os.path.join(out_dir, rel_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    schema = shard_schema(features)
    writer = None
    pending, pending_rows = [], 0
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            pending.append(to_shard_batch(batch, features))
            pending_rows += batch.num_rows
            # Buffer to whole row groups so row-group sizes do not depend on Arrow batch sizes.
            if pending_rows >= row_group_rows:
                table = pa.Table.from_batches(pending, schema=schema)
                full = (pending_rows // row_group_rows) * row_group_rows
                writer = writer or pq.ParquetWriter(path, schema, compression=None if compression == "none" else compression)
                writer.write_table(table.slice(0, full), row_group_size=row_group_rows)
                rest = table.slice(full)
                pending, pending_rows = rest.to_batches(), rest.num_rows
        if pending_rows:
            writer = writer or pq.ParquetWriter(path, schema, compression=None if compression == "none" else compression)
            writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=row_group_rows)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        return
    meta = pq.ParquetFile(path).metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    yield pa.RecordBatch.from_pydict(
        {
            "path": [rel_path],
            "rows": [meta.num_rows],
            "row_groups": [groups],
            "bytes": [os.path.getsize(path)],
            "sha256": [file_sha256(path)],
        }
    )


def write_split(df, *, out_dir: str, split: str, rows: int, features: dict, rows_per_shard: int, row_group_rows: int, compression: str) -> list[dict]:
    """Write ``df`` (one split, already in shard schema columns) and return shard metadata.

    Rows are dealt round-robin into ``ceil(rows / rows_per_shard)`` partitions, so shard
    sizes differ by at most one row; within a shard rows are ordered by ``row_id``.
    """
    if rows == 0:
        return []
    n_shards = max(1, math.ceil(rows / rows_per_shard))
    columns = feature_columns(features) + [LABEL_COLUMN, ROW_ID_COLUMN]
    body = partial(write_partition, out_dir=out_dir, rel_dir=split, features=features, row_group_rows=row_group_rows, compression=compression)
    meta = df.select(*columns).repartition(n_shards).sortWithinPartitions(ROW_ID_COLUMN).mapInArrow(body, SHARD_META_DDL).collect()
    shards = [
        {"path": r["path"], "rows": r["rows"], "row_groups": list(r["row_groups"]), "bytes": r["bytes"], "sha256": r["sha256"]}
        for r in meta
    ]
    return sorted(shards, key=lambda s: s["path"])
