"""The prepare job: read, validate, split, featurize, shard, publish.

Everything runs as Spark jobs over the whole dataset; the driver collects only counts,
statistics and one metadata row per shard.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

from pipeline import storage
from pipeline.config import Config, ShardConfig, to_dict, with_absolute_locations
from pipeline.manifest import FORMAT_VERSION, dataset_dir, read_manifest, write_manifest
from pipeline.prep import output, publish, shards, sources, validate
from pipeline.prep.output import recorded
from pipeline.prep.raw import list_input_files
from pipeline.schema import LABEL_COLUMN, REASON_COLUMN, ROW_ID_COLUMN, SPLITS

log = logging.getLogger(__name__)
_BUCKETS = 1_000_000


class PrepareError(RuntimeError):
    """The input cannot become a dataset version; nothing was published."""


@dataclass(frozen=True)
class PrepareResult:
    """What prepare did: the version directory, and whether this run published it."""

    version_dir: str
    published: bool
    manifest: dict


def prepare(cfg: Config, spark) -> PrepareResult:
    """Turn ``cfg.data.source`` into a published dataset version under ``cfg.data.root``.

    Re-running with the same inputs, config and code publishes nothing and returns the
    existing version (and points LATEST at it). Versions that earlier runs left without a
    manifest are removed first. On any failure the unfinished version is removed.
    """
    cfg = with_absolute_locations(cfg)
    data = cfg.data
    name = data.name or cfg.name
    files = list_input_files(data.source.path) if data.source.path else []
    code = publish.code_version()
    fp = publish.fingerprint(files, to_dict(cfg)["data"], code)
    ddir = dataset_dir(data.root, name)
    existing = publish.published_version(ddir, fp)
    if existing is not None:
        log.info("inputs, config and code unchanged: %s is current, nothing published", existing)
        publish.point_latest(ddir, existing)
        return PrepareResult(existing, False, read_manifest(existing)[1])

    publish.remove_unpublished(ddir)
    version_dir = storage.join(ddir, publish.version_name(fp))
    staging = output.Staging(version_dir)
    try:
        manifest = _build(cfg, spark, staging, name, fp, code, files)
        write_manifest(version_dir, manifest)  # the commit: the version exists from here on
    except BaseException:
        discard_unfinished(version_dir)
        raise
    publish.point_latest(ddir, version_dir)
    return PrepareResult(version_dir, True, manifest)


def discard_unfinished(location: str) -> None:
    """Remove what a failed run wrote; if the store itself is what failed, leave it (it
    has no manifest, so nothing reads it, and the next run removes it) and keep the
    original error."""
    try:
        storage.delete_dir(location)
    except storage.StorageError as err:
        log.warning("could not remove the unfinished %s (%s); the next run removes it", location, err)


def _build(cfg: Config, spark, staging: output.Staging, name: str, fp: str, code: str, files: list[storage.Entry]) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    data = cfg.data
    started = time.time()
    raw = sources.read_source(spark, data)
    classes = list(data.source.classes) if data.source.classes is not None else raw.classes
    checks = validate.label_checks(raw.label, classes)
    reasons = [*raw.reasons, *map(validate.check_reason, checks), *(r for b in raw.features for r in b.reasons())]
    row_id = F.xxhash64(F.lit(data.split.salt), *[F.coalesce(F.col(c).cast("string"), F.lit("")) for c in raw.key])
    checked = (
        raw.df.withColumn("_reason", validate.first_reason(reasons))
        .withColumn(ROW_ID_COLUMN, row_id)
        .withColumn("_split", _split_column(data.split, raw.source_split))
        # Each split's rows together within a partition (a local sort, no shuffle), so the
        # cached column batches hold mostly one split and the later passes filtering on
        # _split (fit on train, one shard write per split) skip the others' batches by
        # their min/max statistics instead of scanning the whole cache each time.
        .sortWithinPartitions("_split")
        .persist(StorageLevel.MEMORY_AND_DISK_DESER)
    )
    try:
        return _write_all(cfg, checked, raw, classes, staging, name, fp, code, files, started)
    finally:
        checked.unpersist()


def _split_column(split, source_split: str | None):
    """'train' / 'val' / 'test' from the row id's hash bucket (or the source's own split)."""
    from pyspark.sql import functions as F

    bucket = F.pmod(F.col(ROW_ID_COLUMN), F.lit(_BUCKETS)) / F.lit(float(_BUCKETS))
    if source_split is not None and split.use_source:
        val_share = split.val / (split.train + split.val)
        return F.when(F.col(source_split) == "test", F.lit("test")).when(bucket < val_share, F.lit("val")).otherwise(F.lit("train"))
    return (
        F.when(bucket < split.train, F.lit("train"))
        .when(bucket < split.train + split.val, F.lit("val"))
        .otherwise(F.lit("test"))
    )


def _count(checked) -> tuple[int, dict[str, int], dict[str, int]]:
    """Input rows (counted on their own, before any validation or grouping), rejected rows
    by reason code, kept rows by split.

    Raises:
        PrepareError: the two counts disagree (rows lost between reading and validating).
    """
    from pyspark.sql import functions as F

    input_rows = checked.count()
    by_reason: dict[str, int] = {}
    split_rows = dict.fromkeys(SPLITS, 0)
    for r in checked.groupBy(F.col("_reason.code").alias("code"), "_split").count().collect():
        if r["code"] is None:
            split_rows[r["_split"]] += r["count"]
        else:
            by_reason[r["code"]] = by_reason.get(r["code"], 0) + r["count"]
    grouped = sum(by_reason.values()) + sum(split_rows.values())
    if grouped != input_rows:
        raise PrepareError(f"read {input_rows} input rows but validation accounted for {grouped}; did the input change during "
                           "prepare? Nothing was published: run it again")
    return input_rows, by_reason, split_rows


def _write_all(cfg, checked, raw, classes, staging, name, fp, code, files, started) -> dict:
    from pyspark.sql import functions as F

    data = cfg.data
    where = data.source.path or f"synthetic {data.source.synthetic.kind} source"
    stage = _Stages()
    input_rows, by_reason, split_rows = _count(checked)
    stage.done("read, validate, count")
    if input_rows == 0:
        raise PrepareError(f"{where}: no rows to read; is the input empty?")
    rejected = sum(by_reason.values())
    _check_reject_fraction(data, where, rejected, input_rows, by_reason)
    if split_rows["train"] == 0:
        raise PrepareError(f"{where}: no valid rows landed in the train split ({input_rows} input, {rejected} rejected)")

    # The count says whether any row was rejected: with none, no pass over the input for
    # them (ensure_readable below still leaves an empty rejected/ table).
    rejected_files = write_rejected(checked, raw.columns, staging, data.shards.compression) if rejected else []
    stage.done("write rejected")

    good = checked.where(F.col("_reason").isNull())
    label = F.trim(F.col(raw.label).cast("string"))
    # Undeclared classes come from every valid row, so val/test labels always map.
    if classes is None:
        classes = sorted(r[0] for r in good.select(label).distinct().collect())
    if len(classes) < 2:
        raise PrepareError(f"{where}: the valid rows hold {len(classes)} class(es) {classes} in {raw.label!r}: a classifier "
                           "needs at least 2; check data.source.label and the input")
    label_index = F.create_map(*[x for i, c in enumerate(classes) for x in (F.lit(c), F.lit(i))])
    for builder in raw.features:
        good = builder.prepared(good)
    train = good.where(F.col("_split") == "train")
    fitted = {b.name: b.fit(train) for b in raw.features}
    features = {b.name: b.spec(fitted[b.name]) for b in raw.features}
    stage.done("fit featurizer")
    rows = good.select(
        *[out for b in raw.features for out in b.outputs(fitted[b.name])],
        label_index[label].alias(LABEL_COLUMN),
        F.col(ROW_ID_COLUMN),
        F.col("_split"),
    )
    rows_per_shard = _rows_per_shard(data.shards, features, fitted)
    splits = {}
    for split in SPLITS:
        shard_list = shards.write_split(
            rows.where(F.col("_split") == split),
            staging=staging,
            split=split,
            rows=split_rows[split],
            features=features,
            rows_per_shard=rows_per_shard,
            row_group_rows=data.shards.row_group_rows,
            compression=data.shards.compression,
        )
        written = sum(s["rows"] for s in shard_list)
        if written != split_rows[split]:
            raise PrepareError(f"split {split}: counted {split_rows[split]} rows but wrote {written}; did the input change during prepare?")
        splits[split] = {"rows": written, "shards": shard_list}
        stage.done(f"write {split} shards")

    kept = sum(s["rows"] for s in splits.values())
    written_rejected = sum(f["rows"] for f in rejected_files)
    if kept + written_rejected != input_rows:  # what was written, against the input counted on its own
        raise PrepareError(f"{input_rows} input rows, but {kept} kept and {written_rejected} rejected rows were written; "
                           "did the input change during prepare? Nothing was published: run it again")
    staging.commit([*rejected_files, *(f for s in splits.values() for f in s["shards"])])
    output.ensure_readable(staging.final_dir, "rejected", rejected_files, rejected_schema(checked, raw.columns))
    stage.done("commit files")
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "task": "classification",
        "fingerprint": fp,
        "code_version": code,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": _describe_source(data, files, raw.columns),
        "input_rows": input_rows,
        "rejected": {"rows": rejected, "by_reason": dict(sorted(by_reason.items())), "path": "rejected",
                     "files": recorded(rejected_files)},
        "schema": {
            "features": features,
            "label": {"column": LABEL_COLUMN, "source_column": raw.label, "num_classes": len(classes), "classes": classes},
            "row_id": ROW_ID_COLUMN,
        },
        "featurizer": {**fitted, "label_map": {c: i for i, c in enumerate(classes)}},
        "splits": {k: {"rows": v["rows"], "shards": recorded(v["shards"])} for k, v in splits.items()},
        "prepare_seconds": round(time.time() - started, 3),
        "stage_seconds": stage.seconds,
    }


class _Stages:
    """Wall-clock seconds per stage, logged and kept in the manifest."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now
        log.info("prepare: %s took %.1f s", name, self.seconds[name])


