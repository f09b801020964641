"""predict (no Spark) writes what score (Spark) writes: the same rows in the same order,
the same row ids, labels, classes and probabilities, the same rejected rows and reasons;
and export checks itself against the run's own test split."""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.predict import PredictError, predict
from pipeline.predict.job import OUTPUT_SCHEMA, rejected_location
from pipeline.score import score
from pipeline.train.worker import train_rank
from tests.conftest import DIGITS_CSV, REPO, digits_config

pytestmark = pytest.mark.spark
UCR = REPO / "data" / "raw" / "ucr"


@pytest.fixture(scope="module")
def trained(digits_version, tmp_path_factory):
    root = digits_version[0].parent.parent
    runs = tmp_path_factory.mktemp("runs")
    train_rank(digits_config(root, runs, "dist.engine=single", "train.epochs=2", "run.name=p"))
    return root, runs / "p"


def _same_predictions(scored_dir, predicted_file):
    """Row for row: ids, labels and classes equal, probabilities within 1e-6."""
    scored = pq.read_table(scored_dir / "predictions")
    predicted = pq.read_table(predicted_file)
    assert predicted.schema == scored.schema == OUTPUT_SCHEMA
    for column in ("row_id", "label", "prediction_index", "prediction"):
        assert predicted.column(column).to_pylist() == scored.column(column).to_pylist(), column
    a, b = (np.stack(t.column("probabilities").to_pylist()) if t.num_rows else np.zeros((0, 0)) for t in (predicted, scored))
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    return predicted


def _same_rejected(scored_dir, predicted_file):
    scored = pq.read_table(scored_dir / "rejected")
    rejected = rejected_location(str(predicted_file))
    if scored.num_rows == 0:
        assert not (predicted_file.parent / rejected).exists()
        return
    predicted = pq.read_table(rejected)
    def key(table):  # the decoder's messages name a BytesIO object by its address
        rows = zip(*(table.column(c).to_pylist() for c in table.column_names))
        return sorted((tuple(re.sub(r" at 0x[0-9a-f]+", "", v) if isinstance(v, str) else v for v in row) for row in rows), key=str)

    assert predicted.column_names == scored.column_names and key(predicted) == key(scored)


def test_schema_is_scores():
    from pipeline.score.job import _arrow_output_schema

    assert OUTPUT_SCHEMA == _arrow_output_schema()


