import numpy as np

from pipeline.data.ragged import Ragged, take_across


def _rows(r: Ragged):
    return [r.values[r.offsets[i] : r.offsets[i + 1]].tolist() for i in range(len(r))]


def _make(lengths, dims=2, start=0):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.arange(start, start + offsets[-1] * dims, dtype=np.float32).reshape(-1, dims)
    return Ragged(values, offsets)


def test_take_slice_concat_match_row_lists():
    r = _make([3, 1, 4, 2])
    rows = _rows(r)
    assert _rows(r.take(np.array([2, 0, 3]))) == [rows[2], rows[0], rows[3]]
    assert _rows(r.slice(1, 3)) == rows[1:3]
    other = _make([2, 5], start=1000)
    assert _rows(Ragged.concat([r, other])) == rows + _rows(other)


def test_padded_puts_each_row_at_the_start_with_zeros_after():
    r = _make([3, 1])
    x, lengths = r.padded()
    assert x.shape == (2, 3, 2) and lengths.tolist() == [3, 1]
    assert x[0].tolist() == _rows(r)[0]
    assert x[1, 0].tolist() == _rows(r)[1][0] and x[1, 1:].abs().sum() == 0


def test_take_across_parts_equals_concatenate_then_take():
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 255, size=(n, 4, 3), dtype=np.uint8) for n in (5, 7, 3)]
    part_of_row = rng.integers(0, 3, size=40)
    offsets = np.array([rng.integers(0, len(parts[p])) for p in part_of_row])
    bases = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    expected = np.concatenate(parts)[bases[part_of_row] + offsets]
    got = take_across(parts, part_of_row, offsets)
    assert got.dtype == np.uint8 and got.shape == expected.shape and np.array_equal(got, expected)
    ragged = [_make([3, 1, 4]), _make([2, 5], start=1000)]
    rows = _rows(ragged[0]) + _rows(ragged[1])
    assert _rows(take_across(ragged, np.array([1, 0, 1, 0]), np.array([1, 2, 0, 0]))) == [rows[4], rows[2], rows[3], rows[0]]
