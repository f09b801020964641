"""Reading raw sources into one DataFrame shape the rest of prepare understands.

Every source returns a :class:`~pipeline.prep.raw.RawData`: the rows (raw values kept for ``rejected/``),
the label and key columns, the input files (for the fingerprint), and the feature
builders that turn raw columns into shard features.
"""
from __future__ import annotations

import math

from pipeline.config import DataConfig
from pipeline.prep.raw import CORRUPT_COLUMN, RawData, SourceError, list_input_files


def read_csv(spark, data: DataConfig):
    """Read a CSV as all-string columns, keeping malformed lines instead of dropping them.

    Every value stays a string so validation, not the parser, decides what is bad and
    says why. Headerless files get columns ``c0..cN-1``, N taken from the first line.
    Lines with a different number of fields keep their raw text in ``_corrupt_record``.
    """
    from pyspark.sql.types import StringType, StructField, StructType

    source = data.source
    options = {"header": str(source.header).lower(), "mode": "PERMISSIVE", "encoding": "UTF-8", "sep": source.delimiter}
    probe = spark.read.options(**options).csv(source.path)
    names = probe.columns if source.header else [f"c{i}" for i in range(len(probe.columns))]
    if not names or (len(names) == 1 and probe.limit(1).count() == 0):
        raise SourceError(f"{source.path}: no columns found; is the file empty?")
    schema = StructType([StructField(n, StringType()) for n in names] + [StructField(CORRUPT_COLUMN, StringType())])
    df = spark.read.options(**options, columnNameOfCorruptRecord=CORRUPT_COLUMN).schema(schema).csv(source.path)
    return df, names


def read_json(spark, data: DataConfig):
    """Read JSON lines; malformed lines keep their text in ``_corrupt_record``."""
    from pyspark.sql.types import StructField

    path = data.source.path
    probe = spark.read.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT_COLUMN).json(path)
    names = [c for c in probe.columns if c != CORRUPT_COLUMN]
    if not names:
        raise SourceError(f"{path}: no JSON objects found; is the file empty or not JSON lines?")
    schema = probe.schema
    if CORRUPT_COLUMN not in probe.columns:
        from pyspark.sql.types import StringType

        schema = schema.add(StructField(CORRUPT_COLUMN, StringType()))
    df = spark.read.schema(schema).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT_COLUMN).json(path)
    return df, names


def read_table(spark, data: DataConfig, require_label: bool = True) -> RawData:
    """CSV, JSON lines or Parquet; features from ``data.tensor`` or ``data.table``.

    ``require_label=False`` (scoring new data) accepts input without the label column.
    """
    from pyspark.sql import functions as F

    from pipeline.prep import features, validate

    source = data.source
    files = [f.uri for f in list_input_files(source.path)]
    if source.type == "csv":
        df, columns = read_csv(spark, data)
    elif source.type == "json":
        df, columns = read_json(spark, data)
    else:
        df = spark.read.parquet(source.path)
        columns = df.columns
        df = df.withColumn(CORRUPT_COLUMN, F.lit(None).cast("string"))
    if not columns:
        raise SourceError(f"{source.path}: no columns found")
    if require_label or source.label in columns:
        _require_columns(source.path, columns, [source.label], "data.source.label")
    else:
        df = df.withColumn(source.label, F.lit(None).cast("string"))
    key = list(source.key or columns)
    _require_columns(source.path, columns, key, "data.source.key")
    typed = source.type != "csv"
    builders = []
    if data.tensor is not None:
        t = data.tensor
        tensor_cols = list(t.columns) if t.columns is not None else [c for c in columns if c != source.label and c not in (source.key or [])]
        _require_columns(source.path, columns, tensor_cols, "data.tensor.columns")
        size = math.prod(t.shape)
        if len(tensor_cols) != size:
            raise SourceError(
                f"data.tensor.shape {list(t.shape)} needs {size} columns but {len(tensor_cols)} were found "
                f"({_short(tensor_cols)}); fix data.tensor.shape or data.tensor.columns"
            )
        builders.append(features.TensorFromColumns(t.name, tensor_cols, list(t.shape), t.min, t.max, t.dtype, typed=typed))
    elif data.table is not None and (data.table.numeric or data.table.categorical):
        _require_columns(source.path, columns, data.table.numeric, "data.table.numeric")
        _require_columns(source.path, columns, data.table.categorical, "data.table.categorical")
        if data.table.numeric:
            builders.append(features.NumericColumns(list(data.table.numeric), typed=typed))
        if data.table.categorical:
            builders.append(features.CategoricalColumns(list(data.table.categorical), data.table.top_k))
    else:
        raise SourceError("a table source needs data.tensor (numeric columns forming a tensor) or data.table (numeric / categorical columns)")
    malformed = validate.malformed_check(len(columns)) if source.type == "csv" else validate.Check(
        F.col(CORRUPT_COLUMN).isNotNull(), "malformed line: not a JSON object", F.col(CORRUPT_COLUMN)
    )
    return RawData(df, columns, source.label, key, files, builders, [validate.check_reason(malformed)])


def read_source(spark, data: DataConfig, require_label: bool = True, trained: dict | None = None) -> RawData:
    """Dispatch on ``data.source.type``; ``require_label`` as in :func:`read_table`;
    ``trained``: when scoring, the model bundle (a source whose form is decided from the
    data, such as a series' length, takes the model's instead)."""
    source = data.source
    if source.type == "synthetic":
        from pipeline.prep.synthetic import read_synthetic

        return read_synthetic(spark, data)
    if source.path is None:
        raise SourceError("data.source.path is not set; name the input file or directory in the config")
    if source.type in ("csv", "json", "parquet"):
        return read_table(spark, data, require_label)
    if source.type == "images":
        from pipeline.prep.images import read_images

        return read_images(spark, data)
    if source.type == "ucr":
        from pipeline.prep.ucr import read_ucr

        return read_ucr(spark, data, trained)
    raise SourceError(f"data.source.type {source.type!r} is not supported")


def _require_columns(path: str, columns: list[str], wanted: list[str], key: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise SourceError(f"{path}: {key} names column(s) {_short(missing)} not in the input; columns are {_short(columns)}")


def _short(items, limit: int = 8) -> str:
    items = list(items)
    return str(items) if len(items) <= limit else f"[{', '.join(items[:limit])}, ... ({len(items)} in all)]"