def test_predict_on_the_digits_csv_equals_score_and_imports_no_spark(spark, trained, tmp_path):
    root, run_dir = trained
    score(digits_config(root), spark, run_dir / "model.pt", str(DIGITS_CSV), tmp_path / "scored")
    out = tmp_path / "predicted.parquet"
    # The real command, in a fresh process that must never import pyspark.
    check = ("import sys; from pipeline.cli import main; rc = main(sys.argv[1:]); "
             "spark = sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j')); "
             "print('spark modules:', spark); sys.exit(rc or (3 if spark else 0))")
    done = subprocess.run([sys.executable, "-c", check, "predict", "--model", str(run_dir / "model.pt"), "--input", str(DIGITS_CSV),
                           "--output", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-2:] == [str(out), "spark modules: []"]  # the path is the command's last line
    metrics = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert f"predict: 1797 rows predicted, 0 rejected, accuracy {metrics['accuracy']:.4f} on 1797 labeled rows" in lines
    predicted = _same_predictions(tmp_path / "scored", out)
    assert predicted.num_rows == 1797 and len(set(predicted.column("prediction").to_pylist())) > 1


def test_bad_unlabeled_and_unknown_label_rows_go_where_score_puts_them(spark, trained, tmp_path):
    root, run_dir = trained
    lines = gzip.open(DIGITS_CSV, "rt").read().splitlines()[:30]
    bad = lines[:20] + [
        lines[20].replace(lines[20].split(",")[3], "x", 1),  # not a number
        "1,2,3",  # malformed line
        ",".join(lines[21].split(",")[:64] + ["11"]),  # a label the model does not know
        ",".join(["17"] + lines[22].split(",")[1:]),  # outside [0, 16]
        ",".join(["2.5"] + lines[23].split(",")[1:]),  # not an integer
        ",".join([" 3 "] + lines[24].split(",")[1:]),  # padded: fine
        ",".join(lines[25].split(",")[:64] + [""]),  # no label: predicted, not counted
        ",".join(lines[26].split(",")[:5] + [""] + lines[26].split(",")[6:]),  # missing value
    ]
    (tmp_path / "bad.csv").write_text("\n".join(bad) + "\n")
    scored = score(digits_config(root), spark, run_dir / "model.pt", str(tmp_path / "bad.csv"), tmp_path / "scored")
    result = predict(run_dir / "model.pt", tmp_path / "bad.csv", tmp_path / "p.parquet")
    assert scored.metrics["rejected_rows"] == result.metrics["rejected_rows"] == 6
    for key in ("scored_rows", "labeled_rows", "rejected_by_reason", "accuracy"):
        assert result.metrics[key] == scored.metrics[key], key
    _same_predictions(tmp_path / "scored", tmp_path / "p.parquet")
    _same_rejected(tmp_path / "scored", tmp_path / "p.parquet")
    # Unlabeled input (no label column at all): predicted, no accuracy.
    (tmp_path / "unlabeled.csv").write_text("\n".join(",".join(l.split(",")[:64]) for l in lines) + "\n")
    score(digits_config(root), spark, run_dir / "model.pt", str(tmp_path / "unlabeled.csv"), tmp_path / "scored2")
    result = predict(run_dir / "model.pt", tmp_path / "unlabeled.csv", tmp_path / "u.parquet")
    assert result.metrics["labeled_rows"] == 0 and "accuracy" not in result.metrics and result.rejected is None
    _same_predictions(tmp_path / "scored2", tmp_path / "u.parquet")
    with pytest.raises(PredictError, match="already exists"):
        predict(run_dir / "model.pt", tmp_path / "unlabeled.csv", tmp_path / "u.parquet")


def test_an_old_bundle_needs_the_config_and_a_differing_config_is_refused(trained, tmp_path):
    import torch

    root, run_dir = trained
    bundle = torch.load(run_dir / "model.pt", weights_only=True)
    del bundle["data"]  # as train wrote bundles before predict
    torch.save(bundle, tmp_path / "model.pt")
    with pytest.raises(PredictError, match="--config conf/<experiment>.yaml"):
        predict(tmp_path / "model.pt", DIGITS_CSV, tmp_path / "a.parquet")
    result = predict(tmp_path / "model.pt", DIGITS_CSV, tmp_path / "b.parquet", digits_config(root).data)
    assert result.metrics["scored_rows"] == 1797
    with pytest.raises(PredictError, match=r"feature 'image' is .*\[1, 4, 16\].* in the config"):
        predict(run_dir / "model.pt", DIGITS_CSV, tmp_path / "c.parquet", digits_config(root, None, "data.tensor.shape=[1,4,16]").data)
    assert not any(tmp_path.glob("[ac]*.parquet"))


def test_predict_on_variable_length_series_equals_score(spark, tmp_path):
    """JapaneseVowels, per-series normalised, masked CNN; malformed and gappy lines added."""
    from pipeline.prep import prepare

    conf = REPO / "conf" / "vowels_cnn.yaml"
    common = [f"data.root={tmp_path / 'data'}", f"data.source.path={UCR}/JapaneseVowels_*.ts", "data.sequence.normalize=per_series"]
    prepare(load_config(conf, common), spark)
    train_rank(load_config(conf, [*common, f"run.root={tmp_path}", "run.name=v", "dist.engine=single", "train.epochs=1",
                                  "model.channels=[16,16]"]))
    text = (UCR / "JapaneseVowels_TEST.ts").read_text().splitlines()
    first = next(l for l in text if l and not l.startswith(("@", "#")))
    extra = ["?," + first.split(",", 1)[1],  # a missing value
             "1,2,3:4",  # 2 dimensions, not 12
             ":".join(["1,2"] * 12) + ":99"]  # a label the model does not know
    (tmp_path / "test.ts").write_text("\n".join(text + extra) + "\n")
    scored = score(load_config(conf, common), spark, tmp_path / "v" / "model.pt", str(tmp_path / "test.ts"), tmp_path / "scored")
    result = predict(tmp_path / "v" / "model.pt", tmp_path / "test.ts", tmp_path / "p.parquet")
    assert scored.metrics["scored_rows"] == result.metrics["scored_rows"] == 370
    assert scored.metrics["rejected_by_reason"] == result.metrics["rejected_by_reason"] and result.metrics["rejected_rows"] == 3
    _same_predictions(tmp_path / "scored", tmp_path / "p.parquet")
    _same_rejected(tmp_path / "scored", tmp_path / "p.parquet")


def test_predict_on_an_image_folder_equals_score(spark, tmp_path):
    """Digits as PNG files under <class>/ folders (one corrupt file, one without a class folder)."""
    from PIL import Image

    from pipeline.prep import prepare

    images = tmp_path / "images"
    rows = np.loadtxt(gzip.open(DIGITS_CSV, "rt"), delimiter=",", max_rows=300).astype(int)
    for i, row in enumerate(rows):
        (images / str(row[64])).mkdir(parents=True, exist_ok=True)
        Image.fromarray((row[:64].reshape(8, 8) * 15).astype(np.uint8), "L").save(images / str(row[64]) / f"{i}.png")
    (images / "3" / "broken.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(images / "loose.png")
    overrides = [f"data.root={tmp_path / 'data'}", "data.source.type=images", f"data.source.path={images}", "data.tensor=null",
                 "data.image.height=8", "data.image.width=8", "data.image.channels=1", "data.shards.rows_per_shard=100"]
    cfg = load_config(REPO / "conf" / "digits_cnn.yaml", overrides)
    prepare(cfg, spark)
    train_rank(load_config(REPO / "conf" / "digits_cnn.yaml", [*overrides, f"run.root={tmp_path}", "run.name=i", "dist.engine=single",
                                                               "train.epochs=1"]))
    scored = score(cfg, spark, tmp_path / "i" / "model.pt", str(images), tmp_path / "scored")
    result = predict(tmp_path / "i" / "model.pt", images, tmp_path / "p.parquet")
    assert scored.metrics["scored_rows"] == result.metrics["scored_rows"] == 301  # loose.png: predicted, unlabeled
    assert result.metrics["rejected_by_reason"] == scored.metrics["rejected_by_reason"] == {"image: undecodable": 1}
    scored_rows = pq.read_table(tmp_path / "scored" / "predictions")
    order = np.argsort(scored_rows.column("row_id").to_numpy())  # many files, many Spark partitions: compare by id
    predicted = pq.read_table(tmp_path / "p.parquet")
    assert np.array_equal(np.sort(predicted.column("row_id").to_numpy()), scored_rows.column("row_id").to_numpy()[order])
    by_id = {r["row_id"]: r for r in predicted.to_pylist()}
    for r in scored_rows.take(pa.array(order)).to_pylist():
        p = by_id[r["row_id"]]
        assert (p["label"], p["prediction_index"], p["prediction"]) == (r["label"], r["prediction_index"], r["prediction"])
        np.testing.assert_allclose(p["probabilities"], r["probabilities"], atol=1e-6, rtol=0)
    assert pq.read_table(rejected_location(str(tmp_path / "p.parquet"))).column("path").to_pylist() == [f"file:{images}/3/broken.png"]
    _same_rejected(tmp_path / "scored", tmp_path / "p.parquet")


def test_row_ids_of_typed_columns_are_sparks(spark):
    """JSON and Parquet columns are typed: their row ids hash Spark's text of each value."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, DoubleType, FloatType, LongType, StringType, StructField, StructType

    from pipeline.predict.spark_compat import row_ids, strings

    table = pa.table({
        "i": pa.array([0, -5, 2**40, None, 7, 12], pa.int64()),
        "d": pa.array([0.1, 1e7, 1.5e-4, -0.0, float("nan"), 123456.789], pa.float64()),
        "f": pa.array([0.1, 3.0, 1e10, None, 2.5e-5, -1.25], pa.float32()),
        "b": pa.array([True, False, None, True, False, True]),
        "s": pa.array(["héllo", "", None, " x ", "1,2", "a" * 40]),
    })
    types = [LongType(), DoubleType(), FloatType(), BooleanType(), StringType()]
    df = spark.createDataFrame([tuple(r.values()) for r in table.to_pylist()],  # nulls stay nulls, NaN stays NaN
                               StructType([StructField(c, t) for c, t in zip(table.column_names, types)]))
    for salt in (0, 7, 2**40):
        keys = [F.coalesce(F.col(c).cast("string"), F.lit("")) for c in table.column_names]
        expected = [r[0] for r in df.select(F.xxhash64(F.lit(salt), *keys)).collect()]
        got = row_ids(salt, [strings(table.column(c), c) for c in table.column_names], table.num_rows)
        assert got.tolist() == expected, salt
    assert [strings(table.column(c), c) for c in ("d", "f")] == [
        [r[0] for r in df.select(F.col(c).cast("string")).collect()] for c in ("d", "f")]


def test_export_checks_itself_on_the_runs_test_split(trained, tmp_path):
    from pipeline.predict.export import export_model

    _, run_dir = trained
    for fmt in ("torchscript", "onnx"):
        result = export_model(run_dir / "model.pt", fmt, tmp_path / f"m.{fmt}")
        assert result.rows_checked == 32 and result.max_difference <= 1e-4 and (tmp_path / f"m.{fmt}").is_file()
