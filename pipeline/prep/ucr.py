"""UCR/UEA ``.ts`` time-series files, parsed in Spark tasks.

``data.source.path`` is a glob or directory holding ``<Problem>_TRAIN.ts`` and
``<Problem>_TEST.ts``. Header lines (``@...``) are read once on the driver (a few lines);
data lines are parsed in tasks. Each case: dimensions separated by ``:``, values by
``,``, ``?`` (or ``NaN``) for missing, the class label last.

Files are taken as the archive ships them: a header that omits ``@equalLength`` /
``@seriesLength`` gets the length from the data (one length in every case: a fixed-length
series); missing values are rejected with the reason, or filled per
``data.sequence.missing``; class labels may be quoted strings with spaces; with
``@timeStamps true`` each value is ``(timestamp,value)``: the values are kept in file
order and the timestamps dropped.
"""
from __future__ import annotations

import logging
import math
import shlex

from pipeline.config import DataConfig
from pipeline.prep.raw import RawData, SourceError, list_input_files

log = logging.getLogger(__name__)

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
                header["classes"] = _labels(line.strip().split(None, 2)[2] if len(args) > 1 else "")
        elif key == "problemname":
            header["problem"] = " ".join(args)
    if "classes" not in header:
        raise SourceError(f"{path}: no '@classLabel true <labels...>' header; only labelled classification files are supported")
    header.setdefault("dimensions", 1 if header.get("univariate", True) else None)
    if header["dimensions"] is None:
        raise SourceError(f"{path}: multivariate file without '@dimensions N' header")
    return header


MISSING = ("reject", "interpolate", "mean")


def _labels(text: str) -> list[str]:
    """Header class labels: whitespace-separated, quoted where a label has spaces."""
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: take the words as they are
        return text.split()


def _unquote(label: str) -> str:
    label = label.strip()
    return label[1:-1] if len(label) >= 2 and label[0] == label[-1] and label[0] in "'\"" else label