def rejected_rows(checked, columns: list[str]):
    """The rows of ``checked`` that failed validation: raw ``columns`` plus reason and code."""
    from pyspark.sql import functions as F

    return checked.where(F.col("_reason").isNotNull()).select(
        *columns, F.col("_reason.detail").alias(REASON_COLUMN), F.col("_reason.code").alias("reason_code"))


def rejected_schema(checked, columns: list[str]):
    """The Arrow schema of :func:`rejected_rows` (for an empty ``rejected/``)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(rejected_rows(checked, columns).schema)


def write_rejected(checked, columns: list[str], staging: output.Staging, compression: str) -> list[dict]:
    """Raw rows that failed validation, with their reason, staged under ``rejected/``."""
    return staging.write(rejected_rows(checked, columns), "rejected", row_group_rows=65536, compression=compression)


def _describe_source(data, files: list[storage.Entry], columns: list[str]) -> dict:
    out = {"type": data.source.type, "path": data.source.path, "files": len(files), "columns": columns}
    if data.source.type == "synthetic":
        out["synthetic"] = asdict(data.source.synthetic)
    return out


def _rows_per_shard(cfg: ShardConfig, features: dict, fitted: dict) -> int:
    """Rows per file: the configured count, or what fits ``bytes_per_shard`` (uncompressed)."""
    if cfg.bytes_per_shard is None:
        return cfg.rows_per_shard
    row_bytes = 12  # label + row id
    for name, spec in features.items():
        if spec["kind"] == "sequence":
            row_bytes += int(fitted[name].get("mean_length", 64) * spec["dims"] * 4) + 8
        else:
            row_bytes += math.prod(spec["shape"]) * (1 if spec["dtype"] == "uint8" else 4)
    return max(1, cfg.bytes_per_shard // row_bytes)


def _check_reject_fraction(data, where: str, rejected: int, input_rows: int, by_reason: dict) -> None:
    fraction = rejected / input_rows
    if fraction <= data.reject.max_fraction:
        return
    top = ", ".join(f"{code!r}: {n}" for code, n in sorted(by_reason.items(), key=lambda kv: -kv[1])[:5])
    message = (
        f"{where}: {rejected} of {input_rows} rows ({fraction:.1%}) failed validation, "
        f"above data.reject.max_fraction={data.reject.max_fraction}. Most common: {top}"
    )
    if data.reject.action == "fail":
        raise PrepareError(message + ". Nothing was published; fix the input, or raise the threshold / set data.reject.action=quarantine")
    log.warning("%s; publishing anyway (data.reject.action=quarantine)", message)
