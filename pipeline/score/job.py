"""The score job: raw rows -> validation -> featurizer (fitted at prepare time, from the
model bundle) -> model in ``mapInArrow`` -> predictions Parquet, rejected rows, metrics.

The model is broadcast once and loaded once per task; rows travel in Arrow batches and are
turned into the same tensors the training reader produces (``pipeline.data.reader``), so a
row scores exactly as the trainer evaluated it. Nothing is collected to the driver but
counts. Every location may be a path or a URI. Task attempts write their own staging
files (:mod:`pipeline.prep.output`); the committed ones are moved into ``predictions/`` and
``rejected/``, and ``metrics.json``, written last, commits the output: an output without
it is unfinished (the next score to it removes it), a failed run removes what it wrote.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
from dataclasses import dataclass

from pipeline import storage
from pipeline.config import Config, with_absolute_locations
from pipeline.prep.output import Staging, ensure_readable, recorded
from pipeline.schema import LABEL_COLUMN, ROW_ID_COLUMN

log = logging.getLogger(__name__)
PREDICTION = "prediction"
PREDICTION_INDEX = "prediction_index"
PROBABILITIES = "probabilities"


class ScoreError(RuntimeError):
    """The model or the input cannot be scored; nothing was written."""


METRICS_NAME = "metrics.json"
_OUTPUT_PARTS = ("predictions", "rejected", "_staging")


@dataclass(frozen=True)
class ScoreResult:
    output: str
    metrics: dict


def load_bundle(model_path: str) -> tuple[bytes, dict]:
    """The model bundle's bytes (to broadcast) and its contents (weights-only load)."""
    import torch

    path = storage.absolute(str(model_path))
    if not storage.is_file(path):
        raise ScoreError(f"{path}: no such model file; pass a run's model.pt (runs/<run>/model.pt)")
    raw = storage.read_bytes(path)
    try:
        bundle = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any unreadable file gets the same advice
        raise ScoreError(f"{path}: not a model bundle written by train ({str(err).splitlines()[0]})") from None
    for key in ("model", "schema", "featurizer", "state_dict"):
        if key not in bundle:
            raise ScoreError(f"{path}: model bundle lacks {key!r}; was it written by train?")
    return raw, bundle


def score(cfg: Config, spark, model_path: str, input_path: str, output: str, batch_rows: int = 1024) -> ScoreResult:
    """Score ``input_path`` (same format as ``cfg.data.source``) with the model at
    ``model_path``; write ``output/{predictions,rejected}/`` and ``output/metrics.json``."""
    cfg = with_absolute_locations(cfg)
    model_path, input_path, output = (storage.absolute(str(p)) for p in (model_path, input_path, output))
    _check_output(output)
    raw_bundle, bundle = load_bundle(model_path)
    staging = Staging(output)
    try:
        metrics = _run(cfg, spark, raw_bundle, bundle, input_path, staging, batch_rows)
        metrics.update(model=model_path, input=input_path)
        storage.write_text(storage.join(output, METRICS_NAME), json.dumps(metrics, indent=2) + "\n")  # the commit
    except BaseException:
        from pipeline.prep.job import discard_unfinished

        for part in _OUTPUT_PARTS:
            discard_unfinished(storage.join(output, part))
        raise
    return ScoreResult(output, metrics)


def _check_output(output: str) -> None:
    """Refuse an existing output; remove what an unfinished score left (no metrics.json)."""
    if storage.exists(storage.join(output, METRICS_NAME)) or storage.is_file(output):
        raise ScoreError(f"{output} already exists; scoring never overwrites: choose a new --output or remove it")
    found = storage.list_files(output)
    foreign = [e.uri for e in found if storage.relative(e.uri, output).split("/")[0] not in _OUTPUT_PARTS]
    if foreign:
        raise ScoreError(f"{output} already exists and holds other files ({foreign[0]}); scoring never overwrites: "
                         "choose a new --output")
    if found:
        log.info("removing %d file(s) an unfinished score left in %s (it has no %s)", len(found), output, METRICS_NAME)
        for part in _OUTPUT_PARTS:
            storage.delete_dir(storage.join(output, part))


