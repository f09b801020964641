"""The featurizer of :mod:`pipeline.prep.features` and the checks of
:mod:`pipeline.prep.validate`, applied as plain numbers to rows read by
:mod:`pipeline.predict.inputs`.

Each builder mirrors its Spark namesake: ``reasons`` gives every row's first failed check
(``(code, detail)`` with Spark's wording, or None), ``outputs`` the featurized columns of
the good rows in the Arrow types score's featurized DataFrame has (``array<int>`` ->
``list<int32>``, ``array<float>`` -> ``list<float>``), standardised with the bundle's
fitted means and stds in float64 and rounded to float32 as Spark does. The model then sees
the same tensors as under score. ``standardize=False`` gives the values before any
standardisation or per-series normalisation instead (an exported model's input).
"""
from __future__ import annotations

import decimal
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.config import DataConfig
from pipeline.predict.inputs import RawRows
from pipeline.predict.spark_compat import java_double, strings, to_double, trim
from pipeline.prep.features import OOV_INDEX
from pipeline.prep.raw import SourceError
from pipeline.schema import categorical_feature, length_column, sequence_feature, tensor_feature

_INLINE_TYPED_COLUMNS = 128  # pipeline.prep.validate: typed columns up to this many are checked one by one


def first_reasons(*per_check: list) -> list:
    """Per row, the first reason among the checks' per-row reasons."""
    return [next((r for r in row if r is not None), None) for row in zip(*per_check)]


def _reason(code: str, value=None) -> tuple[str, str]:
    """``validate.check_reason``: the code, and the code with the offending value."""
    return code, code if value is None else f"{code}: {'null' if value is None else value}"


def _number(value) -> float | None:
    """``try_cast(value AS double)`` of a typed value."""
    if value is None or isinstance(value, (int, float, decimal.Decimal)):
        return None if value is None else float(value)
    return to_double(value)


def numeric_reasons(raw: RawRows, columns: list[str], low: float, high: float, integer: bool, typed: bool) -> list:
    """:func:`pipeline.prep.validate.numeric_reason` per row: the first bad value among
    ``columns`` (missing, not a number, NaN or infinite, out of bounds, not an integer)."""
    bounded = math.isfinite(low) or math.isfinite(high)
    inline = typed and len(columns) <= _INLINE_TYPED_COLUMNS  # Spark's per-column CASE form
    out = [None] * raw.rows
    for c in columns:
        values = raw.table.column(c).to_pylist()
        text = strings(raw.table.column(c), c) if typed else values
        for i, (v, s) in enumerate(zip(values, text)):
            if out[i] is not None:
                continue
            if inline:
                x = None if v is None else _number(v)
                problem = "missing value" if v is None else "not a number" if x is None else None
                shown = None if v is None else s  # a typed null's reason carries no value
            else:
                t = trim(s)
                x = to_double(t)
                problem = "missing value" if s is None or t == "" else "not a number" if x is None else None
                shown = "null" if s is None else s
            if problem is None:
                if math.isnan(x) or math.isinf(x):
                    problem = "NaN or infinite"
                elif bounded and (x < low or x > high):
                    problem = f"outside [{low:g}, {high:g}]"
                elif integer and x != math.floor(x):
                    problem = "not an integer"
                if inline:
                    shown = java_double(x)  # the checks past "not a number" show the double
            if problem is not None:
                code = f"{c}: {problem}"
                out[i] = (code, code if shown is None else f"{code}: {shown}")
    return out


def _values(raw: RawRows, columns: list[str], rows: np.ndarray, typed: bool) -> np.ndarray:
    """The good rows' values of ``columns`` as float64 [rows, columns]."""
    out = np.empty((len(rows), len(columns)), np.float64)
    for j, c in enumerate(columns):
        values = raw.table.column(c).take(pa.array(rows, pa.int64())).to_pylist()
        out[:, j] = [_number(v) if typed else to_double(trim(v)) for v in values]
    return out


def _standardized(x: np.ndarray, fitted: dict, channel: np.ndarray) -> np.ndarray:
    """``features._standardize``: (x - mean[channel]) / std[channel] in float64, then float32."""
    mean, std = np.asarray(fitted["mean"], np.float64), np.asarray(fitted["std"], np.float64)
    return ((x - mean[channel]) / std[channel]).astype(np.float32)


