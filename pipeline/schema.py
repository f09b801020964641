"""The on-disk schema shared by the Spark writer and the shard reader.

A shard has one column per feature, the class index ``label`` (int32) and ``row_id``
(int64, the stable hash of the row key that chose its split). Fixed-shape tensors are
fixed-size lists of their storage dtype, with the shape kept in the manifest.
"""
from __future__ import annotations

import math

import pyarrow as pa

LABEL_COLUMN = "label"
ROW_ID_COLUMN = "row_id"
REASON_COLUMN = "reason"
SPLITS = ("train", "val", "test")

_DTYPES = {"uint8": pa.uint8(), "float32": pa.float32()}


class SchemaError(ValueError):
    """A shard whose columns or types differ from what its manifest declares."""


def tensor_feature(dtype: str, shape: list[int]) -> dict:
    """Manifest entry for a fixed-shape tensor feature."""
    return {"kind": "tensor", "dtype": dtype, "shape": [int(s) for s in shape]}


def feature_arrow_type(spec: dict) -> pa.DataType:
    """Arrow type a feature is stored as, from its manifest entry."""
    if spec["kind"] == "tensor":
        return pa.list_(_DTYPES[spec["dtype"]], math.prod(spec["shape"]))
    raise SchemaError(f"unknown feature kind {spec['kind']!r}")


def shard_schema(features: dict) -> pa.Schema:
    """The Arrow schema every shard of a dataset version has."""
    fields = [pa.field(name, feature_arrow_type(spec), nullable=False) for name, spec in features.items()]
    fields.append(pa.field(LABEL_COLUMN, pa.int32(), nullable=False))
    fields.append(pa.field(ROW_ID_COLUMN, pa.int64(), nullable=False))
    return pa.schema(fields)


def check_shard_schema(actual: pa.Schema, features: dict, path: str) -> None:
    """Raise SchemaError naming ``path`` and the column if ``actual`` does not match."""
    expected = shard_schema(features)
    for want in expected:
        idx = actual.get_field_index(want.name)
        if idx < 0:
            raise SchemaError(
                f"{path}: column {want.name!r} missing (has {actual.names}); "
                "the shard does not belong to this manifest: re-run prepare"
            )
        got = actual.field(idx).type
        if not got.equals(want.type):
            raise SchemaError(
                f"{path}: column {want.name!r} is {got}, manifest says {want.type}; "
                "the shard does not belong to this manifest: re-run prepare"
            )
