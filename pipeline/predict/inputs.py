"""Raw input read without Spark (pyarrow, Pillow, the standard library), into the rows
score's source readers give Spark (:mod:`pipeline.prep.sources`, :mod:`~pipeline.prep.images`,
:mod:`~pipeline.prep.ucr`): the same column names, values and keys, so validation, the
featurizer and the row id see the same thing in both.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pyarrow as pa

from pipeline import storage
from pipeline.config import DataConfig
from pipeline.prep.raw import SourceError, list_input_files

_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}  # the Hadoop codecs Spark picks by extension
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # Hadoop's line reader: \n, \r\n or \r
_IMAGE_SUFFIXES = (".png", ".PNG", ".jpg", ".JPG", ".jpeg", ".JPEG", ".bmp", ".gif")  # prep.images.IMAGE_GLOB


@dataclass
class RawRows:
    """One input's rows before validation (what :class:`pipeline.prep.raw.RawData` holds in Spark).

    Args:
        table: the raw columns, in Spark's types (csv: strings; json: long, double,
            boolean, string; parquet: as stored).
        columns: the columns a user recognises (kept in the rejected file).
        label: the label column (in ``table``; all null when the input has none).
        key: columns hashed into the row id.
        parsed: per-row values a source parsed that are no table column (decoded images,
            parsed series), by name.
        malformed: the source's own reason per row (code, detail), or None.
    """

    table: pa.Table
    columns: list[str]
    label: str
    key: list[str]
    parsed: dict = field(default_factory=dict)
    malformed: list | None = None

    @property
    def rows(self) -> int:
        return self.table.num_rows

    def head(self, n: int) -> "RawRows":
        """The first ``n`` rows."""
        parsed = {k: v[:n] if isinstance(v, list) else v for k, v in self.parsed.items()}
        malformed = None if self.malformed is None else self.malformed[:n]
        return RawRows(self.table.slice(0, n), self.columns, self.label, self.key, parsed, malformed)


def read_input(data: DataConfig, path: str) -> RawRows:
    """The rows of ``path`` (a file, directory or glob) read as ``data.source`` says."""
    kind = data.source.type
    if kind in ("csv", "json", "parquet"):
        files = [f.uri for f in list_input_files(path)]
        return {"csv": _read_csv, "json": _read_json, "parquet": _read_parquet}[kind](files, data)
    if kind == "images":
        return _read_images(path, data)
    if kind == "ucr":
        return _read_ucr(path, data)
    raise SourceError(f"data.source.type {kind!r}: predict reads csv, json, parquet, images and ucr inputs; "
                      "score a synthetic source with the Spark job")


def _stream(location: str):
    suffix = next((s for s in _CODECS if location.endswith(s)), None)
    raw = storage.open_input(location)
    return pa.CompressedInputStream(raw, _CODECS[suffix]) if suffix else raw


def _read_text(location: str) -> list[str]:
    """A text file's lines (decompressed by extension), split where Spark splits lines."""
    with _stream(location) as f:
        return _LINE_BREAK.split(f.read().decode("utf-8"))


