"""What Spark does to a value, redone in numpy: the row id (``xxhash64``), a value cast to
string, a string cast to double and ``trim``.

Score computes the row id as ``xxhash64(salt, coalesce(cast(key AS string), ''), ...)``;
predict computes the same number, so the two outputs join on ``row_id``. Spark's XXH64 is
the standard 64-bit xxHash: the salt (an int literal) is hashed as 4 little-endian bytes
with seed 42, and each key column's UTF-8 bytes are hashed with the previous hash as seed.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pyarrow as pa

SPARK_HASH_SEED = 42
_P1 = np.uint64(11400714785074694791)
_P2 = np.uint64(14029467366897019727)
_P3 = np.uint64(1609587929392839161)
_P4 = np.uint64(9650029242287828579)
_P5 = np.uint64(2870177450012600261)
_INT32 = (-(2**31), 2**31 - 1)


class UnsupportedKeyType(ValueError):
    """A column type whose text form in Spark predict does not reproduce (a user error: one
    line naming the column, see :func:`pipeline.errors.is_user_error`)."""


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _round(acc: np.ndarray, lane: np.ndarray) -> np.ndarray:
    return _rotl(acc + lane * _P2, 31) * _P1


def xxh64(data: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """XXH64 of each row of ``data`` (uint8 [n, length], one input per row) with that row's
    seed (uint64 [n]); uint64 [n]."""
    with np.errstate(over="ignore"):
        n, length = data.shape
        seeds = seeds.astype(np.uint64)
        words = lambda start, width: np.ascontiguousarray(data[:, start:start + width]).view("<u8" if width == 8 else "<u4")[:, 0].astype(np.uint64)
        pos = 0
        if length >= 32:
            v = [seeds + _P1 + _P2, seeds + _P2, seeds.copy(), seeds - _P1]
            while pos + 32 <= length:
                v = [_round(v[i], words(pos + 8 * i, 8)) for i in range(4)]
                pos += 32
            h = _rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)
            for lane in v:
                h = (h ^ _round(np.zeros(n, np.uint64), lane)) * _P1 + _P4
        else:
            h = seeds + _P5
        h = h + np.uint64(length)
        while pos + 8 <= length:
            h = _rotl(h ^ _round(np.zeros(n, np.uint64), words(pos, 8)), 27) * _P1 + _P4
            pos += 8
        if pos + 4 <= length:
            h = _rotl(h ^ (words(pos, 4) * _P1), 23) * _P2 + _P3
            pos += 4
        while pos < length:
            h = _rotl(h ^ (data[:, pos].astype(np.uint64) * _P5), 11) * _P1
            pos += 1
        h ^= h >> np.uint64(33)
        h *= _P2
        h ^= h >> np.uint64(29)
        h *= _P3
        h ^= h >> np.uint64(32)
    return h


def hash_strings(values: list[str], seeds: np.ndarray) -> np.ndarray:
    """XXH64 of each string's UTF-8 bytes with its row's seed; rows of one byte length
    are hashed together."""
    encoded = [v.encode("utf-8") for v in values]
    lengths = np.fromiter((len(b) for b in encoded), np.int64, len(encoded))
    out = np.empty(len(encoded), np.uint64)
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        flat = b"".join(encoded[i] for i in rows)
        data = np.frombuffer(flat, np.uint8).reshape(len(rows), int(length))
        out[rows] = xxh64(data, seeds[rows])
    return out


def row_ids(salt: int, keys: list[list[str | None]], rows: int) -> np.ndarray:
    """Spark's ``xxhash64(lit(salt), coalesce(k1, ''), coalesce(k2, ''), ...)`` as int64 [rows];
    ``keys``: each key column's values as Spark's strings (None for null)."""
    seeds = np.full(rows, SPARK_HASH_SEED, np.uint64)
    if _INT32[0] <= salt <= _INT32[1]:  # Python ints reach Spark as IntegerType literals when they fit
        salt_bytes = np.frombuffer(int(salt).to_bytes(4, "little", signed=True), np.uint8)
    else:
        salt_bytes = np.frombuffer(int(salt).to_bytes(8, "little", signed=True), np.uint8)
    h = xxh64(np.broadcast_to(salt_bytes, (rows, len(salt_bytes))), seeds)
    for column in keys:
        h = hash_strings(["" if v is None else v for v in column], h)
    return h.view(np.int64)


def java_double(x: float) -> str:
    """``Double.toString``: what Spark's cast of a double to string gives (shortest
    round-trip digits; plain between 1e-3 and 1e7, else ``d.dddE±n``)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return _java_format(repr(float(x)))


def java_float(x: float) -> str:
    """``Float.toString`` (Spark's cast of a float to string): float32's shortest digits."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return _java_format(np.format_float_scientific(np.float32(x), unique=True))


def _java_format(text: str) -> str:
    """Any Python float text (``1e-05``, ``123.0``, ``1.5e+20``) in Java's layout."""
    sign = "-" if text.startswith("-") else ""
    mantissa, _, exponent = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + (int(exponent) if exponent else 0)  # digits before the decimal point
    if not digits:
        return sign + "0.0"
    point -= len(whole + fraction) - len((whole + fraction).lstrip("0"))
    digits = digits.rstrip("0")
    magnitude = point - 1  # the exponent in d.ddd x 10^magnitude
    if -3 <= magnitude < 7:
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return f"{sign}{digits}{'0' * (point - len(digits))}.0"
        return f"{sign}{digits[:point]}.{digits[point:]}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{magnitude}"


def strings(column: pa.Array | pa.ChunkedArray, name: str) -> list[str | None]:
    """The column's values as Spark's ``cast(column AS string)`` gives them."""
    kind = column.type
    values = column.to_pylist()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return values
    if pa.types.is_integer(kind):
        return [None if v is None else str(v) for v in values]
    if pa.types.is_boolean(kind):
        return [None if v is None else ("true" if v else "false") for v in values]
    if pa.types.is_float64(kind):
        return [None if v is None else java_double(v) for v in values]
    if pa.types.is_float32(kind):
        return [None if v is None else java_float(v) for v in values]
    if pa.types.is_null(kind):
        return values
    if pa.types.is_decimal(kind):  # Spark writes a decimal's plain digits, with its scale
        return [None if v is None else format(v, "f") for v in values]
    raise UnsupportedKeyType(f"column {name!r} is {kind}: predict reads string, integer, boolean, floating-point and "
                             "decimal columns as Spark does; cast it to one of those in the input, or score it with "
                             "`python -m pipeline score`")


_JAVA_NUMBER = re.compile(r"[+-]?(?:NaN|Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[fFdD]?)")
_SPECIAL = {"inf": math.inf, "+inf": math.inf, "infinity": math.inf, "+infinity": math.inf,
            "-inf": -math.inf, "-infinity": -math.inf, "nan": math.nan}


def to_double(text: str | None) -> float | None:
    """Spark's ``try_cast(text AS double)``: Java's ``Double.parseDouble`` (surrounding
    control characters and spaces ignored, ``1d``/``2f`` suffixes) plus ``inf``/``nan``
    spellings; None where Spark gives null."""
    if text is None:
        return None
    s = _java_trim(text)
    if _JAVA_NUMBER.fullmatch(s):
        return float(s.rstrip("fFdD"))
    return _SPECIAL.get(s.lower())


def _java_trim(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start] <= " ":
        start += 1
    while end > start and text[end - 1] <= " ":
        end -= 1
    return text[start:end]


def trim(text: str | None) -> str | None:
    """Spark's ``trim``: spaces (not tabs or newlines) off both ends."""
    return None if text is None else text.strip(" ")
