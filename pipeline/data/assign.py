"""Which rows each rank reads: equal shares of one epoch stream that does not depend on W.

Each epoch has a **stream**: the split's row groups permuted by (seed, epoch), laid end to
end as row positions, then shuffled inside consecutive windows of ``window`` positions
(window g permuted by (seed, epoch, g)). The stream is the same for every world size.

Ranks take equal shares of the stream still to be read that epoch (``spans`` of stream
indices), so every rank yields exactly ``steps`` batches. Two layouts:

- ``contiguous`` (default): rank r gets ``[r*R, (r+1)*R)`` with R = steps x batch_size and
  reads only the row groups under its piece (plus at most a window's worth at each end).
- ``interleaved``: global batch k is stream ``[k*G, (k+1)*G)`` with G = W x batch_size, and
  rank r takes its r-th slice. The rows of global batch k do not depend on W, so 1 rank
  with batch 2b trains on exactly what 2 ranks with batch b train on; every rank decodes
  the whole stream.
 ``drop`` leaves the last partial global batch
for the next epoch; ``pad`` wraps around to the start of the remaining stream.

Progress is recorded as segments ``(world_size, batch_size, steps)``: replaying them gives
the exact set of stream indices not yet read, whatever world size resumes.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class ShareError(ValueError):
    """A split too small for the requested world size and batch size."""


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group: ``shard`` indexes the split's shard list."""

    shard: int
    index: int
    rows: int


@dataclass(frozen=True)
class Span:
    """Stream indices ``[start, stop)``."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class EpochPlan:
    """Per-rank sizes for the rest of an epoch; identical on every rank by construction."""

    total_rows: int
    world_size: int
    batch_size: int
    steps: int
    remainder: str
    layout: str = "contiguous"

    @property
    def global_batch(self) -> int:
        return self.world_size * self.batch_size

    @property
    def rows_per_rank(self) -> int:
        return self.steps * self.batch_size

    @property
    def dropped(self) -> int:
        return max(0, self.total_rows - self.rows_per_rank * self.world_size)

    @property
    def padded(self) -> int:
        return max(0, self.rows_per_rank * self.world_size - self.total_rows)


@dataclass(frozen=True)
class Segment:
    """``steps`` batches of ``batch_size`` read by each of ``world_size`` ranks."""

    world_size: int
    batch_size: int
    steps: int


class RowGroups(Sequence):
    """A split's row groups as three arrays (shard, index in the shard, rows), read as a
    sequence of :class:`RowGroup`. Arrays, not a million objects: planning an epoch over a
    100,000-shard manifest then costs megabytes and milliseconds, not 150 MB and seconds."""

    def __init__(self, shard: np.ndarray, index: np.ndarray, rows: np.ndarray):
        self.shard, self.index, self.rows = shard, index, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return RowGroups(self.shard[i], self.index[i], self.rows[i])
        return RowGroup(int(self.shard[i]), int(self.index[i]), int(self.rows[i]))

    def take(self, order: np.ndarray) -> "RowGroups":
        return RowGroups(self.shard[order], self.index[order], self.rows[order])

    def __eq__(self, other) -> bool:
        if isinstance(other, RowGroups):
            return all(np.array_equal(a, b) for a, b in ((self.shard, other.shard), (self.index, other.index), (self.rows, other.rows)))
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return f"RowGroups({len(self)} groups, {int(self.rows.sum())} rows)"


def row_groups(shards: list[dict]) -> RowGroups:
    """Flatten a split's manifest shard list into its row groups, in manifest order."""
    counts = np.fromiter((len(s["row_groups"]) for s in shards), dtype=np.int64, count=len(shards))
    total = int(counts.sum())
    rows = np.fromiter(itertools.chain.from_iterable(s["row_groups"] for s in shards), dtype=np.int64, count=total)
    shard = np.repeat(np.arange(len(shards), dtype=np.int64), counts)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(shards) else np.zeros(0, dtype=np.int64)
    index = np.arange(total, dtype=np.int64) - np.repeat(firsts, counts)
    return RowGroups(shard, index, rows)


LAYOUTS = ("contiguous", "interleaved")


def plan_epoch(total_rows: int, world_size: int, batch_size: int, remainder: str = "drop",
               layout: str = "contiguous", resuming: bool = False) -> EpochPlan:
    """Steps so that every rank reads the same number of full batches of ``total_rows``.

    ``resuming``: ``total_rows`` is what an epoch has left after a resume; rows too few for
    one global batch (or none) just mean zero steps: the epoch is over.

    Raises:
        ShareError: a whole epoch with fewer rows than ``world_size * batch_size`` with
            ``drop``, or no rows.
    """
    if world_size < 1 or batch_size < 1:
        raise ShareError(f"world_size ({world_size}) and batch_size ({batch_size}) must be >= 1")
    global_batch = world_size * batch_size
    if total_rows == 0 and not resuming:
        raise ShareError("the split has no rows")
    if remainder == "drop":
        steps = total_rows // global_batch
        if steps == 0 and not resuming:
            raise ShareError(
                f"{total_rows} rows cannot fill one global batch of {world_size} ranks x {batch_size}; "
                "lower train.batch_size or --np, or set data.reader.remainder=pad"
            )
    elif remainder == "pad":
        steps = math.ceil(total_rows / global_batch)
    else:
        raise ShareError(f"remainder must be 'drop' or 'pad', got {remainder!r}")
    if layout not in LAYOUTS:
        raise ShareError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return EpochPlan(total_rows, world_size, batch_size, steps, remainder, layout)