def _read_csv(files: list[str], data: DataConfig) -> RawRows:
    """All-string columns (``c0..cN-1`` without a header, N from the first line); lines with
    another number of fields are malformed rows, as Spark's PERMISSIVE mode keeps them."""
    import csv
    import io

    import pyarrow.csv as pacsv

    source = data.source
    head = b""
    with _stream(files[0]) as f:  # up to the first line break (a wide table's line can be long)
        while b"\n" not in head and (block := f.read(1 << 16)):
            head += block
    first = next(csv.reader(io.StringIO(head.decode("utf-8", errors="replace")), delimiter=source.delimiter), None)
    if not first:
        raise SourceError(f"{files[0]}: no columns found; is the file empty?")
    names = list(first) if source.header else [f"c{i}" for i in range(len(first))]
    tables, bad = [], []
    for location in files:
        invalid = []

        def keep(row, invalid=invalid):
            invalid.append(row.text)
            return "skip"

        with _stream(location) as f:
            table = pacsv.read_csv(
                f,
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if source.header else 0, use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=source.delimiter, invalid_row_handler=keep),
                convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, null_values=[""],
                                                     strings_can_be_null=True),
            )
        tables.append(table)
        bad += invalid
    good = pa.concat_tables(tables)
    # Malformed lines: Spark keeps the fields it could split (missing ones null) and the line.
    split = [(next(csv.reader([text], delimiter=source.delimiter), []) + [None] * len(names))[:len(names)] for text in bad]
    broken = pa.table({n: pa.array([row[i] or None for row in split], pa.string()) for i, n in enumerate(names)})
    code = f"malformed line: expected {len(names)} fields"
    malformed = [None] * good.num_rows + [(code, f"{code}: {text}") for text in bad]
    return _table_rows(pa.concat_tables([good, broken]), names, data, malformed)


class _Number(str):
    """A JSON number's text as written (Spark keeps it for a string column)."""

    is_int = False


class _Int(_Number):
    is_int = True


def _read_json(files: list[str], data: DataConfig) -> RawRows:
    """JSON lines, columns sorted by name and typed as Spark infers them (long, double,
    boolean, string: numbers mixed with text are text as written); a line that is not a
    JSON object is a malformed row."""
    records, lines = [], []
    for location in files:
        for line in _read_text(location):
            if not line.strip():
                continue
            try:
                value = json.loads(line, parse_int=_Int, parse_float=_Number)
            except ValueError:
                value = None
            records.append(value if isinstance(value, dict) else None)
            lines.append(line)
    names = sorted({k for r in records if r is not None for k in r})
    if not names:
        raise SourceError(f"{files[0]}: no JSON objects found; is the file empty or not JSON lines?")
    columns = {}
    for name in names:
        values = [None if r is None else r.get(name) for r in records]
        columns[name] = _json_column(name, values)
    code = "malformed line: not a JSON object"
    malformed = [None if r is not None else (code, f"{code}: {line}") for r, line in zip(records, lines)]
    return _table_rows(pa.table(columns), names, data, malformed)


def _json_column(name: str, values: list) -> pa.Array:
    present = [v for v in values if v is not None]
    if any(isinstance(v, (dict, list)) for v in present):
        raise SourceError(f"JSON field {name!r} holds nested objects or lists; predict reads flat JSON objects")
    kinds = {"bool" if isinstance(v, bool) else "long" if isinstance(v, _Number) and v.is_int else
             "double" if isinstance(v, _Number) else "string" for v in present}
    if kinds == {"long"}:
        return pa.array([None if v is None else int(v) for v in values], pa.int64())
    if kinds <= {"long", "double"} and kinds:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if kinds == {"bool"}:
        return pa.array(values, pa.bool_())
    return pa.array([None if v is None else ("true" if v is True else "false" if v is False else str(v)) for v in values], pa.string())


def _read_parquet(files: list[str], data: DataConfig) -> RawRows:
    import pyarrow.parquet as pq

    tables = []
    for location in files:
        with storage.open_input(location) as f:
            tables.append(pq.read_table(f))
    table = pa.concat_tables(tables, promote_options="permissive")
    return _table_rows(table, list(table.column_names), data, None)


def _table_rows(table: pa.Table, names: list[str], data: DataConfig, malformed: list | None) -> RawRows:
    source = data.source
    if source.label not in names:  # new data without labels: predicted, not counted in any accuracy
        table = table.append_column(source.label, pa.nulls(table.num_rows, pa.string()))
    key = list(source.key or names)
    missing = [c for c in key if c not in names]
    if missing:
        raise SourceError(f"data.source.key names column(s) {missing} not in the input; columns are {names[:8]}")
    return RawRows(table, names, source.label, key, malformed=malformed)


