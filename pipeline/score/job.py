"""The score job: raw rows -> validation -> featurizer (fitted at prepare time, from the
model bundle) -> model in ``mapInArrow`` -> predictions Parquet, rejected rows, metrics.

The model is broadcast once and loaded once per task; rows travel in Arrow batches and are
turned into the same tensors the training reader produces (``pipeline.data.reader``), so a
row scores exactly as the trainer evaluated it. Nothing is collected to the driver but
counts. Output is written to a staging directory and renamed into place: a failed run
publishes nothing.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config
from pipeline.schema import LABEL_COLUMN, REASON_COLUMN, ROW_ID_COLUMN

log = logging.getLogger(__name__)
PREDICTION = "prediction"
PREDICTION_INDEX = "prediction_index"
PROBABILITIES = "probabilities"


class ScoreError(RuntimeError):
    """The model or the input cannot be scored; nothing was written."""


@dataclass(frozen=True)
class ScoreResult:
    output: Path
    metrics: dict


def load_bundle(model_path: str | Path) -> tuple[bytes, dict]:
    """The model bundle's bytes (to broadcast) and its contents (weights-only load)."""
    import torch

    path = Path(model_path)
    if not path.is_file():
        raise ScoreError(f"{path}: no such model file; pass a run's model.pt (runs/<run>/model.pt)")
    raw = path.read_bytes()
    try:
        bundle = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any unreadable file gets the same advice
        raise ScoreError(f"{path}: not a model bundle written by train ({str(err).splitlines()[0]})") from None
    for key in ("model", "schema", "featurizer", "state_dict"):
        if key not in bundle:
            raise ScoreError(f"{path}: model bundle lacks {key!r}; was it written by train?")
    return raw, bundle


def score(cfg: Config, spark, model_path: str | Path, input_path: str, output: str | Path, batch_rows: int = 1024) -> ScoreResult:
    """Score ``input_path`` (same format as ``cfg.data.source``) with the model at
    ``model_path``; write ``output/{predictions,rejected}/`` and ``output/metrics.json``."""
    output = Path(output)
    if output.exists():
        raise ScoreError(f"{output} already exists; scoring never overwrites: choose a new --output or remove it")
    raw_bundle, bundle = load_bundle(model_path)
    staging = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        metrics = _run(cfg, spark, raw_bundle, bundle, input_path, staging, batch_rows)
        metrics.update(model=str(Path(model_path).resolve()), input=input_path)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        os.rename(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ScoreResult(output, metrics)


def _run(cfg: Config, spark, raw_bundle: bytes, bundle: dict, input_path: str, staging: Path, batch_rows: int) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from pipeline.prep import sources, validate

    schema = bundle["schema"]
    classes = [str(c) for c in schema["label"]["classes"]]
    data = dataclasses.replace(cfg.data, source=dataclasses.replace(cfg.data.source, path=input_path))
    raw = sources.read_source(spark, data, require_label=False)
    if [b.name for b in raw.features] != list(schema["features"]):
        raise ScoreError(
            f"the config's features {[b.name for b in raw.features]} differ from the model's {list(schema['features'])}; "
            "score with the config the model was trained with"
        )
    label = F.trim(F.col(raw.label).cast("string"))
    labeled = label.isNotNull() & (label != "")
    # A label, when present, must be one the model knows; a missing one is fine here.
    label_check = validate.Check(labeled & ~label.isin(classes), f"{raw.label}: label not among the model's classes", label)
    reasons = [*raw.reasons, *(r for b in raw.features for r in b.reasons()), validate.check_reason(label_check)]
    row_id = F.xxhash64(F.lit(data.split.salt), *[F.coalesce(F.col(c).cast("string"), F.lit("")) for c in raw.key])
    checked = raw.df.withColumn("_reason", validate.first_reason(reasons)).withColumn(ROW_ID_COLUMN, row_id)
    checked = checked.persist(StorageLevel.MEMORY_AND_DISK_DESER)
    try:
        (
            checked.where(F.col("_reason").isNotNull())
            .select(*raw.columns, F.col("_reason.detail").alias(REASON_COLUMN), F.col("_reason.code").alias("reason_code"))
            .write.parquet(str(staging / "rejected"))
        )
        good = checked.where(F.col("_reason").isNull())
        for builder in raw.features:
            good = builder.prepared(good)
        label_index = F.create_map(*[x for i, c in enumerate(classes) for x in (F.lit(c), F.lit(i))])
        featurized = good.select(
            *[out for b in raw.features for out in b.outputs(bundle["featurizer"][b.name])],
            F.when(labeled, label_index[label]).cast("int").alias(LABEL_COLUMN),
            F.col(ROW_ID_COLUMN),
        )
        model = spark.sparkContext.broadcast(raw_bundle)
        predictions = featurized.mapInArrow(_predictor(model, batch_rows), _output_schema())
        predictions.write.parquet(str(staging / "predictions"))
        rejected_by = {r["reason_code"]: r["count"] for r in spark.read.parquet(str(staging / "rejected")).groupBy("reason_code").count().collect()}
    finally:
        checked.unpersist()
    written = spark.read.parquet(str(staging / "predictions"))
    agg = written.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count(LABEL_COLUMN).alias("labeled"),
        F.sum((F.col(LABEL_COLUMN) == F.col(PREDICTION_INDEX)).cast("long")).alias("correct"),
    ).first()
    metrics = {
        "scored_rows": agg["rows"],
        "rejected_rows": sum(rejected_by.values()),
        "rejected_by_reason": dict(sorted(rejected_by.items())),
        "labeled_rows": agg["labeled"],
        "dataset_fingerprint": bundle.get("dataset_fingerprint"),
    }
    if agg["labeled"]:
        metrics["accuracy"] = agg["correct"] / agg["labeled"]
    log.info("scored %d rows (%d rejected)%s", agg["rows"], metrics["rejected_rows"],
             f", accuracy {metrics['accuracy']:.4f} on {agg['labeled']} labeled rows" if agg["labeled"] else "")
    return metrics


