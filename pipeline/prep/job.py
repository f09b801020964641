"""The prepare job: read, validate, split, featurize, shard, publish.

Everything runs as Spark jobs over the whole dataset; the driver collects only counts,
statistics and one metadata row per shard.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config, TensorConfig, to_dict
from pipeline.manifest import FORMAT_VERSION, dataset_dir, read_manifest, write_manifest
from pipeline.prep import featurize, publish, shards, sources, validate
from pipeline.schema import LABEL_COLUMN, REASON_COLUMN, ROW_ID_COLUMN, SPLITS, tensor_feature

log = logging.getLogger(__name__)
_BUCKETS = 1_000_000


class PrepareError(RuntimeError):
    """The input cannot become a dataset version; nothing was published."""


@dataclass(frozen=True)
class PrepareResult:
    """What prepare did: the version directory, and whether this run published it."""

    version_dir: Path
    published: bool
    manifest: dict


def prepare(cfg: Config, spark) -> PrepareResult:
    """Turn ``cfg.data.source`` into a published dataset version under ``cfg.data.root``.

    Re-running with the same inputs, config and code publishes nothing and returns the
    existing version. On any failure the staging directory is removed.
    """
    data = cfg.data
    name = data.name or cfg.name
    files = sources.list_input_files(data.source.path) if data.source.path else []
    code = publish.code_version()
    fp = publish.fingerprint(files, to_dict(cfg)["data"], code)
    ddir = dataset_dir(data.root, name)
    existing = publish.published_version(ddir, fp)
    if existing is not None:
        log.info("inputs, config and code unchanged: %s is current, nothing published", existing)
        return PrepareResult(existing, False, read_manifest(existing)[1])

    staging = publish.new_staging_dir(ddir, fp)
    try:
        manifest = _build(cfg, spark, staging, name, fp, code, files)
        write_manifest(staging, manifest)
        version_dir = publish.publish_version(staging, ddir, fp)
    except BaseException:
        publish.discard_staging(staging)
        raise
    return PrepareResult(version_dir, True, manifest)


def _build(cfg: Config, spark, staging: Path, name: str, fp: str, code: str, files: list[str]) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    data = cfg.data
    started = time.time()
    raw, columns = sources.read_source(spark, data.source)
    label = data.source.label
    if label not in columns:
        raise PrepareError(f"{data.source.path}: label column {label!r} not found; columns are {_short(columns)} (set data.source.label)")
    key_cols = list(data.source.key or columns)
    missing_keys = [c for c in key_cols if c not in columns]
    if missing_keys:
        raise PrepareError(f"data.source.key names columns {missing_keys} not in {data.source.path}; columns are {_short(columns)}")
    if data.tensor is None:
        raise PrepareError("data.tensor is not set: say which columns form the feature tensor and its shape")
    tensor_cols = _tensor_columns(data.tensor, columns, label, data.source.key or [])

    checks = [validate.malformed_check(len(columns)), *validate.label_checks(label, data.source.classes)]
    reasons = [*map(validate.check_reason, checks), validate.tensor_reason(tensor_cols, data.tensor)]
    row_id = F.xxhash64(F.lit(data.split.salt), *[F.coalesce(F.col(c), F.lit("")) for c in key_cols])
    bucket = F.pmod(F.col(ROW_ID_COLUMN), F.lit(_BUCKETS)) / F.lit(float(_BUCKETS))
    split_col = (
        F.when(bucket < data.split.train, F.lit("train"))
        .when(bucket < data.split.train + data.split.val, F.lit("val"))
        .otherwise(F.lit("test"))
    )
    checked = (
        raw.withColumn("_reason", validate.first_reason(reasons))
        .withColumn(ROW_ID_COLUMN, row_id)
        .withColumn("_split", split_col)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        return _write_all(cfg, spark, checked, staging, name, fp, code, files, columns, tensor_cols, started)
    finally:
        checked.unpersist()


def _write_all(cfg, spark, checked, staging, name, fp, code, files, columns, tensor_cols, started) -> dict:
    from pyspark.sql import functions as F

    data = cfg.data
    label = data.source.label
    counts = checked.groupBy(F.col("_reason.code").alias("code"), "_split").count().collect()
    input_rows = sum(r["count"] for r in counts)
    if input_rows == 0:
        raise PrepareError(f"{data.source.path}: no rows to read; is the input empty?")
    by_reason: dict[str, int] = {}
    split_rows = dict.fromkeys(SPLITS, 0)
    for r in counts:
        if r["code"] is None:
            split_rows[r["_split"]] += r["count"]
        else:
            by_reason[r["code"]] = by_reason.get(r["code"], 0) + r["count"]
    rejected = sum(by_reason.values())
    _check_reject_fraction(data, rejected, input_rows, by_reason)
    if split_rows["train"] == 0:
        raise PrepareError(f"{data.source.path}: no valid rows landed in the train split ({input_rows} input, {rejected} rejected)")

    (
        checked.where(F.col("_reason").isNotNull())
        .select(*columns, F.col("_reason.detail").alias(REASON_COLUMN), F.col("_reason.code").alias("reason_code"))
        .write.mode("error")
        .parquet(str(staging / "rejected"))
    )

    good = checked.where(F.col("_reason").isNull())
    # Undeclared classes come from every valid row, so val/test labels always map.
    classes = list(data.source.classes) if data.source.classes is not None else sorted(
        r[0] for r in good.select(F.trim(F.col(label))).distinct().collect()
    )
    label_index = F.create_map(*[x for i, c in enumerate(classes) for x in (F.lit(c), F.lit(i))])
    tensor_name = data.tensor.name
    rows = good.select(
        F.transform(F.array(*[F.col(c) for c in tensor_cols]), lambda x: F.trim(x).cast("double").cast("int")).alias(tensor_name),
        label_index[F.trim(F.col(label))].alias(LABEL_COLUMN),
        F.col(ROW_ID_COLUMN),
        F.col("_split"),
    )

    stats = featurize.fit_tensor_stats(rows.where(F.col("_split") == "train"), tensor_name)
    features = {tensor_name: tensor_feature(data.tensor.dtype, data.tensor.shape)}
    splits = {}
    for split in SPLITS:
        shard_list = shards.write_split(
            rows.where(F.col("_split") == split),
            out_dir=str(staging),
            split=split,
            rows=split_rows[split],
            features=features,
            rows_per_shard=data.shards.rows_per_shard,
            row_group_rows=data.shards.row_group_rows,
            compression=data.shards.compression,
        )
        written = sum(s["rows"] for s in shard_list)
        if written != split_rows[split]:
            raise PrepareError(f"split {split}: counted {split_rows[split]} rows but wrote {written}; input changed during prepare?")
        splits[split] = {"rows": written, "shards": shard_list}

    kept = sum(s["rows"] for s in splits.values())
    assert kept + rejected == input_rows, (kept, rejected, input_rows)
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "task": "classification",
        "fingerprint": fp,
        "code_version": code,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"type": data.source.type, "path": data.source.path, "files": len(files), "columns": columns},
        "input_rows": input_rows,
        "rejected": {"rows": rejected, "by_reason": dict(sorted(by_reason.items())), "path": "rejected"},
        "schema": {
            "features": features,
            "label": {"column": LABEL_COLUMN, "source_column": label, "num_classes": len(classes), "classes": classes},
            "row_id": ROW_ID_COLUMN,
        },
        "featurizer": {tensor_name: {"type": "standardize", **stats, "source_columns": tensor_cols}, "label_map": {c: i for i, c in enumerate(classes)}},
        "splits": splits,
        "prepare_seconds": round(time.time() - started, 3),
    }


def _tensor_columns(tensor: TensorConfig, columns: list[str], label: str, key: list[str]) -> list[str]:
    wanted = list(tensor.columns) if tensor.columns is not None else [c for c in columns if c != label and c not in key]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise PrepareError(f"data.tensor.columns names {_short(missing)} which the input lacks; columns are {_short(columns)}")
    size = math.prod(tensor.shape)
    if len(wanted) != size:
        raise PrepareError(
            f"data.tensor.shape {list(tensor.shape)} needs {size} columns but {len(wanted)} were found "
            f"({_short(wanted)}); fix data.tensor.shape or data.tensor.columns"
        )
    return wanted


def _check_reject_fraction(data, rejected: int, input_rows: int, by_reason: dict) -> None:
    fraction = rejected / input_rows
    if fraction <= data.reject.max_fraction:
        return
    top = ", ".join(f"{code!r}: {n}" for code, n in sorted(by_reason.items(), key=lambda kv: -kv[1])[:5])
    message = (
        f"{data.source.path}: {rejected} of {input_rows} rows ({fraction:.1%}) failed validation, "
        f"above data.reject.max_fraction={data.reject.max_fraction}. Most common: {top}"
    )
    if data.reject.action == "fail":
        raise PrepareError(message + ". Nothing was published; fix the input, or raise the threshold / set data.reject.action=quarantine")
    log.warning("%s; publishing anyway (data.reject.action=quarantine)", message)


def _short(items: list[str], limit: int = 8) -> str:
    items = list(items)
    return str(items) if len(items) <= limit else f"[{', '.join(items[:limit])}, ... ({len(items)} in all)]"
