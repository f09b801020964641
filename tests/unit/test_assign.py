from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data import assign


def _positions(order, segments):
    """Global row ids (shard, group, row) a list of segments covers."""
    return [(s.group.shard, s.group.index, i) for s in segments for i in range(s.start, s.stop)]


layouts = st.lists(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=5), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(layout=layouts, world=st.integers(1, 7), batch=st.integers(1, 16), seed=st.integers(0, 2**16), epoch=st.integers(0, 5), remainder=st.sampled_from(["drop", "pad"]))
def test_shares_are_equal_disjoint_and_cover(layout, world, batch, seed, epoch, remainder):
    shards = [{"row_groups": groups} for groups in layout]
    groups = assign.row_groups(shards)
    total = sum(sum(g) for g in layout)
    if remainder == "drop" and total < world * batch:
        with pytest.raises(assign.ShareError, match="cannot fill one global batch"):
            assign.plan_epoch(total, world, batch, remainder)
        return
    plan = assign.plan_epoch(total, world, batch, remainder)
    order = assign.epoch_order(groups, seed, epoch)
    shares = [_positions(order, assign.segments_for(order, *assign.rank_range(plan, r))) for r in range(world)]
    assert all(len(s) == plan.steps * batch for s in shares)  # equal batch counts on every rank
    seen = Counter(p for s in shares for p in s)
    all_rows = {(g.shard, g.index, i) for g in groups for i in range(g.rows)}
    if remainder == "drop":
        assert max(seen.values()) == 1  # disjoint
        assert len(all_rows - set(seen)) == plan.dropped < world * batch
    else:
        assert set(seen) == all_rows  # every row read
        assert sum(seen.values()) - total == plan.padded < world * batch


def test_order_is_seeded_and_changes_per_epoch():
    groups = assign.row_groups([{"row_groups": [5] * 20}])
    a0 = assign.epoch_order(groups, seed=1, epoch=0)
    assert a0 == assign.epoch_order(groups, seed=1, epoch=0)
    assert a0 != assign.epoch_order(groups, seed=1, epoch=1)
    assert a0 != assign.epoch_order(groups, seed=2, epoch=0)


def test_rank_reads_at_most_one_partial_group_per_boundary():
    groups = assign.row_groups([{"row_groups": [10] * 10}])
    plan = assign.plan_epoch(100, 3, 11, "drop")  # 3 steps x 11 = 33 rows per rank
    segs = assign.segments_for(groups, *assign.rank_range(plan, 1))
    assert [(s.group.index, s.start, s.stop) for s in segs] == [(3, 3, 10), (4, 0, 10), (5, 0, 10), (6, 0, 6)]


def test_eval_ranges_cover_every_row_once():
    ranges = [assign.eval_range(103, 4, r) for r in range(4)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 103
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_too_small_split_says_what_to_change():
    with pytest.raises(assign.ShareError, match="lower train.batch_size or --np"):
        assign.plan_epoch(10, 2, 8, "drop")
