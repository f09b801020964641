"""Row groups decoded in parallel (a GPU rank's default) give exactly the batches of the
inline reader, in the same order, resumed mid-epoch too."""
import torch

from bench.gpu import write_image_dataset
from pipeline.data import ShardReader


def _epoch(reader):
    return [{k: v.clone() for k, v in b.items()} for b in reader]


def test_parallel_decoding_yields_the_inline_readers_batches(tmp_path):
    version = write_image_dataset(tmp_path, "images", 1500, size=8, rows_per_shard=200, row_group_rows=32)
    inline = ShardReader(str(version), "train", 0, 1, 24, seed=5, shuffle_buffer=100, decode_threads=0)
    parallel = ShardReader(str(version), "train", 0, 1, 24, seed=5, shuffle_buffer=100, decode_threads=3)
    assert parallel.decode_threads == 3
    for epoch in (0, 1):
        inline.set_epoch(epoch)
        parallel.set_epoch(epoch)
        a, b = _epoch(inline), _epoch(parallel)
        assert len(a) == len(b) == len(inline) > 40
        for x, y in zip(a, b):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        assert a[0]["image"].dtype == torch.uint8
    # Mid-epoch: the parallel reader resumed from the inline one's state gives the rest.
    inline.set_epoch(2)
    it = iter(inline)
    first = [next(it) for _ in range(7)]
    state = inline.state_dict()
    rest = ShardReader(str(version), "train", 0, 1, 24, seed=5, shuffle_buffer=100, decode_threads=3)
    rest.load_state_dict(state)
    inline.set_epoch(2)
    whole = _epoch(inline)
    tail = _epoch(rest)
    assert len(first) + len(tail) == len(whole)
    assert all(torch.equal(x["row_id"], y["row_id"]) for x, y in zip(whole[7:], tail))


def test_groups_fetched_ahead_stop_at_the_byte_bound(tmp_path):
    """``readahead`` groups ahead, but never more than ``max_bytes_ahead`` of them (their
    uncompressed size): a row group of large images must not multiply by the readahead."""
    import pyarrow.parquet as pq

    from pipeline.data.assign import RowGroup
    from pipeline.data.groups import GroupFetcher

    version = write_image_dataset(tmp_path, "images", 600, size=8, rows_per_shard=300, row_group_rows=32)
    files = sorted(version.glob("train/*.parquet"))
    footers = [pq.ParquetFile(f).metadata for f in files]
    order = [RowGroup(s, i, m.row_group(i).num_rows) for s, m in enumerate(footers) for i in range(m.num_row_groups)]
    size = footers[0].row_group(0).total_byte_size
    columns = footers[0].schema.to_arrow_schema().names

    def in_flight(max_bytes_ahead):
        fetcher = GroupFetcher([str(f) for f in files], footers, order, columns, lambda t: t.num_rows, readahead=0,
                               local_parallel=8, max_bytes_ahead=max_bytes_ahead)
        try:
            fetcher.hint(range(len(order)), held=set())
            ahead = len(fetcher._inflight)
            assert [fetcher.get(g) for g in range(len(order))] == [m.row_group(i).num_rows for m in footers for i in range(m.num_row_groups)]
            return ahead
        finally:
            fetcher.close()

    assert len(order) > 8
    assert in_flight(1 << 40) == 8  # the readahead decides
    assert in_flight(int(2.5 * size)) == 2  # the bytes decide
    assert in_flight(1) == 1  # always one, however large


def test_wide_row_groups_decode_in_steps_to_the_same_batches(tmp_path, monkeypatch):
    """A row group of wide rows (images) is decoded a few rows at a time, which keeps the
    decoder in the CPU caches; the batches are the same as decoding it at once."""
    from pipeline.data import groups

    version = write_image_dataset(tmp_path, "images", 1500, size=16, rows_per_shard=400, row_group_rows=128)
    read, chunks = groups.GroupFetcher._read, []

    def spy(self, source, group):
        table = read(self, source, group)
        chunks.append(table.column("image").num_chunks)
        return table

    monkeypatch.setattr(groups.GroupFetcher, "_read", spy)
    epochs = {}
    for step in (2**40, 2**14):  # 768 values a row: whole 128-row groups, then 64 rows a step
        monkeypatch.setattr(groups, "DECODE_STEP_VALUES", step)
        chunks.clear()
        epochs[step] = _epoch(ShardReader(str(version), "train", 0, 1, 24, seed=3, shuffle_buffer=100))
        assert max(chunks) == (1 if step == 2**40 else 2)  # (a shard's last group may be short)
    whole, stepped = epochs.values()
    assert len(whole) == len(stepped) > 40
    assert all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(whole, stepped))
