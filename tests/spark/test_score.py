"""Batch scoring in Spark matches the trainer's own evaluation, keeps bad rows, and
publishes nothing on failure."""
import gzip
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.data import ShardReader
from pipeline.schema import LABEL_COLUMN, ROW_ID_COLUMN
from pipeline.score import ScoreError, score
from pipeline.train.worker import train_rank
from tests.conftest import DIGITS_CSV, digits_config

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def trained(digits_version, tmp_path_factory):
    root = digits_version[0].parent.parent
    runs = tmp_path_factory.mktemp("runs")
    train_rank(digits_config(root, runs, "dist.engine=single", "train.epochs=2", "run.name=s"))
    return root, runs / "s"


def test_scoring_the_test_split_matches_the_trainers_evaluation(spark, digits_version, trained, tmp_path):
    version_dir, _ = digits_version
    root, run_dir = trained
    cfg = digits_config(root)
    result = score(cfg, spark, run_dir / "model.pt", str(DIGITS_CSV), tmp_path / "out")
    predictions = pq.read_table(tmp_path / "out" / "predictions").to_pandas().set_index(ROW_ID_COLUMN)
    assert result.metrics["scored_rows"] == 1797 == len(predictions) and result.metrics["rejected_rows"] == 0

    # The trainer's model on the reader's test batches, row by row.
    bundle = torch.load(run_dir / "model.pt", weights_only=True)
    from pipeline.config import ModelConfig
    from pipeline.models import build_model

    model = build_model(ModelConfig(**bundle["model"]), bundle["schema"], bundle["featurizer"])
    model.load_state_dict(bundle["state_dict"])
    model.eval()
    expected, labels = {}, {}
    with torch.no_grad():
        for batch in ShardReader(version_dir, "test", 0, 1, 64, mode="eval"):
            for rid, pred, y in zip(batch[ROW_ID_COLUMN].tolist(), model(batch).argmax(1).tolist(), batch[LABEL_COLUMN].tolist()):
                expected[rid], labels[rid] = pred, y
    scored = predictions.loc[list(expected)]
    assert scored["prediction_index"].tolist() == list(expected.values())
    assert scored[LABEL_COLUMN].tolist() == list(labels.values())
    accuracy = (scored["prediction_index"] == scored[LABEL_COLUMN]).mean()
    report = json.loads((run_dir / "report.json").read_text())
    assert accuracy == pytest.approx(report["test_accuracy"], abs=1e-12)
    probabilities = torch.from_numpy(np.stack(scored["probabilities"].to_numpy()))
    assert torch.allclose(probabilities.sum(1), torch.ones(len(scored)), atol=1e-5)
    assert scored["prediction"].tolist() == [str(i) for i in scored["prediction_index"]]  # digits' classes are "0".."9"
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["labeled_rows"] == 1797 and 0.5 < metrics["accuracy"] <= 1.0


def test_bad_and_unlabeled_rows(spark, trained, tmp_path):
    root, run_dir = trained
    lines = gzip.open(DIGITS_CSV, "rt").read().splitlines()[:20]
    bad = lines[:10] + [lines[10].replace(lines[10].split(",")[3], "x", 1), "1,2,3"]  # not a number; malformed line
    (tmp_path / "bad.csv").write_text("\n".join(bad) + "\n")
    result = score(digits_config(root), spark, run_dir / "model.pt", str(tmp_path / "bad.csv"), tmp_path / "out")
    assert result.metrics["scored_rows"] == 10 and result.metrics["rejected_rows"] == 2
    rejected = pq.read_table(tmp_path / "out" / "rejected").to_pandas()
    assert sorted(rejected["reason_code"]) == sorted(result.metrics["rejected_by_reason"]) and len(rejected) == 2
    assert any("not a number" in r for r in rejected["reason"])
    # Without the label column: predictions, no accuracy.
    (tmp_path / "unlabeled.csv").write_text("\n".join(",".join(l.split(",")[:64]) for l in lines) + "\n")
    result = score(digits_config(root), spark, run_dir / "model.pt", str(tmp_path / "unlabeled.csv"), tmp_path / "out2")
    assert result.metrics["scored_rows"] == 20 and result.metrics["labeled_rows"] == 0 and "accuracy" not in result.metrics
    # Never overwrites, and a bad model path publishes nothing.
    with pytest.raises(ScoreError, match="already exists"):
        score(digits_config(root), spark, run_dir / "model.pt", str(tmp_path / "bad.csv"), tmp_path / "out")
    with pytest.raises(ScoreError, match="no such model file"):
        score(digits_config(root), spark, tmp_path / "nope.pt", str(tmp_path / "bad.csv"), tmp_path / "out3")
    assert not (tmp_path / "out3").exists() and not list(tmp_path.glob(".out3.tmp-*"))


@pytest.mark.parametrize("override,expect", [
    ("data.source.classes=[9,8,7,6,5,4,3,2,1,0]", r"data.source.classes \['9', '8'.* differ from the model's classes \['0', '1'"),
    ("data.tensor.columns=[" + ",".join(f"c{i}" for i in range(1, 65)) + "]", r"feature 'image' reads columns \[c1, c2, .*the model was trained on \[c0, c1, "),
    ("data.tensor.shape=[1,4,16]", r"feature 'image' is .*\[1, 4, 16\].* in the config"),
])
def test_a_config_that_reads_the_input_differently_from_the_model_is_refused(spark, trained, tmp_path, override, expect):
    root, run_dir = trained
    with pytest.raises(ScoreError, match=expect):
        score(digits_config(root, None, override), spark, run_dir / "model.pt", str(DIGITS_CSV), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_scoring_variable_length_series_does_what_training_did(spark, tmp_path):
    """The masked CNN on JapaneseVowels, per-series normalised: scoring the archive's TEST
    file gives the trainer's test accuracy, also when the scoring config asks for another
    normalisation (the bundle's is the one applied)."""
    from pipeline.config import load_config
    from pipeline.prep import prepare
    from tests.conftest import REPO

    conf = REPO / "conf" / "vowels_cnn.yaml"
    common = [f"data.root={tmp_path / 'data'}", f"data.source.path={REPO / 'data/raw/ucr'}/JapaneseVowels_*.ts"]
    prepare(load_config(conf, [*common, "data.sequence.normalize=per_series"]), spark)
    result = train_rank(load_config(conf, [*common, "data.sequence.normalize=per_series", f"run.root={tmp_path}", "run.name=v",
                                           "dist.engine=single", "train.epochs=3"]))
    report = result["report"]
    scored = score(load_config(conf, common), spark, tmp_path / "v" / "model.pt",
                   f"{REPO / 'data/raw/ucr'}/JapaneseVowels_TEST.ts", tmp_path / "out")
    assert scored.metrics["scored_rows"] == report["test_samples"] == 370
    assert scored.metrics["accuracy"] == pytest.approx(report["test_accuracy"], abs=1e-9) and report["test_accuracy"] > 0.5
