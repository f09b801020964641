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
