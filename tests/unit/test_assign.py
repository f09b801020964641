from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data import assign

layouts = st.lists(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=5), min_size=1, max_size=6)


def _indices(spans):
    return [i for s in spans for i in range(s.start, s.stop)]


@settings(max_examples=150, deadline=None)
@given(total=st.integers(1, 400), world=st.integers(1, 7), batch=st.integers(1, 16), remainder=st.sampled_from(["drop", "pad"]),
       layout=st.sampled_from(assign.LAYOUTS))
def test_shares_are_equal_disjoint_and_cover(total, world, batch, remainder, layout):
    remaining = [assign.Span(0, total)]
    if remainder == "drop" and total < world * batch:
        with pytest.raises(assign.ShareError, match="cannot fill one global batch"):
            assign.plan_epoch(total, world, batch, remainder, layout)
        return
    plan = assign.plan_epoch(total, world, batch, remainder, layout)
    shares = [_indices(assign.rank_spans(remaining, plan, r)) for r in range(world)]
    assert all(len(s) == plan.steps * batch for s in shares)  # equal batch counts on every rank
    seen = Counter(i for s in shares for i in s)
    if remainder == "drop":
        assert max(seen.values()) == 1  # disjoint
        assert total - len(seen) == plan.dropped < world * batch
    else:
        assert set(seen) == set(range(total))  # every row read
        assert sum(seen.values()) - total == plan.padded < world * batch


@settings(max_examples=150, deadline=None)
@given(total=st.integers(1, 500), w1=st.integers(1, 5), b1=st.integers(1, 12), w2=st.integers(1, 5), b2=st.integers(1, 12),
       frac=st.floats(0, 1), layout=st.sampled_from(assign.LAYOUTS))
def test_resume_on_another_world_size_reads_exactly_the_unread_rows(total, w1, b1, w2, b2, frac, layout):
    if total < w1 * b1:
        return
    first = assign.plan_epoch(total, w1, b1, "drop", layout)
    steps = int(frac * first.steps)
    consumed = [i for r in range(w1) for i in _batches(assign.rank_spans([assign.Span(0, total)], first, r), b1)[:steps] for i in i]
    remaining = assign.replay(total, [assign.Segment(w1, b1, steps)], "drop", layout)
    assert sorted(_indices(remaining)) == sorted(set(range(total)) - set(consumed))
    # Also onto a world whose global batch the rest cannot fill: zero steps end the epoch.
    second = assign.plan_epoch(assign.spans_length(remaining), w2, b2, "drop", layout, resuming=True)
    after = [i for r in range(w2) for i in _indices(assign.rank_spans(remaining, second, r))]
    assert len(after) == len(set(after)) and not set(after) & set(consumed)
    assert total - len(consumed) - len(after) == second.dropped < w2 * b2  # only a last partial global batch is left


def _batches(spans, batch):
    rows = _indices(spans)
    return [rows[i : i + batch] for i in range(0, len(rows), batch)]


@settings(max_examples=100, deadline=None)
@given(total=st.integers(1, 300), world=st.integers(1, 5), batch=st.integers(1, 10), remainder=st.sampled_from(["drop", "pad"]))
def test_interleaved_global_batches_do_not_depend_on_world_size(total, world, batch, remainder):
    """Global batch k holds the same rows for W ranks x b as for 1 rank x W*b."""
    if remainder == "drop" and total < world * batch:
        return
    whole = [assign.Span(0, total)]
    one = assign.plan_epoch(total, 1, world * batch, remainder, "interleaved")
    many = assign.plan_epoch(total, world, batch, remainder, "interleaved")
    assert one.steps == many.steps
    single = _batches(assign.rank_spans(whole, one, 0), world * batch)
    ranks = [_batches(assign.rank_spans(whole, many, r), batch) for r in range(world)]
    for k in range(one.steps):
        assert sorted(single[k]) == sorted(i for r in range(world) for i in ranks[r][k])


@settings(max_examples=50, deadline=None)
@given(layout=layouts, window=st.integers(1, 64), seed=st.integers(0, 1000), epoch=st.integers(0, 3))
def test_epoch_stream_is_a_permutation_local_to_windows(layout, window, seed, epoch):
    groups = assign.row_groups([{"row_groups": g} for g in layout])
    stream = assign.EpochStream(groups, seed, epoch, window)
    positions = stream.positions(assign.Span(0, stream.total))
    assert sorted(positions.tolist()) == list(range(stream.total))
    assert np.all(positions // window == np.arange(stream.total) // window)  # shuffling never leaves its window
    gi, off = stream.locate(positions)
    assert np.all(off < np.array([stream.order[g].rows for g in gi]))


def test_order_is_seeded_and_changes_per_epoch():
    groups = assign.row_groups([{"row_groups": [5] * 20}])
    a0 = assign.EpochStream(groups, 1, 0, 8).positions(assign.Span(0, 100)).tolist()
    assert a0 == assign.EpochStream(groups, 1, 0, 8).positions(assign.Span(0, 100)).tolist()
    assert a0 != assign.EpochStream(groups, 1, 1, 8).positions(assign.Span(0, 100)).tolist()
    assert assign.epoch_order(groups, 1, 0) != assign.epoch_order(groups, 2, 0)


def test_without_shuffle_the_stream_is_file_order():
    groups = assign.row_groups([{"row_groups": [3, 4]}, {"row_groups": [5]}])
    stream = assign.EpochStream(groups, 0, 0, 4, shuffle=False)
    assert stream.positions(assign.Span(0, 12)).tolist() == list(range(12))


def test_pad_wraps_to_the_start_of_the_stream():
    plan = assign.plan_epoch(10, 2, 3, "pad")  # 2 steps x 3 x 2 ranks = 12 slots for 10 rows
    assert [_indices(assign.rank_spans([assign.Span(0, 10)], plan, r)) for r in range(2)] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 0, 1]]


def test_eval_spans_cover_every_row_once():
    spans = [assign.eval_spans(103, 4, r) for r in range(4)]
    assert _indices([s for sp in spans for s in sp]) == list(range(103))


def test_too_small_split_says_what_to_change():
    with pytest.raises(assign.ShareError, match="lower train.batch_size or --np"):
        assign.plan_epoch(10, 2, 8, "drop")
