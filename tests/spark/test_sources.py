"""Every source type through the same prepare job (local[2]), and its bad-input errors."""
import gzip
from pathlib import Path
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ModelConfig, load_config
from pipeline.data import ShardReader
from pipeline.models import build_model
from pipeline.prep import PrepareError, prepare
from pipeline.prep import job as prep_job
from pipeline.prep.raw import SourceError
from tests.conftest import DIGITS_CSV, REPO

pytestmark = pytest.mark.spark
UCR = REPO / "data" / "raw" / "ucr"


def _cfg(tmp_path, *overrides, conf=None):
    return load_config(conf, [f"data.root={tmp_path / 'data'}", *overrides])


def _table(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(10, 3, size=n)
    colour = rng.choice(["red", "green", "blue", "teal"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    label = np.where(x1 + (colour == "red") > 0.5, "yes", "no")
    return {"id": np.arange(n), "x1": x1, "x2": x2, "colour": colour, "label": label}


TABLE_OVERRIDES = ["name=t", "data.source.label=label", "data.source.key=[id]", "data.table.numeric=[x1,x2]", "data.table.categorical=[colour]", "data.table.top_k=3"]


def _write_formats(tmp_path, cols):
    import csv

    n = len(cols["id"])
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(cols))
        for i in range(n):
            w.writerow([cols[c][i] for c in cols])
    with open(tmp_path / "t.json", "w") as f:
        for i in range(n):
            f.write(json.dumps({c: (v[i].item() if hasattr(v[i], "item") else v[i]) for c, v in cols.items()}) + "\n")
    pq.write_table(pa.table(cols), tmp_path / "t.parquet")


def test_csv_json_parquet_tables_give_the_same_dataset(spark, tmp_path):
    cols = _table()
    _write_formats(tmp_path, cols)
    manifests = {}
    for fmt in ("csv", "json", "parquet"):
        extra = ["data.source.header=true"] if fmt == "csv" else []
        cfg = _cfg(tmp_path / fmt, f"data.source.type={fmt}", f"data.source.path={tmp_path / f't.{fmt}'}", *TABLE_OVERRIDES, *extra)
        manifests[fmt] = prepare(cfg, spark)
    ref = manifests["csv"].manifest
    assert ref["input_rows"] == 400 and ref["rejected"]["rows"] == 0
    assert ref["schema"]["features"]["numeric"]["shape"] == [2]
    # top_k=3: teal (rarest) falls into the out-of-vocabulary bucket 0
    assert ref["featurizer"]["categorical"]["vocabularies"]["colour"] == ["red", "green", "blue"]
    assert ref["schema"]["features"]["categorical"]["cardinalities"] == [4]
    assert ref["schema"]["label"]["classes"] == ["no", "yes"]
    for fmt, result in manifests.items():
        m = result.manifest
        assert {s: v["rows"] for s, v in m["splits"].items()} == {s: v["rows"] for s, v in ref["splits"].items()}, fmt
        assert np.allclose(m["featurizer"]["numeric"]["mean"], ref["featurizer"]["numeric"]["mean"]), fmt
    # the featurizer is fitted on train only and applied to every split
    train_ids = set()
    for shard in ref["splits"]["train"]["shards"]:
        train_ids |= set(pq.read_table(Path(manifests["csv"].version_dir) / shard["path"], columns=["row_id"])["row_id"].to_pylist())
    batch = next(iter(ShardReader(manifests["parquet"].version_dir, "train", 0, 1, 256, shuffle_buffer=1)))
    assert abs(batch["numeric"].mean().item()) < 0.2 and batch["categorical"].max() <= 3
    # Exactly float32((x - mean) / std) in double, per column, in every split, from text and typed sources.
    for fmt in ("csv", "parquet"):
        m = manifests[fmt].manifest
        mean, std = (np.array(m["featurizer"]["numeric"][k]) for k in ("mean", "std"))
        expected = ((np.stack([cols["x1"], cols["x2"]], 1) - mean) / std).astype(np.float32)
        written = np.concatenate([np.array(pq.read_table(Path(manifests[fmt].version_dir) / s["path"], columns=["numeric"])["numeric"].to_pylist(), dtype=np.float32)
                                  for v in m["splits"].values() for s in v["shards"]])
        assert np.array_equal(np.unique(written, axis=0), np.unique(expected, axis=0)), fmt


def test_bad_table_values_are_rejected_per_column(spark, tmp_path):
    lines = ["id,x1,x2,colour,label", "1,0.5,1,red,yes", "2,abc,1,red,no", "3,inf,1,blue,no", "4,,2,red,yes",
             "5,1,2,red,maybe", "6,1,2,green", "7,0.1,0.2,,no"]
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    cfg = _cfg(tmp_path, "data.source.type=csv", f"data.source.path={tmp_path / 'bad.csv'}", "data.source.header=true",
               "data.source.classes=['no','yes']",  # quoted: YAML reads bare no/yes as booleans
               "data.reject.action=quarantine", "data.split.train=1.0", "data.split.val=0", "data.split.test=0",
               *TABLE_OVERRIDES)
    m = prepare(cfg, spark).manifest
    assert m["rejected"]["by_reason"] == {
        "x1: not a number": 1, "x1: NaN or infinite": 1, "x1: missing value": 1,
        "label: label not in data.source.classes": 1, "malformed line: expected 5 fields": 1,
    }
    assert m["splits"]["train"]["rows"] == 2  # a null category is valid: it maps to bucket 0


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_typed_sources_with_strings_in_a_numeric_column_reject_those_rows(spark, tmp_path, fmt):
    cols = _table(40)
    x1 = [str(v) for v in cols["x1"]]
    x1[3], x1[7] = "abc", "n/a"  # one bad field makes the whole column a string column
    cols["x1"] = np.array(x1, dtype=object)
    if fmt == "json":
        with open(tmp_path / "t.json", "w") as f:
            for i in range(40):
                row = {c: (v[i].item() if hasattr(v[i], "item") else v[i]) for c, v in cols.items()}
                row["x1"] = float(row["x1"]) if i not in (3, 7) else row["x1"]  # numbers stay numbers in JSON
                f.write(json.dumps(row) + "\n")
    else:
        pq.write_table(pa.table({k: list(v) for k, v in cols.items()}), tmp_path / "t.parquet")
    cfg = _cfg(tmp_path, f"data.source.type={fmt}", f"data.source.path={tmp_path / f't.{fmt}'}", *TABLE_OVERRIDES,
               "data.reject.max_fraction=0.1")
    m = prepare(cfg, spark).manifest  # ANSI mode would have failed the whole job on "abc"
    assert m["rejected"]["by_reason"] == {"x1: not a number": 2} and m["input_rows"] == 40


def test_typed_numeric_reasons_name_the_column_and_the_value(spark, tmp_path):
    """The typed checks (one SQL expression, see validate._typed_numeric_reason): each bad
    value gets its column's reason and the value itself, also under a name with a quote."""
    n = 40
    cols = _table(n)
    x1 = [float(v) for v in cols["x1"]]
    x1[1], x1[2], x1[3], x1[4] = float("nan"), float("inf"), -float("inf"), None
    pq.write_table(pa.table({"id": cols["id"], "x'1": pa.array(x1, pa.float64()), "x2": cols["x2"], "colour": cols["colour"],
                             "label": cols["label"]}), tmp_path / "t.parquet")
    overrides = [o.replace("[x1,x2]", "[\"x'1\",x2]") for o in TABLE_OVERRIDES]
    result = prepare(_cfg(tmp_path, "data.source.type=parquet", f"data.source.path={tmp_path / 't.parquet'}", *overrides,
                          "data.reject.max_fraction=0.2"), spark)
    m = result.manifest
    assert m["rejected"]["by_reason"] == {"x'1: NaN or infinite": 3, "x'1: missing value": 1} and m["input_rows"] == n
    details = sorted(r["reason"] for r in pq.read_table(Path(result.version_dir) / "rejected").to_pylist())
    assert details == ["x'1: NaN or infinite: -Infinity", "x'1: NaN or infinite: Infinity", "x'1: NaN or infinite: NaN",
                       "x'1: missing value"]


def test_table_config_naming_a_missing_column(spark, tmp_path):
    _write_formats(tmp_path, _table(20))
    with pytest.raises(SourceError, match=r"data.table.numeric names column\(s\) \['x9'\] not in the input; columns are \['id', 'x1'"):
        prepare(_cfg(tmp_path, "data.source.type=parquet", f"data.source.path={tmp_path / 't.parquet'}", *TABLE_OVERRIDES, "data.table.numeric=[x9]"), spark)


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    """The real digits written as PNG files in class folders, plus one corrupt file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("digit_pngs")
    with gzip.open(DIGITS_CSV, "rt") as f:
        rows = [list(map(int, line.split(","))) for line in f][:300]
    for i, row in enumerate(rows):
        folder = root / str(row[-1])
        folder.mkdir(exist_ok=True)
        pixels = (np.array(row[:64], dtype=np.uint8).reshape(8, 8) * 15).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    (root / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root, len(rows)


def test_image_folder_is_decoded_resized_and_corrupt_files_rejected(spark, tmp_path, digit_pngs):
    root, n = digit_pngs
    cfg = _cfg(tmp_path, "name=pngs", "data.source.type=images", f"data.source.path={root}", "data.image.height=8",
               "data.image.width=8", "data.image.channels=1", "data.shards.rows_per_shard=100", "model.type=cnn")
    result = prepare(cfg, spark)
    m = result.manifest
    assert m["input_rows"] == n + 1
    assert m["rejected"]["by_reason"] == {"image: undecodable": 1}
    rejected = pq.read_table(Path(result.version_dir) / "rejected").to_pylist()
    assert rejected[0]["path"].endswith("3/broken.png") and rejected[0]["reason"].startswith("image: undecodable: ")
    assert len(rejected[0]["reason"]) > len("image: undecodable: ")  # the decoder's own message follows
    assert m["schema"]["features"]["image"] == {"kind": "tensor", "dtype": "uint8", "shape": [1, 8, 8]}
    assert m["schema"]["label"]["classes"] == [str(d) for d in range(10)]
    # pixels survive: the PNG holds value*15, exactly what the CSV said
    shard = m["splits"]["train"]["shards"][0]
    t = pq.read_table(Path(result.version_dir) / shard["path"]).to_pydict()
    assert max(max(img) for img in t["image"]) <= 240 and all(v % 15 == 0 for v in t["image"][0])


def test_image_folder_resizes_to_rgb(spark, tmp_path, digit_pngs):
    root, _ = digit_pngs
    cfg = _cfg(tmp_path, "name=rgb", "data.source.type=images", f"data.source.path={root}", "data.image.height=12",
               "data.image.width=10", "data.image.channels=3", "data.reject.action=quarantine")
    m = prepare(cfg, spark).manifest
    assert m["schema"]["features"]["image"]["shape"] == [3, 12, 10] and len(m["featurizer"]["image"]["mean"]) == 3


def test_nested_folders_label_by_the_first_folder_and_odd_images_decode(spark, tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for i in range(12):  # class "a": 16-bit greys two folders deep; class "b": palette images
        (root / "a" / "scans" / "2024").mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.integers(0, 65535, (6, 6))).astype(np.uint16)).save(root / "a" / "scans" / "2024" / f"{i}.png")
        (root / "b").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (6, 6)).astype(np.uint8), "L").convert("P").save(root / "b" / f"{i}.png")
    Image.new("L", (6, 6)).save(root / "stray.png")  # no class folder
    cfg = _cfg(tmp_path, "name=nested", "data.source.type=images", f"data.source.path={root}", "data.image.height=6",
               "data.image.width=6", "data.image.channels=1", "data.reject.max_fraction=0.1")
    result = prepare(cfg, spark)
    m = result.manifest
    assert m["schema"]["label"]["classes"] == ["a", "b"] and m["input_rows"] == 25
    assert m["rejected"]["by_reason"] == {"label: missing label": 1}
    rows = pa.concat_tables(pq.read_table(Path(result.version_dir) / s["path"]) for split in m["splits"].values()
                            for s in split["shards"]).to_pydict()
    greys = [max(img) for img, y in zip(rows["image"], rows["label"]) if y == 0]
    assert len(greys) == 12 and max(greys) > 200  # scaled from 16 bits, not clipped to one value
    assert len({tuple(img) for img, y in zip(rows["image"], rows["label"]) if y == 0}) == 12


def test_ucr_gunpoint_keeps_the_archive_split(spark, tmp_path):
    cfg = _cfg(tmp_path, conf=REPO / "conf" / "gunpoint_cnn.yaml")
    m = prepare(cfg, spark).manifest
    assert m["input_rows"] == 200 and m["rejected"]["rows"] == 0
    assert m["splits"]["test"]["rows"] == 150 and m["splits"]["train"]["rows"] + m["splits"]["val"]["rows"] == 50
    assert m["schema"]["features"]["series"] == {"kind": "tensor", "dtype": "float32", "shape": [1, 150]}
    assert m["schema"]["label"]["classes"] == ["1", "2"]


def test_ucr_variable_length_vowels_are_not_padded_on_disk(spark, tmp_path):
    cfg = _cfg(tmp_path, conf=REPO / "conf" / "vowels_rnn.yaml")
    result = prepare(cfg, spark)
    m = result.manifest
    assert m["input_rows"] == 640 and m["splits"]["test"]["rows"] == 370
    assert m["schema"]["features"]["series"] == {"kind": "sequence", "dtype": "float32", "dims": 12}
    lengths = []
    for split in m["splits"].values():
        for shard in split["shards"]:
            t = pq.read_table(Path(result.version_dir) / shard["path"])
            values = t.column("series").to_pylist()
            ls = t.column("series_length").to_pylist()
            assert [len(v) for v in values] == [n * 12 for n in ls]  # exactly length x dims, no padding
            lengths += ls
    assert min(lengths) == 7 and max(lengths) == 29
    batch = next(iter(ShardReader(result.version_dir, "train", 0, 1, 16)))
    assert batch["series"].shape[0] == 16 and batch["series"].shape[1] == batch["series_length"].max()

    def padded_steps(bucket):
        reader = ShardReader(result.version_dir, "test", 0, 2, 16, bucket_by_length=bucket, shuffle_buffer=128)
        batches = list(reader)
        ids = sorted(i for b in batches for i in b["row_id"].tolist())
        return len(batches), ids, sum(b["series"].shape[0] * b["series"].shape[1] for b in batches)

    plain, bucketed = padded_steps(False), padded_steps(True)
    assert bucketed[:2] == plain[:2]  # same batches per rank, same rows
    assert bucketed[2] < 0.9 * plain[2]  # less padding


def test_malformed_ts_lines_are_rejected(spark, tmp_path):
    src = (UCR / "JapaneseVowels_TRAIN.ts").read_text().splitlines()
    data_at = next(i for i, line in enumerate(src) if line.lower().startswith("@data"))
    good = src[data_at + 1 : data_at + 41]
    dims11 = ":".join(good[0].split(":")[1:])  # one dimension short
    bad_number = good[1].replace(",", ",x", 1)
    ragged = good[2].split(":")
    ragged[0] = ragged[0] + ",1.0"
    lines = src[: data_at + 1] + good[3:] + [dims11, bad_number, ":".join(ragged)]
    (tmp_path / "Toy_TRAIN.ts").write_text("\n".join(lines) + "\n")
    (tmp_path / "Toy_TEST.ts").write_text("\n".join(src[: data_at + 1] + good[:3]) + "\n")
    cfg = _cfg(tmp_path, "name=toy", "data.source.type=ucr", f"data.source.path={tmp_path}/Toy_*.ts", "data.reject.action=quarantine")
    m = prepare(cfg, spark).manifest
    assert m["rejected"]["by_reason"] == {"series: malformed": 3}
    assert m["input_rows"] == 43 and m["splits"]["test"]["rows"] == 3


def test_synthetic_data_do_not_depend_on_partitioning(spark, tmp_path):
    def rows(partitions):
        cfg = _cfg(tmp_path / str(partitions), conf=REPO / "conf" / "synth_tabular_mlp.yaml",
                   *["data.source.synthetic.rows=3000", f"data.source.synthetic.partitions={partitions}"])
        result = prepare(cfg, spark)
        table = pa.concat_tables(pq.read_table(Path(result.version_dir) / s["path"]) for s in result.manifest["splits"]["train"]["shards"])
        return result.manifest, table.sort_by("row_id").to_pydict()

    (m1, a), (m3, b) = rows(1), rows(3)
    assert m1["fingerprint"] != m3["fingerprint"]  # the config differs...
    assert a == b  # ...the rows do not
    assert m1["schema"]["label"]["num_classes"] == 3


@pytest.mark.parametrize("conf", ["synth_images_cnn.yaml", "synth_sequences_rnn.yaml"])
def test_synthetic_images_and_sequences(spark, tmp_path, conf):
    cfg = _cfg(tmp_path, "data.source.synthetic.rows=500", conf=REPO / "conf" / conf)
    m = prepare(cfg, spark).manifest
    assert m["input_rows"] == 500 and m["rejected"]["rows"] == 0
    kind = next(iter(m["schema"]["features"].values()))["kind"]
    assert kind == ("tensor" if "images" in conf else "sequence")


def test_shards_balanced_and_sized_by_bytes(spark, tmp_path):
    cfg = _cfg(tmp_path, "data.source.synthetic.rows=5000", "data.shards.bytes_per_shard=40000", "data.shards.compression=snappy",
               conf=REPO / "conf" / "synth_tabular_mlp.yaml")
    m = prepare(cfg, spark).manifest
    sizes = [s["rows"] for s in m["splits"]["train"]["shards"]]
    # 8 float32 + 2 int32 + 12 bytes per row: 40000 bytes ~ 769 rows per shard
    assert len(sizes) == -(-m["splits"]["train"]["rows"] // 769)
    assert max(sizes) / min(sizes) <= 1.1


def test_a_failed_run_publishes_nothing_and_the_next_succeeds(spark, tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "data.source.synthetic.rows=600", conf=REPO / "conf" / "synth_tabular_mlp.yaml")
    real = prep_job.shards.write_split
    calls = []

    def dies_on_val(df, **kw):
        calls.append(kw["split"])
        if kw["split"] == "val":
            raise RuntimeError("executor lost")
        return real(df, **kw)

    monkeypatch.setattr(prep_job.shards, "write_split", dies_on_val)
    with pytest.raises(RuntimeError, match="executor lost"):
        prepare(cfg, spark)
    dataset = tmp_path / "data" / "synth_tabular"
    assert calls == ["train", "val"] and list(dataset.iterdir()) == []  # no version, no LATEST, no staging
    monkeypatch.setattr(prep_job.shards, "write_split", real)
    result = prepare(cfg, spark)
    assert result.published and (dataset / "LATEST").read_text().strip() == Path(result.version_dir).name


def test_unknown_source_type_is_a_config_error(tmp_path):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="data.source.type='xml' is not one of: csv, json, parquet, images, ucr, synthetic"):
        _cfg(tmp_path, "data.source.type=xml")


def test_empty_table_is_an_error(spark, tmp_path):
    (tmp_path / "empty.json").write_text("")
    with pytest.raises((SourceError, PrepareError), match="empty"):
        prepare(_cfg(tmp_path, "data.source.type=json", f"data.source.path={tmp_path / 'empty.json'}", *TABLE_OVERRIDES), spark)


def _shard_rows(result, split="train") -> dict:
    tables = [pq.read_table(Path(result.version_dir) / s["path"]) for s in result.manifest["splits"][split]["shards"]]
    return pa.concat_tables(tables).to_pydict() if tables else {"series": [], "series_length": []}


def test_ucr_files_as_the_archive_ships_them(spark, tmp_path):
    """No @equalLength/@seriesLength (length derived), labels with spaces, '?' values,
    timestamps: each read as the archive means it."""
    src = (UCR / "GunPoint_TRAIN.ts").read_text().splitlines()
    data_at = next(i for i, line in enumerate(src) if line.lower().startswith("@data"))
    cases = [line.rsplit(":", 1) for line in src[data_at + 1 : data_at + 41]]
    names = {"1": '"gun draw"', "2": "point"}
    header = ["@problemName Toy", "@univariate true", '@classLabel true "gun draw" point', "@data"]

    def write(folder, lines, head=header):
        folder.mkdir()
        for part in ("TRAIN", "TEST"):
            (folder / f"Toy_{part}.ts").write_text("\n".join(head + lines[:30] if part == "TRAIN" else head + lines[30:]) + "\n")
        return [f"data.source.path={folder}/Toy_*.ts", "name=toy", "data.source.type=ucr", "data.sequence.normalize=none",
                "data.reject.action=quarantine", f"data.root={tmp_path / folder.name / 'data'}"]

    plain = [f"{values}:{names[label]}" for values, label in cases]
    gaps = list(plain)
    for i in (0, 1):  # two series with missing values: one inside, one at the start
        values = cases[i][0].split(",")
        values[5 if i == 0 else 0] = "?"
        gaps[i] = f"{','.join(values)}:{names[cases[i][1]]}"
    stamped = [",".join(f"(2026-01-01 00:00:{t:02d},{v})" for t, v in enumerate(values.split(","))) + f":{names[label]}"
               for values, label in cases]

    result = prepare(load_config(None, write(tmp_path / "plain", plain)), spark)
    m = result.manifest
    assert m["schema"]["features"]["series"] == {"kind": "tensor", "dtype": "float32", "shape": [1, 150]}  # derived
    assert m["schema"]["label"]["classes"] == ["gun draw", "point"] and m["rejected"]["rows"] == 0
    build_model(ModelConfig(type="cnn"), m["schema"])  # a fixed-length series: the CNN takes it

    rejected = prepare(load_config(None, write(tmp_path / "gaps", gaps)), spark).manifest
    assert rejected["rejected"]["by_reason"] == {"series: missing value ('?' or NaN; data.sequence.missing=interpolate fills gaps)": 2}

    filled = prepare(load_config(None, [*write(tmp_path / "filled", gaps), "data.sequence.missing=interpolate"]), spark)
    assert filled.manifest["rejected"]["rows"] == 0
    rows = {key: _shard_rows(filled, "train")[key] + _shard_rows(filled, "val")[key] for key in ("series",)}
    first = [float(v) for v in cases[0][0].split(",")]
    interpolated = [s for s in rows["series"] if abs(s[5] - (first[4] + first[6]) / 2) < 1e-5 and abs(s[4] - first[4]) < 1e-5]
    assert interpolated, "the gap at step 6 is the mean of its neighbours"
    second = [float(v) for v in cases[1][0].split(",")]
    assert any(abs(s[0] - second[1]) < 1e-5 and abs(s[1] - second[1]) < 1e-5 and abs(s[2] - second[2]) < 1e-5 for s in rows["series"])

    timed = prepare(load_config(None, write(tmp_path / "timed", stamped, header[:2] + ["@timeStamps true"] + header[2:])), spark)
    assert timed.manifest["rejected"]["rows"] == 0
    assert sorted(map(tuple, _shard_rows(timed, "test")["series"])) == sorted(map(tuple, _shard_rows(result, "test")["series"]))


def test_per_series_normalisation_and_variable_length_for_the_cnn(spark, tmp_path):
    cfg = _cfg(tmp_path, "data.sequence.normalize=per_series", "model.type=cnn", conf=REPO / "conf" / "vowels_rnn.yaml")
    result = prepare(cfg, spark)
    assert result.manifest["featurizer"]["series"]["normalize"] == "per_series"
    rows = _shard_rows(result, "test")
    for values, length in zip(rows["series"][:50], rows["series_length"][:50]):
        series = np.asarray(values).reshape(length, 12)  # time-major
        assert np.allclose(series.mean(0), 0, atol=1e-4) and np.allclose(series.std(0), 1, atol=1e-3)
    model = build_model(cfg.model, result.manifest["schema"])  # the masked CNN on variable-length series
    batch = next(iter(ShardReader(result.version_dir, "train", 0, 1, 8)))
    assert model(batch).shape == (8, 9)