def _fixed_lists(x: np.ndarray, kind: pa.DataType) -> pa.Array:
    """[rows, n] -> a list column (Spark's arrays reach Arrow as variable-size lists)."""
    rows, n = x.shape
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * n)
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1), kind))


@dataclass
class TensorFromColumns:
    name: str
    columns: list[str]
    shape: list[int]
    min: float
    max: float
    dtype: str
    typed: bool = False

    def reasons(self, raw: RawRows) -> list:
        return numeric_reasons(raw, self.columns, self.min, self.max, self.dtype == "uint8", self.typed)

    def outputs(self, raw: RawRows, rows: np.ndarray, fitted: dict, standardize: bool = True) -> dict:
        x = _values(raw, self.columns, rows, self.typed)
        if not standardize:
            return {self.name: _fixed_lists(x.astype(np.float32), pa.float32())}
        if fitted["applied_in"] != "prepare":  # uint8: raw ints, standardised by the model
            return {self.name: _fixed_lists(np.trunc(x).astype(np.int32), pa.int32())}
        channel = np.arange(x.shape[1]) // math.prod(self.shape[1:])
        return {self.name: _fixed_lists(_standardized(x, fitted, channel), pa.float32())}

    def spec(self, fitted: dict) -> dict:
        return tensor_feature(self.dtype, self.shape)


@dataclass
class NumericColumns:
    columns: list[str]
    typed: bool
    name: str = "numeric"

    def reasons(self, raw: RawRows) -> list:
        return numeric_reasons(raw, self.columns, -math.inf, math.inf, False, self.typed)

    def outputs(self, raw: RawRows, rows: np.ndarray, fitted: dict, standardize: bool = True) -> dict:
        x = _values(raw, self.columns, rows, self.typed)
        if not standardize:
            return {self.name: _fixed_lists(x.astype(np.float32), pa.float32())}
        return {self.name: _fixed_lists(_standardized(x, fitted, np.arange(x.shape[1])), pa.float32())}

    def spec(self, fitted: dict) -> dict:
        return {**tensor_feature("float32", [len(self.columns)]), "columns": self.columns}


@dataclass
class CategoricalColumns:
    columns: list[str]
    top_k: int
    name: str = "categorical"

    def reasons(self, raw: RawRows) -> list:
        return [None] * raw.rows

    def outputs(self, raw: RawRows, rows: np.ndarray, fitted: dict, standardize: bool = True) -> dict:
        codes = np.zeros((len(rows), len(self.columns)), np.int32)
        taken = pa.array(rows, pa.int64())
        for j, c in enumerate(self.columns):
            index = {w: i + 1 for i, w in enumerate(fitted["vocabularies"][c])}
            codes[:, j] = [index.get(trim(v), OOV_INDEX) for v in strings(raw.table.column(c).take(taken), c)]
        return {self.name: _fixed_lists(codes, pa.int32())}

    def spec(self, fitted: dict) -> dict:
        return categorical_feature(self.columns, [len(fitted["vocabularies"][c]) + 1 for c in self.columns])


@dataclass
class DecodedImage:
    shape: list[int]
    name: str = "image"

    def reasons(self, raw: RawRows) -> list:
        return [None if e is None else _reason("image: undecodable", e) for e in raw.parsed["_error"]]

    def outputs(self, raw: RawRows, rows: np.ndarray, fitted: dict, standardize: bool = True) -> dict:
        pixels = np.stack([raw.parsed["_image"][i] for i in rows]) if len(rows) else np.zeros((0, math.prod(self.shape)))
        return {self.name: _fixed_lists(pixels.astype(np.int32), pa.int32())}

    def spec(self, fitted: dict) -> dict:
        return tensor_feature("uint8", self.shape)


