"""predict without Spark: the command, how it reads inputs, and the Spark arithmetic it
redoes (row-id hash, value text, number parsing). Equality with score itself is shown in
tests/spark/test_predict.py."""
from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.predict.inputs import read_input
from pipeline.predict.spark_compat import java_double, java_float, to_double, xxh64
from tests.conftest import DIGITS_CSV
from tests.unit.test_export import digits_bundle


def _xxh64(data: bytes, seed: int) -> int:
    return int(xxh64(np.frombuffer(data, np.uint8).reshape(1, len(data)), np.array([seed], np.uint64))[0])


def test_xxh64_is_the_reference_algorithm():
    # Published XXH64 values (xxHash's own and python-xxhash's examples): short input, the
    # 4- and 1-byte tails, and more than one 32-byte stripe.
    assert _xxh64(b"", 0) == 0xEF46DB3751D8E999
    assert _xxh64(b"a", 0) == 0xD24EC4F1A98C6E5B
    assert _xxh64(b"abc", 0) == 0x44BC2CF5AD770999
    assert _xxh64(b"Nobody inspects the spammish repetition", 0) == 0xFBCEA83C8A378BF1


@pytest.mark.parametrize("value,text", [(0.0, "0.0"), (-0.0, "-0.0"), (1.0, "1.0"), (0.1, "0.1"), (1e7, "1.0E7"),
                                        (9999999.0, "9999999.0"), (0.001, "0.001"), (9.9e-4, "9.9E-4"), (1e21, "1.0E21"),
                                        (123456.789, "123456.789"), (-1.5e-10, "-1.5E-10"), (float("nan"), "NaN"),
                                        (float("-inf"), "-Infinity")])
def test_doubles_print_as_java_prints_them(value, text):
    assert java_double(value) == text


def test_floats_print_with_float_digits():
    assert [java_float(np.float32(v)) for v in (0.1, 1e10, 3.0, 2.5e-5)] == ["0.1", "1.0E10", "3.0", "2.5E-5"]


@pytest.mark.parametrize("text,value", [("3", 3.0), (" 3 ", 3.0), ("\t2.5\n", 2.5), ("1e3", 1000.0), ("2d", 2.0), (".5", 0.5),
                                        ("Infinity", float("inf")), ("-inf", float("-inf")), ("x", None), ("1_000", None),
                                        ("", None), ("0x10", None)])
def test_numbers_parse_as_sparks_cast(text, value):
    assert to_double(text) == value


def test_json_columns_are_sorted_and_typed_as_spark_infers(tmp_path):
    (tmp_path / "a.json").write_text('{"b": 1, "a": "x", "c": 1}\n{"b": 2, "a": 3.50, "c": 2.5}\nnot json\n\n{"b": null, "a": true}\n')
    cfg = load_config(None, ["data.source.type=json", "data.source.label=a", "data.table.numeric=[b,c]"])
    raw = read_input(cfg.data, str(tmp_path / "a.json"))
    assert raw.columns == ["a", "b", "c"] and raw.rows == 4
    assert raw.table.schema.types == [pa.string(), pa.int64(), pa.float64()]
    assert raw.table.column("a").to_pylist() == ["x", "3.50", None, "true"]  # numbers in a text column: as written
    assert raw.malformed[2] == ("malformed line: not a JSON object", "malformed line: not a JSON object: not json")


def test_csv_lines_with_other_field_counts_are_malformed_rows(tmp_path):
    (tmp_path / "a.csv").write_text("1,2,a\n3,,b\n4,5\n6,7,c,d\n")
    cfg = load_config(None, ["data.source.label=c2", "data.table.numeric=[c0,c1]"])
    raw = read_input(cfg.data, str(tmp_path / "a.csv"))
    assert raw.table.column("c1").to_pylist() == ["2", None, "5", "7"]  # empty field: null, as Spark reads it
    assert [m and m[1] for m in raw.malformed] == [None, None, "malformed line: expected 3 fields: 4,5",
                                                   "malformed line: expected 3 fields: 6,7,c,d"]


def test_the_command_writes_score_columns_and_never_overwrites(tmp_path, capsys):
    model = digits_bundle(tmp_path)
    out = tmp_path / "p.parquet"
    assert main(["predict", "--model", str(model), "--input", str(DIGITS_CSV), "--output", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(out) and lines[0].startswith("predict: 1797 rows predicted, 0 rejected, accuracy ")
    table = pq.read_table(out)
    assert table.column_names == ["row_id", "label", "prediction_index", "prediction", "probabilities"] and table.num_rows == 1797
    assert table.column("label").to_pylist()[:3] == [0, 1, 2]  # the file's first labels, in input order
    assert main(["predict", "--model", str(model), "--input", str(DIGITS_CSV), "--output", str(out)]) == 1
    assert "already exists; predict never overwrites" in capsys.readouterr().err


def test_print_config_shows_the_bundles_input_settings_or_the_config(tmp_path, capsys):
    import yaml

    model = digits_bundle(tmp_path)
    assert main(["predict", "--model", str(model), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["data"]
    assert printed["source"]["label"] == "c64" and printed["tensor"]["shape"] == [1, 8, 8] and "shards" not in printed
    assert main(["export", "--model", str(model), "--config", "conf/digits_cnn.yaml", "train.epochs=3", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["epochs"] == 3
    assert main(["predict", "--model", str(model), "--input", "x", "--output", "y", "train.epochs=3"]) == 2
    assert "need --config" in capsys.readouterr().err


def test_export_command_prints_its_inputs_and_the_file(tmp_path, capsys):
    model = digits_bundle(tmp_path)
    out = tmp_path / "m.pt2"
    assert main(["export", "--model", str(model), "--format", "torchscript", "--output", str(out), "--input", str(DIGITS_CSV)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(out) and out.is_file() and "inputs image float32['B', 1, 8, 8]" in lines[0]


def test_decimal_columns_read_as_spark_casts_them_and_other_types_are_one_clear_line():
    import decimal

    import pyarrow as pa

    from pipeline.errors import is_user_error
    from pipeline.predict.featurize import _number
    from pipeline.predict.spark_compat import UnsupportedKeyType, strings

    column = pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("-2.25")], pa.decimal128(5, 2))
    assert strings(column, "price") == ["1.50", None, "-2.25"]  # cast(decimal(5,2) AS string)
    assert _number(decimal.Decimal("1.50")) == 1.5  # try_cast(decimal AS double)
    with pytest.raises(UnsupportedKeyType, match=r"column 'day' is date32\[day\]: .*cast it") as caught:
        strings(pa.array([1], pa.date32()), "day")
    assert is_user_error(caught.value)