def _run(cfg: Config, spark, raw_bundle: bytes, bundle: dict, input_path: str, staging: Staging, batch_rows: int) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from pipeline.prep import sources, validate
    from pipeline.prep.job import rejected_schema, write_rejected

    schema = bundle["schema"]
    classes = [str(c) for c in schema["label"]["classes"]]
    data = dataclasses.replace(cfg.data, source=dataclasses.replace(cfg.data.source, path=input_path))
    raw = sources.read_source(spark, data, require_label=False, trained=bundle)
    difference = config_difference(raw, cfg.data.source.classes, bundle)
    if difference:
        raise ScoreError(f"{difference}; score with the config the model was trained with (its run's config.yaml)")
    label = F.trim(F.col(raw.label).cast("string"))
    labeled = label.isNotNull() & (label != "")
    # A label, when present, must be one the model knows; a missing one is fine here.
    label_check = validate.Check(labeled & ~label.isin(classes), f"{raw.label}: label not among the model's classes", label)
    reasons = [*raw.reasons, *(r for b in raw.features for r in b.reasons()), validate.check_reason(label_check)]
    row_id = F.xxhash64(F.lit(data.split.salt), *[F.coalesce(F.col(c).cast("string"), F.lit("")) for c in raw.key])
    checked = raw.df.withColumn("_reason", validate.first_reason(reasons)).withColumn(ROW_ID_COLUMN, row_id)
    checked = checked.persist(StorageLevel.MEMORY_AND_DISK_DESER)
    try:
        rejected_files = write_rejected(checked, raw.columns, staging, "zstd")
        rejected_by = {r["code"]: r["count"] for r in
                       checked.where(F.col("_reason").isNotNull()).groupBy(F.col("_reason.code").alias("code")).count().collect()}
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
        predicted_files = staging.write(predictions, "predictions", row_group_rows=65536, compression="zstd", tally=_tally)
    finally:
        checked.unpersist()
    rejected_rows = sum(f["rows"] for f in rejected_files)
    if rejected_rows != sum(rejected_by.values()):
        raise ScoreError(f"counted {sum(rejected_by.values())} rejected rows but wrote {rejected_rows}; did the input change during scoring?")
    staging.commit([*rejected_files, *predicted_files])
    ensure_readable(staging.final_dir, "predictions", predicted_files, _arrow_output_schema())
    ensure_readable(staging.final_dir, "rejected", rejected_files, rejected_schema(checked, raw.columns))
    totals = {k: sum(f["counts"].get(k, 0) for f in predicted_files) for k in ("rows", "labeled", "correct")}
    metrics = {
        "scored_rows": totals["rows"],
        "rejected_rows": rejected_rows,
        "rejected_by_reason": dict(sorted(rejected_by.items())),
        "labeled_rows": totals["labeled"],
        "dataset_fingerprint": bundle.get("dataset_fingerprint"),
        "files": {"predictions": recorded(predicted_files), "rejected": recorded(rejected_files)},
    }
    if totals["labeled"]:
        metrics["accuracy"] = totals["correct"] / totals["labeled"]
    log.info("scored %d rows (%d rejected)%s", totals["rows"], rejected_rows,
             f", accuracy {metrics['accuracy']:.4f} on {totals['labeled']} labeled rows" if totals["labeled"] else "")
    return metrics


def config_difference(raw, declared_classes, bundle: dict) -> str | None:
    """How the scoring config reads the input differently from how the model's training
    data was read (features, source columns, label column, classes), or None."""
    schema, fitted = bundle["schema"], bundle["featurizer"]
    names = [b.name for b in raw.features]
    if names != list(schema["features"]):
        return f"the config's features {names} differ from the model's {list(schema['features'])}"
    for builder in raw.features:
        columns = getattr(builder, "columns", None)
        recorded = fitted[builder.name].get("source_columns") or fitted[builder.name].get("columns")
        if columns is not None and recorded is not None and list(columns) != list(recorded):
            return f"feature {builder.name!r} reads columns {_short(list(columns))}, the model was trained on {_short(list(recorded))}"
        if builder.spec(fitted[builder.name]) != schema["features"][builder.name]:
            return (f"feature {builder.name!r} is {builder.spec(fitted[builder.name])} in the config, "
                    f"{schema['features'][builder.name]} in the model")
    trained_label = schema["label"].get("source_column")
    if trained_label is not None and raw.label != trained_label:
        return f"the config's label column is {raw.label!r}, the model's training data used {trained_label!r}"
    classes = [str(c) for c in schema["label"]["classes"]]
    if declared_classes is not None and [str(c) for c in declared_classes] != classes:
        return f"data.source.classes {[str(c) for c in declared_classes]} differ from the model's classes {classes} (order is the label map)"
    return None


def _short(items: list, limit: int = 6) -> str:
    return str(items) if len(items) <= limit else f"[{', '.join(map(str, items[:limit]))}, ... ({len(items)} in all)]"


def _tally(batch) -> dict[str, int]:
    """Per predictions batch: rows, labeled rows, correct predictions (summed into metrics)."""
    import pyarrow.compute as pc

    label, predicted = batch.column(LABEL_COLUMN), batch.column(PREDICTION_INDEX)
    return {"rows": batch.num_rows, "labeled": batch.num_rows - label.null_count,
            "correct": pc.sum(pc.equal(label, predicted).cast("int64")).as_py() or 0}


def _arrow_output_schema():
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(_output_schema())


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
        from pipeline.data.reader import collate, decode_table
        from pipeline.models import build_model

        torch.set_num_threads(1)  # one task per core already
        bundle = torch.load(io.BytesIO(model_broadcast.value), map_location="cpu", weights_only=True)
        schema = bundle["schema"]
        model = build_model(ModelConfig(**bundle["model"]), schema, bundle["featurizer"])
        model.load_state_dict(bundle["state_dict"])
        model.eval()
        features = schema["features"]
        classes = np.array([str(c) for c in schema["label"]["classes"]], dtype=object)
        for record_batch in batches:
            for start in range(0, record_batch.num_rows, batch_rows):
                table = pa.Table.from_batches([record_batch.slice(start, batch_rows)])
                rows = decode_table(table, features, extra=(ROW_ID_COLUMN,))
                with torch.no_grad():
                    probs = torch.softmax(model(collate(rows, features)), dim=1).numpy()
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
