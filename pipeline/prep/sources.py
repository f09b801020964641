"""Reading raw sources into a DataFrame of string columns plus a malformed-row marker."""
from __future__ import annotations

import glob
import os
from pathlib import Path

from pipeline.config import SourceConfig

CORRUPT_COLUMN = "_corrupt_record"


class SourceError(ValueError):
    """An input that cannot be read; the message names the path and what to do."""


def list_input_files(path: str) -> list[str]:
    """All files a source path covers (a file, a directory tree or a glob), sorted."""
    if any(ch in path for ch in "*?["):
        files = [p for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
    elif os.path.isdir(path):
        files = [str(p) for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith((".", "_"))]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise SourceError(f"data.source.path {path!r} does not exist; check the path in the config")
    if not files:
        raise SourceError(f"data.source.path {path!r} matches no files")
    return sorted(files)


def read_csv(spark, source: SourceConfig):
    """Read a CSV as all-string columns, keeping malformed lines instead of dropping them.

    Every value stays a string so validation, not the parser, decides what is bad and
    says why. Headerless files get columns ``c0..cN-1``, N taken from the first line.
    Lines with a different number of fields keep their raw text in ``_corrupt_record``.
    """
    from pyspark.sql.types import StringType, StructField, StructType

    path = source.path
    options = {"header": str(source.header).lower(), "mode": "PERMISSIVE", "encoding": "UTF-8"}
    probe = spark.read.options(**options).csv(path)
    names = probe.columns if source.header else [f"c{i}" for i in range(len(probe.columns))]
    if not names:
        raise SourceError(f"{path}: no columns found; is the file empty?")
    schema = StructType([StructField(n, StringType()) for n in names] + [StructField(CORRUPT_COLUMN, StringType())])
    df = (
        spark.read.options(**options, columnNameOfCorruptRecord=CORRUPT_COLUMN)
        .schema(schema)
        .csv(path)
    )
    return df, names


def read_source(spark, source: SourceConfig):
    """Return ``(df, columns)`` for the configured source: string columns + corrupt marker."""
    if source.path is None:
        raise SourceError("data.source.path is not set; name the input file or directory in the config")
    list_input_files(source.path)
    if source.type == "csv":
        return read_csv(spark, source)
    raise SourceError(f"data.source.type {source.type!r} is not implemented yet")
