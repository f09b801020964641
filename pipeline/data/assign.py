"""Which rows each rank reads in an epoch: equal shares of one W-independent global order.

The epoch's global order is the split's row groups, permuted by (seed, epoch). Rank r
takes the contiguous positions ``[r*R, (r+1)*R)`` of that order, R = steps x batch_size,
so every rank gets exactly ``steps`` batches and touches at most one row group it shares
with a neighbour. With ``remainder="pad"`` positions past the end wrap around to the start.
"""
from __future__ import annotations

import math
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
class Segment:
    """Rows ``[start, stop)`` of one row group."""

    group: RowGroup
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class EpochPlan:
    """Per-rank sizes of one epoch; identical on every rank by construction."""

    total_rows: int
    world_size: int
    batch_size: int
    steps: int
    remainder: str

    @property
    def rows_per_rank(self) -> int:
        return self.steps * self.batch_size

    @property
    def dropped(self) -> int:
        return max(0, self.total_rows - self.rows_per_rank * self.world_size)

    @property
    def padded(self) -> int:
        return max(0, self.rows_per_rank * self.world_size - self.total_rows)


def row_groups(shards: list[dict]) -> list[RowGroup]:
    """Flatten a split's manifest shard list into its row groups, in manifest order."""
    return [RowGroup(s, g, rows) for s, shard in enumerate(shards) for g, rows in enumerate(shard["row_groups"])]


def plan_epoch(total_rows: int, world_size: int, batch_size: int, remainder: str = "drop") -> EpochPlan:
    """Steps per epoch so that every rank reads the same number of full batches.

    Raises:
        ShareError: fewer rows than ``world_size * batch_size`` with ``drop``, or no rows.
    """
    if world_size < 1 or batch_size < 1:
        raise ShareError(f"world_size ({world_size}) and batch_size ({batch_size}) must be >= 1")
    global_batch = world_size * batch_size
    if total_rows == 0:
        raise ShareError("the split has no rows")
    if remainder == "drop":
        steps = total_rows // global_batch
        if steps == 0:
            raise ShareError(
                f"{total_rows} rows cannot fill one global batch of {world_size} ranks x {batch_size}; "
                "lower train.batch_size or --np, or set data.reader.remainder=pad"
            )
    elif remainder == "pad":
        steps = math.ceil(total_rows / global_batch)
    else:
        raise ShareError(f"remainder must be 'drop' or 'pad', got {remainder!r}")
    return EpochPlan(total_rows, world_size, batch_size, steps, remainder)


def epoch_order(groups: list[RowGroup], seed: int, epoch: int, shuffle: bool = True) -> list[RowGroup]:
    """The epoch's global row-group order: a permutation seeded by (seed, epoch)."""
    if not shuffle:
        return list(groups)
    perm = np.random.default_rng([seed, epoch]).permutation(len(groups))
    return [groups[i] for i in perm]


def segments_for(order: list[RowGroup], lo: int, hi: int) -> list[Segment]:
    """Row-group pieces covering global positions ``[lo, hi)``; positions wrap past the end."""
    total = sum(g.rows for g in order)
    out: list[Segment] = []
    pos = lo
    while pos < hi:
        base = (pos // total) * total
        offset = 0
        for group in order:
            g_lo, g_hi = base + offset, base + offset + group.rows
            offset += group.rows
            if g_hi <= pos or group.rows == 0:
                continue
            if g_lo >= hi:
                break
            start, stop = max(pos, g_lo) - g_lo, min(hi, g_hi) - g_lo
            out.append(Segment(group, start, stop))
            pos = g_lo + stop
        # after one pass over the order, pos has reached min(hi, base + total)
    return out


def rank_range(plan: EpochPlan, rank: int) -> tuple[int, int]:
    """Global positions of ``rank``'s share in the epoch order."""
    if not 0 <= rank < plan.world_size:
        raise ShareError(f"rank {rank} outside world size {plan.world_size}")
    return rank * plan.rows_per_rank, (rank + 1) * plan.rows_per_rank


def eval_range(total_rows: int, world_size: int, rank: int) -> tuple[int, int]:
    """For evaluation every row exactly once: near-equal contiguous shares, no pad or drop."""
    return total_rows * rank // world_size, total_rows * (rank + 1) // world_size
