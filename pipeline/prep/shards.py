"""Writing one split as balanced Parquet shards, from inside Spark tasks.

Each task writes its partition with pyarrow (so the file has exactly the manifest's
schema: uint8 fixed-size lists, chosen row-group size, compression, page checksums) to
its attempt's staging file (:mod:`pipeline.prep.output`) and returns one row of
metadata: path, rows, row-group row counts, bytes, sha256. The driver only collects
those rows, never the data.
"""
from __future__ import annotations

import math
from functools import partial

from pipeline.prep.output import Staging
from pipeline.schema import LABEL_COLUMN, ROW_ID_COLUMN, feature_columns, shard_schema


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


def write_split(df, *, staging: Staging, split: str, rows: int, features: dict, rows_per_shard: int, row_group_rows: int,
                compression: str) -> list[dict]:
    """Write ``df`` (one split, already in shard schema columns) into ``staging`` and return
    the staged shards' metadata (committed later, with the rest of the version).

    Rows are dealt round-robin into ``ceil(rows / rows_per_shard)`` partitions, so shard
    sizes differ by at most one row; within a shard rows are ordered by ``row_id``.
    """
    if rows == 0:
        return []
    n_shards = max(1, math.ceil(rows / rows_per_shard))
    columns = feature_columns(features) + [LABEL_COLUMN, ROW_ID_COLUMN]
    ordered = df.select(*columns).repartition(n_shards).sortWithinPartitions(ROW_ID_COLUMN)
    return staging.write(ordered, split, row_group_rows=row_group_rows, compression=compression,
                         convert=partial(to_shard_batch, features=features), schema=shard_schema(features))
