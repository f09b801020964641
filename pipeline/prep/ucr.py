"""UCR/UEA ``.ts`` time-series files, parsed in Spark tasks.

``data.source.path`` is a glob or directory holding ``<Problem>_TRAIN.ts`` and
``<Problem>_TEST.ts``. Header lines (``@...``) are read once on the driver (a few lines);
data lines are parsed in tasks. Each case: dimensions separated by ``:``, values by
``,``, ``?`` for missing, the class label last.
"""
from __future__ import annotations

import math

from pipeline.config import DataConfig
from pipeline.prep.sources import RawData, SourceError, list_input_files

PARSED_DDL = "_file string, _line string, label string, _values array<double>, _length int, _dims int, _error string"


def parse_header(lines: list[str], path: str) -> dict:
    """The header keywords of one file (case-insensitive), typed."""
    header: dict = {}
    for line in lines:
        parts = line.strip().split()
        key = parts[0][1:].lower()
        args = parts[1:]
        if key in ("univariate", "equallength", "timestamps", "missing"):
            header[key] = bool(args) and args[0].lower() == "true"
        elif key in ("serieslength", "dimensions"):
            try:
                header[key] = int(args[0])
            except (IndexError, ValueError):
                raise SourceError(f"{path}: header line {line.strip()!r} needs an integer") from None
        elif key == "classlabel":
            if args and args[0].lower() == "true":
                header["classes"] = args[1:]
        elif key == "problemname":
            header["problem"] = " ".join(args)
    if "classes" not in header:
        raise SourceError(f"{path}: no '@classLabel true <labels...>' header; only labelled classification files are supported")
    header.setdefault("dimensions", 1 if header.get("univariate", True) else None)
    if header["dimensions"] is None:
        raise SourceError(f"{path}: multivariate file without '@dimensions N' header")
    return header


def parse_case(line: str, dims_expected: int) -> tuple[str | None, list[float], int, int, str | None]:
    """One data line -> (label, channel-major values, length, dims, error)."""
    parts = line.strip().split(":")
    if len(parts) < 2:
        return None, [], 0, 0, "no ':' separating values and label"
    label = parts[-1].strip()
    dims = parts[:-1]
    values: list[float] = []
    lengths = []
    for d, dim in enumerate(dims):
        tokens = dim.split(",")
        lengths.append(len(tokens))
        for t in tokens:
            t = t.strip()
            if t == "?":
                values.append(math.nan)
                continue
            try:
                values.append(float(t))
            except ValueError:
                return label, [], 0, len(dims), f"dimension {d + 1}: not a number {t!r}"
    if len(set(lengths)) > 1:
        return label, [], 0, len(dims), f"dimension lengths differ: {lengths}"
    if len(dims) != dims_expected:
        return label, values, lengths[0], len(dims), f"{len(dims)} dimensions, header says {dims_expected}"
    return label, values, lengths[0], len(dims), None


def parse_batches(batches, *, dims: int):
    """mapInArrow body: parse each data line."""
    import pyarrow as pa

    for batch in batches:
        files = batch.column("_file").to_pylist()
        lines = batch.column("value").to_pylist()
        out = {"_file": files, "_line": lines, "label": [], "_values": [], "_length": [], "_dims": [], "_error": []}
        for line in lines:
            label, values, length, d, error = parse_case(line, dims)
            out["label"].append(label)
            out["_values"].append(values)
            out["_length"].append(length)
            out["_dims"].append(d)
            out["_error"].append(error)
        yield pa.RecordBatch.from_pydict(out, schema=pa.schema([
            ("_file", pa.string()), ("_line", pa.string()), ("label", pa.string()), ("_values", pa.list_(pa.float64())),
            ("_length", pa.int32()), ("_dims", pa.int32()), ("_error", pa.string()),
        ]))


def read_ucr(spark, data: DataConfig) -> RawData:
    from functools import partial

    from pyspark.sql import functions as F

    from pipeline.prep import features

    files = [f.uri for f in list_input_files(data.source.path) if f.uri.lower().endswith(".ts")]
    if not files:
        raise SourceError(f"{data.source.path}: no .ts files found")
    lines = spark.read.text(files).withColumn("_file", F.input_file_name())
    is_meta = F.col("value").startswith("@") | F.col("value").startswith("#") | (F.trim("value") == "")
    headers: dict[str, list[str]] = {}
    for r in lines.where(F.col("value").startswith("@")).collect():
        headers.setdefault(r["_file"], []).append(r["value"])
    parsed = {f: parse_header(h, f) for f, h in headers.items()}
    missing = [f for f in files if not any(k.endswith(f.split("/")[-1]) for k in parsed)]
    if missing:
        raise SourceError(f"{missing[0]}: no '@' header lines; is it a .ts file?")
    first_file, header = next(iter(parsed.items()))
    for f, h in parsed.items():
        for key in ("dimensions", "classes", "equallength", "serieslength"):
            if h.get(key) != header.get(key):
                raise SourceError(f"{f}: header {key}={h.get(key)} differs from {first_file}'s {header.get(key)}")
    dims = header["dimensions"]
    fixed = header.get("serieslength") if header.get("equallength") else None
    rows = lines.where(~is_meta).mapInArrow(partial(parse_batches, dims=dims), PARSED_DDL)
    rows = rows.withColumn("_source_split", F.when(F.lower(F.col("_file")).rlike(r"_test\.ts$"), "test").otherwise("train"))
    seq = data.sequence
    builder = features.Series(dims, seq.min_length, seq.max_length, fixed)
    return RawData(rows, ["_file", "_line"], "label", ["_line"], files, [builder], classes=header["classes"], source_split="_source_split")

