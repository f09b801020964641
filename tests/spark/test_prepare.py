"""The prepare job on the real digits file and on files with planted bad rows (local[2])."""
import gzip
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.prep import PrepareError, prepare
from pipeline.prep.raw import SourceError
from tests.conftest import DIGITS_CSV, digits_config

pytestmark = pytest.mark.spark


def test_digits_counts_reconcile_and_shards_match_the_manifest(digits_version):
    version_dir, m = digits_version
    assert m["input_rows"] == 1797
    kept = sum(s["rows"] for s in m["splits"].values())
    assert kept + m["rejected"]["rows"] == m["input_rows"]
    assert m["rejected"]["rows"] == 0
    # no rejected rows, so no pass wrote them: rejected/ still opens, empty, with the raw
    # columns and the reason
    empty = pq.read_table(version_dir / "rejected")
    assert empty.num_rows == 0 and {"c0", "c63", "c64", "reason", "reason_code"} <= set(empty.column_names)
    assert m["schema"]["features"]["image"] == {"kind": "tensor", "dtype": "uint8", "shape": [1, 8, 8]}
    assert m["schema"]["label"]["num_classes"] == 10
    # 80/10/10 by hash: within a few percent of the fractions
    assert 0.76 < m["splits"]["train"]["rows"] / 1797 < 0.84
    for split, info in m["splits"].items():
        sizes = [s["rows"] for s in info["shards"]]
        assert sum(sizes) == info["rows"]
        assert max(sizes) - min(sizes) <= 1, f"{split} shards unbalanced: {sizes}"
        for shard in info["shards"]:
            f = pq.ParquetFile(version_dir / shard["path"])
            assert f.metadata.num_rows == shard["rows"]
            assert [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)] == shard["row_groups"]
            assert (version_dir / shard["path"]).stat().st_size == shard["bytes"]
            image_type = f.schema_arrow.field("image").type
            assert (str(image_type.value_type), image_type.list_size) == ("uint8", 64)
    assert len(m["splits"]["train"]["shards"]) == 5  # ceil(~1440 / rows_per_shard=300)
    assert (version_dir.parent / "LATEST").read_text().strip() == version_dir.name


def test_pixels_and_labels_survive_the_round_trip(digits_version):
    version_dir, m = digits_version
    with gzip.open(DIGITS_CSV, "rt") as f:
        rows = {tuple(int(v) for v in line.split(",")) for line in f}
    seen = set()
    for split in m["splits"].values():
        for shard in split["shards"]:
            t = pq.read_table(version_dir / shard["path"]).to_pydict()
            for image, label in zip(t["image"], t["label"]):
                seen.add((*image, int(m["schema"]["label"]["classes"][label])))
    assert seen == rows


def test_rerun_publishes_nothing(spark, digits_version, tmp_path):
    version_dir, m = digits_version
    cfg = digits_config(version_dir.parent.parent)
    again = prepare(cfg, spark)
    assert not again.published and Path(again.version_dir) == version_dir
    assert [p.name for p in version_dir.parent.iterdir() if p.name.startswith("v-")] == [version_dir.name]


def test_a_version_missing_a_shard_is_rebuilt_not_called_unchanged(spark, tmp_path, caplog):
    cfg = digits_config(tmp_path / "data")
    first = prepare(cfg, spark)
    shard = first.manifest["splits"]["val"]["shards"][0]
    (Path(first.version_dir) / shard["path"]).unlink()  # what "re-run prepare" must repair
    with caplog.at_level("WARNING"):
        again = prepare(cfg, spark)
    assert again.published and again.version_dir == first.version_dir
    assert f"is not intact ({shard['path']} is missing): rebuilding it" in caplog.text
    assert (Path(again.version_dir) / shard["path"]).stat().st_size == shard["bytes"]
    assert again.manifest["splits"]["val"]["shards"][0]["sha256"] == shard["sha256"]
    assert not prepare(cfg, spark).published  # now intact: unchanged


BAD_ROWS = {
    "c3: not a number": "0,0,0,abc" + ",0" * 60 + ",5",
    "c10: outside [0, 16]": ",".join(["0"] * 10 + ["17"] + ["0"] * 53) + ",3",
    "c0: NaN or infinite": "NaN" + ",0" * 63 + ",1",
    "c5: not an integer": "0,0,0,0,0,2.5" + ",0" * 58 + ",1",
    "c64: label not in data.source.classes": ",".join(["0"] * 64) + ",11",
    "c7: missing value": "0,0,0,0,0,0,0," + ",0" * 56 + ",2",
    "malformed line: expected 65 fields": ",".join(["0"] * 30),
}


