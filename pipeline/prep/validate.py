"""Per-row validation as Spark column expressions: each bad row gets a reason.

A reason is a struct of ``code`` (stable, counted in the manifest, e.g.
``c5: not a number``) and ``detail`` (the code plus the offending value, kept in
``rejected/``). The first failing check wins.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import TensorConfig
from pipeline.prep.sources import CORRUPT_COLUMN


@dataclass(frozen=True)
class Check:
    """One validation rule: ``failed`` is a boolean Column; ``code`` names the rule."""

    failed: object
    code: str
    value: object = None


def tensor_checks(columns: list[str], tensor: TensorConfig) -> list[Check]:
    """Checks for numeric columns that form one tensor: present, numeric, finite, in range."""
    from pyspark.sql import functions as F

    checks = []
    for name in columns:
        raw = F.col(name)
        num = F.trim(raw).cast("double")
        checks += [
            Check(raw.isNull() | (F.trim(raw) == ""), f"{name}: missing value"),
            Check(num.isNull(), f"{name}: not a number", raw),
            Check(F.isnan(num) | (F.abs(num) == float("inf")), f"{name}: NaN or infinite", raw),
            Check((num < tensor.min) | (num > tensor.max), f"{name}: outside [{tensor.min:g}, {tensor.max:g}]", raw),
        ]
        if tensor.dtype == "uint8":
            checks.append(Check(num != F.floor(num), f"{name}: not an integer", raw))
    return checks


def label_checks(label: str, classes: list[str] | None) -> list[Check]:
    """Checks for the label column: present and, when declared, one of the classes."""
    from pyspark.sql import functions as F

    raw = F.trim(F.col(label))
    checks = [Check(raw.isNull() | (raw == ""), f"{label}: missing label")]
    if classes is not None:
        checks.append(Check(~raw.isin(list(classes)), f"{label}: label not in data.source.classes", raw))
    return checks


def malformed_check(expected_columns: int) -> Check:
    """Lines the CSV parser could not split into the expected number of fields."""
    from pyspark.sql import functions as F

    return Check(F.col(CORRUPT_COLUMN).isNotNull(), f"malformed line: expected {expected_columns} fields", F.col(CORRUPT_COLUMN))


def reason_column(checks: list[Check]):
    """Struct<code, detail> of the first failing check, or null for a good row."""
    from pyspark.sql import functions as F

    def reason(check: Check):
        detail = F.lit(check.code) if check.value is None else F.concat(F.lit(check.code + ": "), F.coalesce(check.value.cast("string"), F.lit("null")))
        return F.when(check.failed, F.struct(F.lit(check.code).alias("code"), detail.alias("detail")))

    return F.coalesce(*[reason(c) for c in checks])