@dataclass
class Series:
    dims: int
    min_length: int
    max_length: int
    fixed_length: int | None
    normalize: str = "per_channel"
    name: str = "series"

    def reasons(self, raw: RawRows) -> list:
        p = raw.parsed
        out = []
        for values, length, dims, error in zip(p["_values"], p["_length"], p["_dims"], p["_error"]):
            x = np.asarray(values, np.float64)
            checks = [
                (error is not None, "series: malformed", error),
                (dims != self.dims, f"series: expected {self.dims} dimensions", dims),
                (length < self.min_length or length > self.max_length, f"series: length outside [{self.min_length}, {self.max_length}]", length),
                (bool(np.isnan(x).any()), "series: missing value ('?' or NaN; data.sequence.missing=interpolate fills gaps)", None),
                (bool(np.isinf(x).any()), "series: infinite value", None),
                (self.fixed_length is not None and length != self.fixed_length, f"series: expected length {self.fixed_length}", length),
            ]
            out.append(next((_reason(code, value) for failed, code, value in checks if failed), None))
        return out

    def outputs(self, raw: RawRows, rows: np.ndarray, fitted: dict, standardize: bool = True) -> dict:
        from pipeline.prep.features import z_normalize_batches

        values = [raw.parsed["_values"][i] for i in rows]
        lengths = [raw.parsed["_length"][i] for i in rows]
        if not standardize:
            fitted = {"mean": [0.0] * self.dims, "std": [1.0] * self.dims}
        elif self.normalize == "per_series":
            batch = pa.RecordBatch.from_arrays([pa.array(values, pa.list_(pa.float64())), pa.array(lengths, pa.int32())],
                                               names=["_values", "_length"])
            values = next(z_normalize_batches([batch], dims=self.dims)).column("_values").to_pylist()
        if self.fixed_length is not None:
            x = np.asarray(values, np.float64).reshape(len(rows), self.dims * self.fixed_length)
            channel = np.arange(x.shape[1]) // self.fixed_length
            return {self.name: _fixed_lists(_standardized(x, fitted, channel), pa.float32())}
        series = []
        for row, length in zip(values, lengths):  # channel-major (d * L + t) -> time-major (t * D + d)
            time_major = np.asarray(row, np.float64).reshape(self.dims, length).T.reshape(-1)
            series.append(_standardized(time_major, fitted, np.arange(len(time_major)) % self.dims))
        return {self.name: pa.array(series, pa.list_(pa.float32())),
                length_column(self.name): pa.array(lengths, pa.int32())}

    def spec(self, fitted: dict) -> dict:
        if self.fixed_length is not None:
            return tensor_feature("float32", [self.dims, self.fixed_length])
        return sequence_feature(self.dims)


def builders(data: DataConfig, raw: RawRows, bundle: dict) -> list:
    """The feature builders ``data`` asks for (as :func:`pipeline.prep.sources.read_source`
    builds them; a series takes the model's length and normalisation, as score does)."""
    kind = data.source.type
    if kind == "images":
        img = data.image
        return [DecodedImage([img.channels, img.height, img.width])]
    if kind == "ucr":
        spec, fitted = bundle["schema"]["features"]["series"], bundle["featurizer"]["series"]
        fixed = fitted.get("length", spec["shape"][1] if spec["kind"] == "tensor" else None)
        seq = data.sequence
        return [Series(raw.parsed["dims"], seq.min_length, seq.max_length, fixed, fitted.get("normalize", "per_channel"))]
    typed = kind != "csv"
    if data.tensor is not None:
        t = data.tensor
        columns = list(t.columns) if t.columns is not None else [
            c for c in raw.columns if c != data.source.label and c not in (data.source.key or [])]
        absent = [c for c in columns if c not in raw.columns]
        if absent:
            raise SourceError(f"data.tensor.columns names column(s) {absent[:8]} not in the input; columns are {raw.columns[:8]}")
        if len(columns) != math.prod(t.shape):
            raise SourceError(f"data.tensor.shape {list(t.shape)} needs {math.prod(t.shape)} columns but {len(columns)} were "
                              "found; fix data.tensor.shape or data.tensor.columns")
        return [TensorFromColumns(t.name, columns, list(t.shape), t.min, t.max, t.dtype, typed)]
    if data.table is not None and (data.table.numeric or data.table.categorical):
        absent = [c for c in [*data.table.numeric, *data.table.categorical] if c not in raw.columns]
        if absent:
            raise SourceError(f"data.table names column(s) {absent[:8]} not in the input; columns are {raw.columns[:8]}")
        out = []
        if data.table.numeric:
            out.append(NumericColumns(list(data.table.numeric), typed))
        if data.table.categorical:
            out.append(CategoricalColumns(list(data.table.categorical), data.table.top_k))
        return out
    raise SourceError("a table source needs data.tensor (numeric columns forming a tensor) or data.table (numeric / categorical columns)")