def epoch_order(groups: RowGroups, seed: int, epoch: int, shuffle: bool = True) -> RowGroups:
    """The epoch's row-group order: a permutation seeded by (seed, epoch)."""
    if not shuffle:
        return groups
    perm = np.random.default_rng([seed, epoch]).permutation(len(groups))
    return groups.take(perm)


def spans_length(spans: list[Span]) -> int:
    return sum(len(s) for s in spans)


def take_spans(spans: list[Span], lo: int, hi: int) -> list[Span]:
    """Sub-spans covering ``[lo, hi)`` of the spans laid end to end; past the end wraps."""
    total = spans_length(spans)
    if total == 0 or hi <= lo:
        return []
    out: list[Span] = []
    pos = lo
    while pos < hi:
        base = (pos // total) * total
        offset = base
        for s in spans:
            s_lo, s_hi = offset, offset + len(s)
            offset = s_hi
            if s_hi <= pos:
                continue
            if s_lo >= hi:
                break
            a, b = max(pos, s_lo), min(hi, s_hi)
            out.append(Span(s.start + a - s_lo, s.start + b - s_lo))
            pos = b
    return _merge(out)


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for s in spans:
        if merged and merged[-1].stop == s.start:
            merged[-1] = Span(merged[-1].start, s.stop)
        elif len(s):
            merged.append(s)
    return merged


def rank_spans(remaining: list[Span], plan: EpochPlan, rank: int) -> list[Span]:
    """Stream spans ``rank`` reads under ``plan``."""
    if not 0 <= rank < plan.world_size:
        raise ShareError(f"rank {rank} outside world size {plan.world_size}")
    if plan.layout == "interleaved":
        g, b = plan.global_batch, plan.batch_size
        spans: list[Span] = []
        for k in range(plan.steps):
            spans += take_spans(remaining, k * g + rank * b, k * g + (rank + 1) * b)
        return _merge(spans)
    return take_spans(remaining, rank * plan.rows_per_rank, (rank + 1) * plan.rows_per_rank)


def remaining_after(remaining: list[Span], plan: EpochPlan, steps: int) -> list[Span]:
    """What is still unread after every rank read ``steps`` batches under ``plan``.

    Each rank's unread tail in rank order, then the rows no rank was given (``drop``).
    """
    if not 0 <= steps <= plan.steps:
        raise ShareError(f"{steps} steps recorded, but the plan has {plan.steps}")
    if plan.layout == "interleaved":  # the first ``steps`` global batches are read
        return take_spans(remaining, steps * plan.global_batch, spans_length(remaining))
    out: list[Span] = []
    for r in range(plan.world_size):
        out += take_spans(remaining, r * plan.rows_per_rank + steps * plan.batch_size, (r + 1) * plan.rows_per_rank)
    assigned = plan.rows_per_rank * plan.world_size
    if assigned < plan.total_rows:
        out += take_spans(remaining, assigned, plan.total_rows)
    return _merge(out)


def replay(total_rows: int, segments: list[Segment], remainder: str, layout: str = "contiguous") -> list[Span]:
    """The unread stream after ``segments`` of one epoch (from its start)."""
    remaining = [Span(0, total_rows)]
    for seg in segments:
        plan = plan_epoch(spans_length(remaining), seg.world_size, seg.batch_size, remainder, layout)
        remaining = remaining_after(remaining, plan, seg.steps)
    return remaining


class EpochStream:
    """Stream index -> row position (in the epoch's row-group order) for one epoch.

    Args:
        groups: the split's row groups in manifest order.
        seed: shuffling seed.
        epoch: epoch number.
        window: rows shuffled together; 1 (or shuffle=False) keeps file order.
        shuffle: permute row groups and windows; False reads in manifest order.
    """

    def __init__(self, groups: RowGroups, seed: int, epoch: int, window: int, shuffle: bool = True):
        self.order = epoch_order(groups, seed, epoch, shuffle)
        self.starts = np.concatenate([[0], np.cumsum(self.order.rows)]).astype(np.int64)
        self.total = int(self.starts[-1])
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        self.window = max(1, window) if shuffle else max(1, self.total)

    def _window_perm(self, g: int) -> np.ndarray:
        size = min(self.window, self.total - g * self.window)
        if not self.shuffle:
            return np.arange(size, dtype=np.int64)
        return np.random.default_rng([self.seed, self.epoch, g, 7]).permutation(size)

    def positions(self, span: Span) -> np.ndarray:
        """Row positions of stream indices ``span`` (in stream order)."""
        idx = np.arange(span.start, span.stop, dtype=np.int64)
        out = np.empty_like(idx)
        windows = idx // self.window
        for g in np.unique(windows):
            mask = windows == g
            out[mask] = g * self.window + self._window_perm(int(g))[idx[mask] - g * self.window]
        return out

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into ``order``, row within that group) for each position."""
        gi = np.searchsorted(self.starts, positions, side="right") - 1
        return gi, positions - self.starts[gi]

    def chunks(self, spans: list[Span]):
        """Spans cut at window boundaries, so each chunk touches one window's row groups."""
        for s in spans:
            pos = s.start
            while pos < s.stop:
                end = min(s.stop, (pos // self.window + 1) * self.window)
                yield Span(pos, end)
                pos = end


def eval_spans(total_rows: int, world_size: int, rank: int) -> list[Span]:
    """For evaluation every row exactly once: near-equal contiguous shares, no pad or drop."""
    return _merge([Span(total_rows * rank // world_size, total_rows * (rank + 1) // world_size)])
