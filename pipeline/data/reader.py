"""Streaming one rank's share of a split from Parquet shards into torch batches."""
from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.data import assign
from pipeline.data.ragged import Ragged, concat, slice_rows, take
from pipeline.manifest import read_manifest
from pipeline.schema import LABEL_COLUMN, ROW_ID_COLUMN, check_shard_schema, feature_columns, length_column

log = logging.getLogger(__name__)


class ShardError(RuntimeError):
    """A shard that is missing, altered or unreadable; the message names the file."""


def _sha256(path: Path) -> str:
    from hashlib import sha256

    digest = sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class ShardReader(torch.utils.data.IterableDataset):
    """Batches of one rank's share of one split, as dicts of tensors.

    A batch holds each feature, ``label`` (int64 class index) and ``row_id`` (int64, the
    row's stable id). Tensors are float32 (uint8 images standardised here with the
    manifest's per-channel mean/std); categorical columns int64 [B, columns]; a
    sequence feature ``s`` is float32 [B, longest in batch, dims] zero-padded, with its
    lengths in ``s_length``.

    In ``train`` mode every rank yields exactly ``len(reader)`` batches per epoch (see
    :mod:`pipeline.data.assign`), in a seeded order that changes each epoch. In ``eval``
    mode every row is read exactly once across ranks, in file order, and the last batch
    may be short (evaluation must not run per-batch collectives).

    Args:
        dataset: a dataset version directory (or a dataset directory with LATEST).
        split: train, val or test.
        rank: this process's rank.
        world_size: number of ranks reading the split.
        batch_size: rows per batch on this rank.
        seed: seeds the epoch order and the shuffle buffer.
        mode: train or eval.
        remainder: drop or pad (train mode), see :func:`assign.plan_epoch`.
        shuffle_buffer: rows shuffled together (train mode).
        prefetch: row-group pieces decoded ahead in a background thread; 0 reads inline.
        verify: check every shard's sha256 before the first batch.
    """

    def __init__(
        self,
        dataset: str | Path,
        split: str,
        rank: int,
        world_size: int,
        batch_size: int,
        seed: int = 0,
        mode: str = "train",
        remainder: str = "drop",
        shuffle_buffer: int = 4096,
        prefetch: int = 4,
        verify: bool = False,
    ):
        super().__init__()
        self.version_dir, self.manifest = read_manifest(dataset)
        if split not in self.manifest["splits"]:
            raise ShardError(f"{self.version_dir}: no split {split!r}; has {sorted(self.manifest['splits'])}")
        self.split, self.rank, self.world_size = split, rank, world_size
        self.batch_size, self.seed, self.mode = batch_size, seed, mode
        self.shuffle_buffer, self.prefetch = shuffle_buffer, prefetch
        self.features = self.manifest["schema"]["features"]
        self.shards = self.manifest["splits"][split]["shards"]
        self.groups = assign.row_groups(self.shards)
        self.total_rows = sum(g.rows for g in self.groups)
        self.epoch = 0
        self._check_files(verify)
        if mode == "train":
            self.plan = assign.plan_epoch(self.total_rows, world_size, batch_size, remainder)
            if rank == 0 and (self.plan.dropped or self.plan.padded):
                log.info(
                    "%s: %d rows, %d ranks x %d batch: %d steps/epoch, %s %d rows per epoch",
                    split, self.total_rows, world_size, batch_size, self.plan.steps,
                    "dropping" if self.plan.dropped else "padding (wrap-around)", self.plan.dropped or self.plan.padded,
                )
        elif mode == "eval":
            self.plan = None
        else:
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self._norm = {}
        for name, spec in self.features.items():
            fitted = self.manifest["featurizer"].get(name, {})
            if fitted.get("applied_in") == "reader":
                view = (-1,) + (1,) * (len(spec["shape"]) - 1)
                self._norm[name] = (
                    torch.tensor(fitted["mean"], dtype=torch.float32).view(view),
                    torch.tensor(fitted["std"], dtype=torch.float32).view(view),
                )

    def _check_files(self, verify: bool) -> None:
        for shard in self.shards:
            path = self.version_dir / shard["path"]
            if not path.is_file():
                raise ShardError(f"{path}: shard listed in the manifest is missing; re-run prepare or restore the file")
            size = path.stat().st_size
            if size != shard["bytes"]:
                raise ShardError(f"{path}: {size} bytes, manifest says {shard['bytes']}; the file was changed or truncated: re-run prepare")
            if verify and _sha256(path) != shard["sha256"]:
                raise ShardError(f"{path}: sha256 differs from the manifest; the file was altered: re-run prepare")
            try:
                meta = pq.read_metadata(path)
            except (pa.ArrowInvalid, OSError) as err:
                raise ShardError(f"{path}: not a readable Parquet file ({err}); re-run prepare") from None
            check_shard_schema(meta.schema.to_arrow_schema(), self.features, str(path))
            groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            if groups != list(shard["row_groups"]):
                raise ShardError(f"{path}: row groups {groups} differ from the manifest's {shard['row_groups']}; re-run prepare")

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        if self.plan is not None:
            return self.plan.steps
        lo, hi = assign.eval_range(self.total_rows, self.world_size, self.rank)
        return -(-(hi - lo) // self.batch_size)

    @property
    def rows_this_rank(self) -> int:
        if self.plan is not None:
            return self.plan.rows_per_rank
        lo, hi = assign.eval_range(self.total_rows, self.world_size, self.rank)
        return hi - lo

    def _segments(self) -> list[assign.Segment]:
        if self.plan is None:
            lo, hi = assign.eval_range(self.total_rows, self.world_size, self.rank)
            return assign.segments_for(self.groups, lo, hi)
        order = assign.epoch_order(self.groups, self.seed, self.epoch)
        lo, hi = assign.rank_range(self.plan, self.rank)
        return assign.segments_for(order, lo, hi)

    def _decode(self, table: pa.Table) -> dict:
        """Arrow -> numpy through the flat values buffers: no per-row Python."""
        out = {}
        for name, spec in self.features.items():
            col = table.column(name).combine_chunks()
            values = col.flatten().to_numpy(zero_copy_only=False)
            if spec["kind"] == "sequence":
                lengths = table.column(length_column(name)).to_numpy().astype(np.int64)
                offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
                np.cumsum(lengths, out=offsets[1:])
                out[name] = Ragged(values.reshape(-1, spec["dims"]), offsets)
            else:
                out[name] = values.reshape(len(col), *spec["shape"])
        out[LABEL_COLUMN] = table.column(LABEL_COLUMN).to_numpy().astype(np.int64, copy=False)
        out[ROW_ID_COLUMN] = table.column(ROW_ID_COLUMN).to_numpy()
        return out

    def _read_segments(self, segments: list[assign.Segment]) -> Iterator[dict[str, np.ndarray]]:
        files: dict[int, pq.ParquetFile] = {}
        columns = feature_columns(self.features) + [LABEL_COLUMN, ROW_ID_COLUMN]
        try:
            for seg in segments:
                shard = seg.group.shard
                if shard not in files:
                    files[shard] = pq.ParquetFile(self.version_dir / self.shards[shard]["path"])
                table = files[shard].read_row_group(seg.group.index, columns=columns)
                yield self._decode(table.slice(seg.start, seg.rows))
        finally:
            for f in files.values():
                f.close()

    def _chunks(self) -> Iterator[dict[str, np.ndarray]]:
        segments = self._segments()
        if self.prefetch <= 0:
            yield from self._read_segments(segments)
            return
        yield from _prefetched(self._read_segments(segments), self.prefetch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        shuffle = self.plan is not None
        window = max(self.shuffle_buffer, self.batch_size) if shuffle else self.batch_size
        buffer: list[dict[str, np.ndarray]] = []
        held = 0
        for chunk in self._chunks():
            buffer.append(chunk)
            held += len(chunk[LABEL_COLUMN])
            if held >= window:
                batches, buffer, held = self._cut(buffer, rng if shuffle else None)
                yield from batches
        while held:
            batches, buffer, held = self._cut(buffer, rng if shuffle else None, final=True)
            yield from batches

    def _cut(self, buffer, rng, final: bool = False):
        """Concatenate and (shuffle) the buffer; return full batches and the leftover."""
        merged = {k: concat([c[k] for c in buffer]) for k in buffer[0]}
        n = len(merged[LABEL_COLUMN])
        if rng is not None:
            perm = rng.permutation(n)
            merged = {k: take(v, perm) for k, v in merged.items()}
        full = n if final else (n // self.batch_size) * self.batch_size
        batches = [
            self._collate({k: slice_rows(v, i, min(i + self.batch_size, n)) for k, v in merged.items()})
            for i in range(0, full, self.batch_size)
        ]
        rest = {k: slice_rows(v, full, n) for k, v in merged.items()}
        left = n - full
        return batches, ([rest] if left else []), left

    def _collate(self, rows: dict) -> dict[str, torch.Tensor]:
        batch = {}
        for name, spec in self.features.items():
            if spec["kind"] == "sequence":
                batch[name], batch[length_column(name)] = rows[name].padded()
                continue
            tensor = torch.from_numpy(np.ascontiguousarray(rows[name]))
            if spec["kind"] == "categorical":
                batch[name] = tensor.long()
            elif name in self._norm:
                mean, std = self._norm[name]
                batch[name] = tensor.float().sub_(mean).div_(std)
            else:
                batch[name] = tensor.float()
        for name in (LABEL_COLUMN, ROW_ID_COLUMN):
            batch[name] = torch.from_numpy(np.ascontiguousarray(rows[name]))
        return batch


_DONE = object()


def _prefetched(source: Iterator, depth: int) -> Iterator:
    """Run ``source`` in a daemon thread, ``depth`` items ahead; errors re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the consumer, which re-raises it
            put(err)

    thread = threading.Thread(target=work, name="shard-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)