def _output_schema():
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, LongType, StringType, StructField, StructType

    return StructType([
        StructField(ROW_ID_COLUMN, LongType()),
        StructField(LABEL_COLUMN, IntegerType()),
        StructField(PREDICTION_INDEX, IntegerType()),
        StructField(PREDICTION, StringType()),
        StructField(PROBABILITIES, ArrayType(FloatType())),
    ])


def _predictor(model_broadcast, batch_rows: int):
    """The mapInArrow function: load the model once per task, score Arrow batches."""

    def predict(batches):
        import numpy as np
        import pyarrow as pa
        import torch

        from pipeline.config import ModelConfig
        from pipeline.data.reader import collate, decode_table, reader_norms
        from pipeline.models import build_model

        torch.set_num_threads(1)  # one task per core already
        bundle = torch.load(io.BytesIO(model_broadcast.value), map_location="cpu", weights_only=True)
        schema = bundle["schema"]
        model = build_model(ModelConfig(**bundle["model"]), schema)
        model.load_state_dict(bundle["state_dict"])
        model.eval()
        features = schema["features"]
        norms = reader_norms({"schema": schema, "featurizer": bundle["featurizer"]})
        classes = np.array([str(c) for c in schema["label"]["classes"]], dtype=object)
        for record_batch in batches:
            for start in range(0, record_batch.num_rows, batch_rows):
                table = pa.Table.from_batches([record_batch.slice(start, batch_rows)])
                rows = decode_table(table, features, extra=(ROW_ID_COLUMN,))
                with torch.no_grad():
                    probs = torch.softmax(model(collate(rows, features, norms)), dim=1).numpy()
                index = probs.argmax(axis=1).astype(np.int32)
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(rows[ROW_ID_COLUMN], pa.int64()),
                        table.column(LABEL_COLUMN).combine_chunks().cast(pa.int32()),
                        pa.array(index, pa.int32()),
                        pa.array(classes[index], pa.string()),
                        pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1), pa.float32()), probs.shape[1]).cast(pa.list_(pa.float32())),
                    ],
                    names=[ROW_ID_COLUMN, LABEL_COLUMN, PREDICTION_INDEX, PREDICTION, PROBABILITIES],
                )

    return predict
