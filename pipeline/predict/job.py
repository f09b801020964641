"""``predict``: score's predictions without Spark, for inputs that fit in memory.

Raw rows (:mod:`pipeline.predict.inputs`) -> score's checks and the bundle's featurizer as
plain numbers (:mod:`pipeline.predict.featurize`) -> the very function score runs in its
Spark tasks (:func:`pipeline.score.job._predictor`) -> one Parquet file with score's
columns (``row_id, label, prediction_index, prediction, probabilities``), in input order.

Rows score would reject are not predicted: they go, with score's ``reason`` and
``reason_code`` columns after the raw ones, to ``<output stem>.rejected.parquet`` beside
the output (written only when there are any), and are counted in the result.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.config import DataConfig
from pipeline.predict import featurize
from pipeline.predict.bundle import PredictError, ignore_readonly_arrays, read_bundle, reading_config
from pipeline.predict.inputs import RawRows, read_input
from pipeline.predict.spark_compat import UnsupportedKeyType, row_ids, strings, trim
from pipeline.schema import LABEL_COLUMN, REASON_COLUMN, ROW_ID_COLUMN


# score's predictions schema (pipeline.score.job._arrow_output_schema, which needs pyspark).
OUTPUT_SCHEMA = pa.schema([
    (ROW_ID_COLUMN, pa.int64()),
    (LABEL_COLUMN, pa.int32()),
    ("prediction_index", pa.int32()),
    ("prediction", pa.string()),
    ("probabilities", pa.list_(pa.field("element", pa.float32()))),
])


@dataclass(frozen=True)
class PredictResult:
    """What predict wrote: the predictions file, the rejected rows' file (None when no row
    was rejected), and score's metrics keys (``scored_rows``, ``rejected_rows``,
    ``rejected_by_reason``, ``labeled_rows``, ``accuracy`` when rows were labeled)."""

    output: str
    rejected: str | None
    metrics: dict


def rejected_location(output: str) -> str:
    """``out.parquet`` -> ``out.rejected.parquet``, beside it."""
    stem = output[: -len(".parquet")] if output.endswith(".parquet") else output
    return stem + ".rejected.parquet"


def predict(model_path: str, input_path: str, output: str, data: DataConfig | None = None, batch_rows: int = 1024) -> PredictResult:
    """Predict every row of ``input_path`` with the model at ``model_path``; write
    ``output`` (and the rejected rows beside it). ``data``: how to read the input
    (``--config``'s); None takes the bundle's record.

    Raises:
        PredictError: the output exists, the bundle cannot be used, or ``data`` reads the
            input differently from how the model's training data was read.
    """
    model_path, input_path, output = (storage.absolute(str(p)) for p in (model_path, input_path, output))
    rejected_path = rejected_location(output)
    for location in (output, rejected_path):
        if storage.exists(location):
            raise PredictError(f"{location} already exists; predict never overwrites: choose a new --output or remove it")
    bundle = read_bundle(model_path)
    data, raw, builders = read_rows(bundle, model_path, input_path, data)
    featurized, rejected = featurize_rows(raw, builders, bundle, data.split.salt)
    counts = _write_predictions(featurized, model_path, output, batch_rows)
    rejected_file = rejected_path if rejected.num_rows else None
    if rejected_file:
        try:
            _write_table(rejected, rejected_file)
        except BaseException:
            storage.delete(output)  # both files or neither
            raise
    by_reason = Counter(rejected.column("reason_code").to_pylist())
    metrics = {"scored_rows": counts["rows"], "rejected_rows": rejected.num_rows,
               "rejected_by_reason": dict(sorted(by_reason.items())), "labeled_rows": counts["labeled"],
               "dataset_fingerprint": bundle.get("dataset_fingerprint"), "model": model_path, "input": input_path}
    if counts["labeled"]:
        metrics["accuracy"] = counts["correct"] / counts["labeled"]
    return PredictResult(output, rejected_file, metrics)


def read_rows(bundle: dict, model_path: str, input_path: str, data: DataConfig | None) -> tuple[DataConfig, RawRows, list]:
    """The input's raw rows and the builders that featurize them for this model."""
    data = reading_config(bundle, model_path, data)
    raw = read_input(data, input_path)
    builders = featurize.builders(data, raw, bundle)
    difference = config_difference(builders, raw.label, data.source.classes, bundle)
    if difference:
        raise PredictError(f"{difference}; use the config the model was trained with (its run's config.yaml), "
                           "or leave --config out")
    return data, raw, builders


def config_difference(builders: list, label: str, declared_classes, bundle: dict) -> str | None:
    """:func:`pipeline.score.job.config_difference` on predict's builders."""
    schema, fitted = bundle["schema"], bundle["featurizer"]
    names = [b.name for b in builders]
    if names != list(schema["features"]):
        return f"the config's features {names} differ from the model's {list(schema['features'])}"
    for b in builders:
        columns = getattr(b, "columns", None)
        recorded = fitted[b.name].get("source_columns") or fitted[b.name].get("columns")
        if columns is not None and recorded is not None and list(columns) != list(recorded):
            return f"feature {b.name!r} reads columns {list(columns)[:6]}, the model was trained on {list(recorded)[:6]}"
        if b.spec(fitted[b.name]) != schema["features"][b.name]:
            return f"feature {b.name!r} is {b.spec(fitted[b.name])} in the config, {schema['features'][b.name]} in the model"
    trained_label = schema["label"].get("source_column")
    if trained_label is not None and label != trained_label:
        return f"the config's label column is {label!r}, the model's training data used {trained_label!r}"
    classes = [str(c) for c in schema["label"]["classes"]]
    if declared_classes is not None and [str(c) for c in declared_classes] != classes:
        return f"data.source.classes {[str(c) for c in declared_classes]} differ from the model's classes {classes}"
    return None


def featurize_rows(raw: RawRows, builders: list, bundle: dict, salt: int, standardize: bool = True) -> tuple[pa.Table, pa.Table]:
    """Score's validation (source, features, label: the first failed check wins) and
    featurizer: (featurized good rows with label and row id, rejected raw rows with reason).
    ``standardize=False``: the good rows' features before standardisation (export's input)."""
    classes = [str(c) for c in bundle["schema"]["label"]["classes"]]
    labels = [trim(v) for v in strings(raw.table.column(raw.label), raw.label)]
    code = f"{raw.label}: label not among the model's classes"
    label_reasons = [(code, f"{code}: {v}") if v not in (None, "") and v not in classes else None for v in labels]
    reasons = featurize.first_reasons(raw.malformed or [None] * raw.rows, *(b.reasons(raw) for b in builders), label_reasons)
    good = np.flatnonzero([r is None for r in reasons])
    bad = np.flatnonzero([r is not None for r in reasons])
    columns = {}
    for b in builders:
        columns.update(b.outputs(raw, good, bundle["featurizer"][b.name], standardize))
    index = {c: i for i, c in enumerate(classes)}
    columns[LABEL_COLUMN] = pa.array([index.get(labels[i]) for i in good], pa.int32())
    columns[ROW_ID_COLUMN] = pa.array(_row_ids(raw, good, salt), pa.int64())
    rejected = raw.table.select(raw.columns).take(pa.array(bad, pa.int64()))
    rejected = rejected.append_column(REASON_COLUMN, pa.array([reasons[i][1] for i in bad], pa.string()))
    rejected = rejected.append_column("reason_code", pa.array([reasons[i][0] for i in bad], pa.string()))
    return pa.table(columns), rejected


def _row_ids(raw: RawRows, rows: np.ndarray, salt: int) -> np.ndarray:
    taken = raw.table.select(raw.key).take(pa.array(rows, pa.int64()))
    try:
        keys = [strings(taken.column(c), c) for c in raw.key]
    except UnsupportedKeyType as err:
        raise PredictError(str(err)) from None
    return row_ids(salt, keys, len(rows))


def _write_predictions(featurized: pa.Table, model_path: str, output: str, batch_rows: int) -> dict:
    """Run score's own task function over the featurized rows; stream them into ``output``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import torch

    from pipeline.score.job import _predictor

    ignore_readonly_arrays()
    threads = torch.get_num_threads()  # the task function pins one thread (one Spark task per core)
    counts = {"rows": 0, "labeled": 0, "correct": 0}
    model = SimpleNamespace(value=storage.read_bytes(model_path))  # what a broadcast offers the task
    try:
        with storage.open_output(output) as f, pq.ParquetWriter(f, OUTPUT_SCHEMA, compression="zstd") as writer:
            batches = featurized.to_batches(max_chunksize=max(batch_rows, 1)) or []
            for batch in _predictor(model, batch_rows)(iter(batches)):
                table = pa.Table.from_batches([batch]).cast(OUTPUT_SCHEMA)
                label, predicted = table.column(LABEL_COLUMN), table.column("prediction_index")
                counts["rows"] += table.num_rows
                counts["labeled"] += table.num_rows - label.null_count
                counts["correct"] += pc.sum(pc.equal(label, predicted).cast("int64")).as_py() or 0
                writer.write_table(table, row_group_size=65536)
    finally:
        torch.set_num_threads(threads)
    return counts


def _write_table(table: pa.Table, location: str) -> None:
    import pyarrow.parquet as pq

    with storage.open_output(location) as f:
        pq.write_table(table, f, compression="zstd")