def _split_outside_parentheses(text: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _value(token: str) -> float:
    token = token.strip()
    return math.nan if token == "?" else float(token)


def fill_missing(values: list[float], how: str) -> list[float] | None:
    """One dimension with its gaps filled (``interpolate``: linear between the nearest
    present values, the ends take the nearest one; ``mean``: the dimension's mean), or None
    when no value is present."""
    present = [i for i, v in enumerate(values) if not math.isnan(v)]
    if not present:
        return None
    if len(present) == len(values):
        return values
    if how == "mean":
        mean = math.fsum(values[i] for i in present) / len(present)
        return [mean if math.isnan(v) else v for v in values]
    out = list(values)
    for a, b in zip(present, present[1:]):
        for i in range(a + 1, b):
            out[i] = values[a] + (values[b] - values[a]) * (i - a) / (b - a)
    out[: present[0]] = [values[present[0]]] * present[0]
    out[present[-1] + 1 :] = [values[present[-1]]] * (len(values) - present[-1] - 1)
    return out


def parse_case(line: str, dims_expected: int, timestamps: bool = False,
               missing: str = "reject") -> tuple[str | None, list[float], int, int, str | None]:
    """One data line -> (label, channel-major values, length, dims, error).

    Missing values stay NaN with ``missing=reject`` (the row is rejected for them later),
    otherwise each dimension is filled by :func:`fill_missing`.
    """
    parts = _split_outside_parentheses(line.strip(), ":")
    if len(parts) < 2:
        return None, [], 0, 0, "no ':' separating values and label"
    label = _unquote(parts[-1])
    dims = parts[:-1]
    values: list[float] = []
    lengths = []
    for d, dim in enumerate(dims):
        if timestamps:  # (timestamp,value),(timestamp,value),...: the value after each pair's last comma
            pairs = [p.strip() for p in _split_outside_parentheses(dim, ",")]
            if not all(p.startswith("(") and p.endswith(")") and "," in p for p in pairs):
                return label, [], 0, len(dims), f"dimension {d + 1}: '@timeStamps true' needs (timestamp,value) pairs"
            tokens = [p[1:-1].rsplit(",", 1)[1] for p in pairs]
        else:
            tokens = dim.split(",")
        series = []
        for t in tokens:
            try:
                series.append(_value(t))
            except ValueError:
                return label, [], 0, len(dims), f"dimension {d + 1}: not a number {t.strip()!r}"
        if missing != "reject":
            series = fill_missing(series, missing)
            if series is None:
                return label, [], 0, len(dims), f"dimension {d + 1}: every value is missing"
        lengths.append(len(series))
        values.extend(series)
    if len(set(lengths)) > 1:
        return label, [], 0, len(dims), f"dimension lengths differ: {lengths}"
    if len(dims) != dims_expected:
        return label, values, lengths[0], len(dims), f"{len(dims)} dimensions, header says {dims_expected}"
    return label, values, lengths[0], len(dims), None



def parse_batches(batches, *, dims: int, timestamps: bool = False, missing: str = "reject"):
    """mapInArrow body: parse each data line."""
    import pyarrow as pa

    for batch in batches:
        files = batch.column("_file").to_pylist()
        lines = batch.column("value").to_pylist()
        out = {"_file": files, "_line": lines, "label": [], "_values": [], "_length": [], "_dims": [], "_error": []}
        for line in lines:
            label, values, length, d, error = parse_case(line, dims, timestamps, missing)
            out["label"].append(label)
            out["_values"].append(values)
            out["_length"].append(length)
            out["_dims"].append(d)
            out["_error"].append(error)
        yield pa.RecordBatch.from_pydict(out, schema=pa.schema([
            ("_file", pa.string()), ("_line", pa.string()), ("label", pa.string()), ("_values", pa.list_(pa.float64())),
            ("_length", pa.int32()), ("_dims", pa.int32()), ("_error", pa.string()),
        ]))


def read_ucr(spark, data: DataConfig, trained: dict | None = None) -> RawData:
    """``trained``: the model bundle when scoring (its series length and normalisation are
    the ones to apply, whatever this input's header says); None when preparing."""
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
        for key in ("dimensions", "classes", "equallength", "serieslength", "timestamps"):
            if h.get(key) != header.get(key):
                raise SourceError(f"{f}: header {key}={h.get(key)} differs from {first_file}'s {header.get(key)}")
    dims = header["dimensions"]
    seq = data.sequence
    parse = partial(parse_batches, dims=dims, timestamps=bool(header.get("timestamps")), missing=seq.missing)
    rows = lines.where(~is_meta).mapInArrow(parse, PARSED_DDL)
    rows = rows.withColumn("_source_split", F.when(F.lower(F.col("_file")).rlike(r"_test\.ts$"), "test").otherwise("train"))
    if trained is not None:  # scoring: the model's form (bundles without these keys: from the schema, per_channel)
        spec, fitted = trained["schema"]["features"]["series"], trained["featurizer"]["series"]
        fixed = fitted.get("length", spec["shape"][1] if spec["kind"] == "tensor" else None)
        normalize = fitted.get("normalize", "per_channel")
    else:
        fixed, normalize = _series_length(rows, header, files), seq.normalize
    builder = features.Series(dims, seq.min_length, seq.max_length, fixed, normalize=normalize)
    return RawData(rows, ["_file", "_line"], "label", ["_line"], files, [builder], classes=header["classes"], source_split="_source_split")


def _series_length(rows, header: dict, files: list[str]) -> int | None:
    """The fixed series length, or None for variable-length series.

    The header decides when it says ``@equalLength false`` or gives ``@seriesLength``
    with ``@equalLength true``; otherwise the data does: one length in every well-formed
    case is a fixed length (the common length when the header insists on equal length).
    """
    from pyspark.sql import functions as F

    if header.get("equallength") is False:
        return None
    if header.get("equallength") and header.get("serieslength"):
        return header["serieslength"]
    counts = rows.where(F.col("_error").isNull() & (F.col("_length") > 0)).groupBy("_length").count().orderBy(F.desc("count")).collect()
    if not counts or (len(counts) > 1 and not header.get("equallength")):
        return None
    if len(counts) == 1:
        log.info("%s: no '@seriesLength' in the header; every series has %d steps: a fixed-length series", files[0], counts[0]["_length"])
    else:
        log.info("%s: '@equalLength true' without '@seriesLength'; the common length %d is the series length", files[0], counts[0]["_length"])
    return int(counts[0]["_length"])