def _planted(tmp_path, good: int = 200):
    with gzip.open(DIGITS_CSV, "rt") as f:
        lines = [next(f).strip() for _ in range(good)]
    path = tmp_path / "planted.csv"
    path.write_text("\n".join(lines + list(BAD_ROWS.values())) + "\n")
    return path


def test_bad_rows_are_rejected_with_reasons_and_counts_reconcile(spark, tmp_path):
    path = _planted(tmp_path)
    cfg = digits_config(tmp_path / "data", None, f"data.source.path={path}", "data.shards.rows_per_shard=50")
    result = prepare(cfg, spark)
    m = result.manifest
    assert m["input_rows"] == 200 + len(BAD_ROWS)
    assert m["rejected"]["by_reason"] == {code: 1 for code in BAD_ROWS}
    assert sum(s["rows"] for s in m["splits"].values()) == 200
    rejected = pq.read_table(Path(result.version_dir) / "rejected").to_pylist()
    assert {r["reason_code"] for r in rejected} == set(BAD_ROWS)
    details = {r["reason_code"]: r["reason"] for r in rejected}
    assert details["c3: not a number"] == "c3: not a number: abc"
    assert details["c10: outside [0, 16]"].endswith(": 17")
    assert all(r["c0"] is not None for r in rejected), "rejected rows keep their original values"


def test_rows_lost_on_the_way_are_caught_against_the_input_count(spark, tmp_path, monkeypatch):
    from pipeline.prep import job

    path = _planted(tmp_path, good=60)
    cfg = digits_config(tmp_path / "data", None, f"data.source.path={path}", "data.reject.max_fraction=0.2")
    monkeypatch.setattr(job, "write_rejected", lambda *args, **kwargs: [])  # a writer that loses the rejected rows
    with pytest.raises(PrepareError, match=rf"{60 + len(BAD_ROWS)} input rows, but 60 kept and 0 rejected rows were written"):
        prepare(cfg, spark)
    assert not [p for p in (tmp_path / "data").rglob("manifest.json")], "nothing published"


def test_a_single_class_is_refused(spark, tmp_path):
    path = tmp_path / "one.csv"
    with gzip.open(DIGITS_CSV, "rt") as f:
        path.write_text("".join(line for line in f if line.strip().endswith(",3")))
    cfg = digits_config(tmp_path / "data", None, f"data.source.path={path}", "data.source.classes=null")
    with pytest.raises(PrepareError, match=r"hold 1 class\(es\) \['3'\] in 'c64': a classifier needs at least 2"):
        prepare(cfg, spark)


def test_too_many_rejects_fails_and_publishes_nothing(spark, tmp_path):
    path = _planted(tmp_path, good=20)
    root = tmp_path / "data"
    cfg = digits_config(root, None, f"data.source.path={path}", "data.reject.max_fraction=0.1")
    with pytest.raises(PrepareError, match=r"7 of 27 rows .* failed validation.*Nothing was published"):
        prepare(cfg, spark)
    assert [p for p in root.rglob("*") if p.is_file()] == [], "no version, no LATEST, no staging left behind"


def test_missing_input_and_missing_label_column_are_named(spark, tmp_path):
    with pytest.raises(SourceError, match="nowhere.csv.*does not exist"):
        prepare(digits_config(tmp_path, None, f"data.source.path={tmp_path / 'nowhere.csv'}"), spark)
    with pytest.raises(SourceError, match=r"data.source.label names column\(s\) \['c99'\] not in the input"):
        prepare(digits_config(tmp_path, None, "data.source.label=c99"), spark)
    with pytest.raises(SourceError, match=r"shape \[1, 8, 9\] needs 72 columns but 64"):
        prepare(digits_config(tmp_path, None, "data.tensor.shape=[1,8,9]"), spark)


def test_empty_input_is_an_error(spark, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises((PrepareError, SourceError), match="empty"):
        prepare(digits_config(tmp_path, None, f"data.source.path={empty}"), spark)
