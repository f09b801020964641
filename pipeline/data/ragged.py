"""Variable-length rows without per-row Python objects: flat values plus offsets."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Ragged:
    """``n`` rows; row i is ``values[offsets[i]:offsets[i+1]]`` (each a [length, dims] block).

    Args:
        values: [total_steps, dims] array, rows back to back.
        offsets: [n + 1] int64 array, offsets[0] == 0.
    """

    values: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, idx: np.ndarray) -> "Ragged":
        """Rows ``idx`` in that order, gathered in one vectorised step."""
        idx = np.asarray(idx, dtype=np.int64)
        lengths = self.lengths[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(self.offsets[idx] - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return Ragged(self.values[gather], offsets)

    def slice(self, start: int, stop: int) -> "Ragged":
        lo, hi = self.offsets[start], self.offsets[stop]
        return Ragged(self.values[lo:hi], self.offsets[start : stop + 1] - lo)

    @staticmethod
    def concat(parts: list["Ragged"]) -> "Ragged":
        shifts = np.cumsum([0] + [p.offsets[-1] for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)])
        return Ragged(np.concatenate([p.values for p in parts]), offsets.astype(np.int64))

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[n, longest, dims] zero-padded float tensor and the int64 lengths."""
        lengths = self.lengths
        n, dims = len(lengths), self.values.shape[1]
        out = np.zeros((n, int(lengths.max()) if n else 0, dims), dtype=self.values.dtype)
        rows = np.repeat(np.arange(n), lengths)
        steps = np.arange(self.offsets[-1]) - np.repeat(self.offsets[:-1], lengths)
        out[rows, steps] = self.values
        return torch.from_numpy(out), torch.from_numpy(lengths.astype(np.int64))


def take(column, idx):
    return column.take(idx) if isinstance(column, Ragged) else column[idx]


def slice_rows(column, start: int, stop: int):
    return column.slice(start, stop) if isinstance(column, Ragged) else column[start:stop]


def concat(parts: list):
    return Ragged.concat(parts) if isinstance(parts[0], Ragged) else np.concatenate(parts)


def take_across(parts: list, part_of_row: np.ndarray, offsets: np.ndarray, by_part: list | None = None):
    """Rows from several parts (decoded row groups): row i is ``parts[part_of_row[i]][offsets[i]]``.

    Plain arrays are gathered from each part straight into the result, never concatenating
    the parts first (which copied every row of every part the chunk touched, to then keep
    about half of them); ragged columns are concatenated, then taken. ``by_part`` (from
    :func:`rows_by_part`) saves recomputing which rows come from which part per column.
    """
    if isinstance(parts[0], Ragged):
        bases = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
        return Ragged.concat(parts).take(bases[part_of_row] + offsets)
    first = parts[0]
    out = np.empty((len(offsets), *first.shape[1:]), dtype=first.dtype)
    for part, (rows, picked) in zip(parts, by_part or rows_by_part(part_of_row, offsets, len(parts))):
        if len(rows):
            out[rows] = part[picked]
    return out


def rows_by_part(part_of_row: np.ndarray, offsets: np.ndarray, parts: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per part: the result rows it fills and the offsets of those rows in it."""
    order = np.argsort(part_of_row, kind="stable")
    bounds = np.searchsorted(part_of_row[order], np.arange(parts + 1))
    return [(order[a:b], offsets[order[a:b]]) for a, b in zip(bounds[:-1], bounds[1:])]