def _read_images(path: str, data: DataConfig) -> RawRows:
    """``root/<class>/.../*.png|jpg|...``: ``path`` (as Spark names it), the first folder as
    ``label``, the path under the root as the key, each image decoded by
    :func:`pipeline.prep.images.decode_image` (or its error kept: a rejected row)."""
    from pipeline.prep.images import decode_image

    root = storage.absolute(path).rstrip("/")
    files = [f.uri for f in list_input_files(root) if f.uri.endswith(_IMAGE_SUFFIXES)]
    if not files:
        raise SourceError(f"{root}: no image files (png, jpg, bmp, gif) found; expected root/<class>/<image>")
    relpaths = [storage.relative(f, root) if f != root else "" for f in files]
    labels = [r.split("/", 1)[0] if "/" in r else None for r in relpaths]
    img = data.image
    pixels, errors = [], []
    for location in files:
        content = storage.read_bytes(location)
        try:
            pixels.append(decode_image(content, img.channels, img.height, img.width).reshape(-1))
            errors.append(None)
        except Exception as err:  # noqa: BLE001 -- any decoder failure is a rejected row, as in prepare
            pixels.append(None)
            errors.append(f"{type(err).__name__}: {err}")
    table = pa.table({"path": [_spark_path(f) for f in files], "label": pa.array(labels, pa.string()), "relpath": relpaths})
    return RawRows(table, ["path", "label"], "label", ["relpath"], parsed={"_image": pixels, "_error": errors})


def _spark_path(location: str) -> str:
    """A file's name as Spark's binaryFile source writes it (``file:/abs/path`` locally)."""
    return "file:" + location if not storage.scheme(location) else location


def _read_ucr(path: str, data: DataConfig) -> RawRows:
    """Data lines of ``.ts`` files parsed by :func:`pipeline.prep.ucr.parse_case` (the
    header read per file, as :func:`~pipeline.prep.ucr.read_ucr` reads it)."""
    from pipeline.prep.ucr import parse_case, parse_header

    files = [f.uri for f in list_input_files(path) if f.uri.lower().endswith(".ts")]
    if not files:
        raise SourceError(f"{path}: no .ts files found")
    texts = {f: _read_text(f) for f in files}
    headers = {}
    for f, lines in texts.items():
        found = [line for line in lines if line.startswith("@")]
        if not found:
            raise SourceError(f"{f}: no '@' header lines; is it a .ts file?")
        headers[f] = parse_header(found, f)
    first_file, header = next(iter(headers.items()))
    for f, h in headers.items():
        for key in ("dimensions", "classes", "equallength", "serieslength", "timestamps"):
            if h.get(key) != header.get(key):
                raise SourceError(f"{f}: header {key}={h.get(key)} differs from {first_file}'s {header.get(key)}")
    names, lines, parsed = [], [], {"_values": [], "_length": [], "_dims": [], "_error": []}
    labels = []
    for f, text in texts.items():
        for line in text:
            if line.startswith(("@", "#")) or line.strip(" ") == "":
                continue
            label, values, length, dims, error = parse_case(line, header["dimensions"], bool(header.get("timestamps")),
                                                            data.sequence.missing)
            names.append(_file_uri(f))
            lines.append(line)
            labels.append(label)
            for k, v in zip(parsed, (values, length, dims, error)):
                parsed[k].append(v)
    table = pa.table({"_file": pa.array(names, pa.string()), "_line": pa.array(lines, pa.string()),
                      "label": pa.array(labels, pa.string())})
    parsed["dims"] = header["dimensions"]
    return RawRows(table, ["_file", "_line"], "label", ["_line"], parsed=parsed)


def _file_uri(location: str) -> str:
    """A file's name as Spark's ``input_file_name()`` gives it (``file:///abs/path`` locally)."""
    return "file://" + location if not storage.scheme(location) else location
