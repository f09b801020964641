"""The on-disk schema shared by the Spark writer and the shard reader.

A shard has one column per feature, the class index ``label`` (int32) and ``row_id``
(int64, the stable hash of the row key that chose its split). Feature kinds:

- ``tensor``: fixed shape, a fixed-size list of its dtype (uint8 images, float32 vectors
  and equal-length series), the shape in the manifest;
- ``categorical``: a fixed-size list of int32 vocabulary indices, one per column;
- ``sequence``: variable length, a list of float32 holding ``length x dims`` values
  time-major, plus an int32 ``<name>_length`` column. Never padded on disk.
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


def categorical_feature(columns: list[str], cardinalities: list[int]) -> dict:
    """Manifest entry for categorical columns; index 0 of each is the out-of-vocabulary bucket."""
    return {"kind": "categorical", "dtype": "int32", "shape": [len(columns)], "columns": list(columns), "cardinalities": list(cardinalities)}


def sequence_feature(dims: int) -> dict:
    """Manifest entry for a variable-length series of ``dims`` values per step."""
    return {"kind": "sequence", "dtype": "float32", "dims": int(dims)}


def length_column(name: str) -> str:
    """The int32 column holding each row's sequence length for sequence feature ``name``."""
    return f"{name}_length"


def feature_arrow_type(spec: dict) -> pa.DataType:
    """Arrow type a feature is stored as, from its manifest entry."""
    if spec["kind"] == "tensor":
        return pa.list_(_DTYPES[spec["dtype"]], math.prod(spec["shape"]))
    if spec["kind"] == "categorical":
        return pa.list_(pa.int32(), math.prod(spec["shape"]))
    if spec["kind"] == "sequence":
        return pa.list_(pa.float32())
    raise SchemaError(f"unknown feature kind {spec['kind']!r}")


def feature_columns(features: dict) -> list[str]:
    """Shard columns that hold features (sequence lengths included), in schema order."""
    columns = []
    for name, spec in features.items():
        columns.append(name)
        if spec["kind"] == "sequence":
            columns.append(length_column(name))
    return columns


def shard_schema(features: dict) -> pa.Schema:
    """The Arrow schema every shard of a dataset version has."""
    fields = []
    for name, spec in features.items():
        fields.append(pa.field(name, feature_arrow_type(spec), nullable=False))
        if spec["kind"] == "sequence":
            fields.append(pa.field(length_column(name), pa.int32(), nullable=False))
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
