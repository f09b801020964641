"""The shard reader on the real prepared digits version."""
import shutil

import numpy as np
import pytest
import torch

from pipeline.data import ShardError, ShardReader, ShareError
from pipeline.schema import SchemaError

pytestmark = pytest.mark.spark


def _row_ids(reader):
    return [i for b in reader for i in b["row_id"].tolist()]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_rank_gets_the_same_number_of_batches(digits_version, world):
    version_dir, m = digits_version
    readers = [ShardReader(version_dir, "train", r, world, 32, seed=3, prefetch=2) for r in range(world)]
    counts = [sum(1 for _ in rd) for rd in readers]
    assert counts == [m["splits"]["train"]["rows"] // (32 * world)] * world
    batch = next(iter(readers[0]))
    assert batch["image"].shape == (32, 1, 8, 8) and batch["image"].dtype == torch.uint8  # standardised by the model
    assert batch["label"].dtype == torch.int64


def test_shares_are_disjoint_and_epochs_reshuffle(digits_version):
    version_dir, m = digits_version
    readers = [ShardReader(version_dir, "train", r, 2, 16, seed=0) for r in range(2)]
    a, b = (_row_ids(rd) for rd in readers)
    total = m["splits"]["train"]["rows"]
    assert len(a) == len(b) == len(set(a)) == len(set(b)) == (total // 32) * 16
    assert not set(a) & set(b)
    assert total - len(a) - len(b) == total % 32  # only the last partial global batch is dropped
    first = [x["label"].tolist() for x in readers[0]]
    readers[0].set_epoch(1)
    second = [x["label"].tolist() for x in readers[0]]
    readers[0].set_epoch(0)
    assert first != second and first == [x["label"].tolist() for x in readers[0]]


def test_eval_mode_reads_every_row_once_raw_and_the_model_standardises(digits_version):
    from pipeline.config import ModelConfig
    from pipeline.models import build_model

    version_dir, m = digits_version
    rows = sum(len(b["label"]) for r in range(3) for b in ShardReader(version_dir, "test", r, 3, 10, mode="eval"))
    assert rows == m["splits"]["test"]["rows"]
    stats = m["featurizer"]["image"]
    batch = next(iter(ShardReader(version_dir, "test", 0, 1, 64, mode="eval")))
    raw = batch["image"]  # the stored uint8 pixels, 0..16
    assert raw.dtype == torch.uint8 and raw.max() <= 16 and stats["applied_in"] == "model"
    standardized = build_model(ModelConfig(), m["schema"], m["featurizer"])._standardized("image", raw)
    assert torch.allclose(standardized * stats["std"][0] + stats["mean"][0], raw.float(), atol=1e-4)


def test_too_few_rows_for_the_world_is_refused_before_training(digits_version):
    version_dir, _ = digits_version
    with pytest.raises(ShareError, match="cannot fill one global batch"):
        ShardReader(version_dir, "test", 0, 8, 64)


def _copy(version_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(version_dir, dst)
    return dst


def test_missing_truncated_or_altered_shards_are_named(digits_version, tmp_path):
    version_dir, m = digits_version
    shard = m["splits"]["train"]["shards"][1]["path"]
    copy = _copy(version_dir, tmp_path)
    (copy / shard).unlink()
    with pytest.raises(ShardError, match=f"{shard}.*missing"):
        ShardReader(copy, "train", 0, 1, 32)
    shutil.rmtree(copy)
    copy = _copy(version_dir, tmp_path)
    data = (copy / shard).read_bytes()
    (copy / shard).write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=f"{shard}.*truncated"):
        ShardReader(copy, "train", 0, 1, 32)
    shutil.rmtree(copy)
    copy = _copy(version_dir, tmp_path)
    flipped = bytearray(data)
    flipped[100] ^= 0xFF
    (copy / shard).write_bytes(bytes(flipped))
    ShardReader(copy, "train", 0, 1, 32)  # same size: only verify=True can tell
    with pytest.raises(ShardError, match=f"{shard}.*sha256"):
        ShardReader(copy, "train", 0, 1, 32, verify=True)


def test_shard_with_another_schema_is_refused(digits_version, tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    version_dir, m = digits_version
    copy = _copy(version_dir, tmp_path)
    shard = m["splits"]["val"]["shards"][0]
    table = pq.read_table(copy / shard["path"]).drop_columns(["label"]).append_column("label", pa.array(np.zeros(shard["rows"]), pa.float64()))
    pq.write_table(table, copy / shard["path"], row_group_size=64)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["val"]["shards"][0]["bytes"] = (copy / shard["path"]).stat().st_size
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaError, match="column 'label' is double"):
        ShardReader(copy, "val", 0, 1, 32, mode="eval")


def test_resume_mid_epoch_on_another_world_size_is_sample_exact(digits_version):
    version_dir, m = digits_version
    total = m["splits"]["train"]["rows"]
    first = [ShardReader(version_dir, "train", r, 2, 16, seed=4, shuffle_buffer=100) for r in range(2)]
    seen = []
    for rd in first:
        batches = iter(rd)
        for _ in range(5):
            seen += next(batches)["row_id"].tolist()
    state = first[0].state_dict()
    assert state == first[1].state_dict(), "every rank holds the same state"
    assert state["samples_consumed"] == 2 * 5 * 16 and state["world_size"] == 2
    resumed = [ShardReader(version_dir, "train", r, 3, 16, seed=4, shuffle_buffer=100) for r in range(3)]
    for rd in resumed:
        rd.load_state_dict(state)
    assert len({len(rd) for rd in resumed}) == 1, "equal batch counts after the world size changed"
    after = [i for rd in resumed for b in rd for i in b["row_id"].tolist()]
    assert len(after) == len(set(after)) and not set(after) & set(seen)
    assert 0 <= total - len(seen) - len(after) < 3 * 16  # only a last partial global batch is left out


def test_state_from_another_dataset_or_seed_is_refused(digits_version):
    version_dir, _ = digits_version
    reader = ShardReader(version_dir, "train", 0, 1, 16, seed=1)
    state = reader.state_dict()
    with pytest.raises(ShardError, match="dataset_fingerprint='other'"):
        reader.load_state_dict({**state, "dataset_fingerprint": "other"})
    with pytest.raises(ShardError, match="seed=1 but this reader has 2"):
        ShardReader(version_dir, "train", 0, 1, 16, seed=2).load_state_dict(state)


def test_works_as_an_iterable_dataset(digits_version):
    version_dir, _ = digits_version
    reader = ShardReader(version_dir, "val", 0, 1, 50, mode="eval")
    loader = torch.utils.data.DataLoader(reader, batch_size=None)
    assert [len(b["label"]) for b in loader] == [50, 50, 50, 24]
