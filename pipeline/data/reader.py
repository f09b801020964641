"""Streaming one rank's share of a split from Parquet shards into torch batches."""
from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline import storage
from pipeline.data import assign
from pipeline.data.cache import ShardCache
from pipeline.data.groups import REBUILD, GroupFetcher, ShardError
from pipeline.data.ragged import Ragged, concat, rows_by_part, slice_rows, take, take_across
from pipeline.manifest import read_manifest
from pipeline.schema import LABEL_COLUMN, ROW_ID_COLUMN, check_shard_schema, feature_columns, length_column

log = logging.getLogger(__name__)


class ShardReader(torch.utils.data.IterableDataset):
    """Batches of one rank's share of one split, as dicts of tensors.

    A batch holds each feature, ``label`` (int64 class index) and ``row_id`` (int64, the
    row's stable id). Tensors keep their stored type: float32, or uint8 images (the model
    casts and standardises them on its device); categorical columns int64 [B, columns]; a
    sequence feature ``s`` is float32 [B, longest in batch, dims] zero-padded, with its
    lengths in ``s_length``.

    In ``train`` mode every rank yields exactly ``len(reader)`` batches per epoch, from an
    epoch stream that does not depend on the world size (see :mod:`pipeline.data.assign`),
    and ``state_dict``/``load_state_dict`` resume mid-epoch sample-exactly, also on a
    different number of ranks. In ``eval`` mode every row is read exactly once across
    ranks, in file order, and the last batch may be short.

    Args:
        dataset: a dataset version directory (or a dataset directory with LATEST): a
            path or a URI.
        split: train, val or test.
        rank: this process's rank.
        world_size: number of ranks reading the split.
        batch_size: rows per batch on this rank.
        seed: seeds the epoch order.
        mode: train or eval.
        remainder: drop or pad (train mode), see :func:`assign.plan_epoch`.
        shuffle_buffer: rows shuffled together (train mode); memory holds about this many
            rows plus the row groups under them.
        prefetch: batches prepared ahead in a background thread; 0 reads inline.
        verify: check every shard's sha256 before the first batch.
        bucket_by_length: train mode with a sequence feature: within each shuffle window,
            batch rows of similar length together, then shuffle those batches.
        layout: contiguous or interleaved (train mode), see :mod:`pipeline.data.assign`.
        cache: keep whole shards in this node-local cache (see :class:`ShardCache`);
            None reads row groups straight from the store.
        readahead: on an object store, row groups fetched ahead in parallel (see
            :mod:`pipeline.data.groups`).
        decode_threads: local row groups decoded ahead in parallel; 0 reads them inline
            in the background thread.
        page_checksums: verify every data page's checksum as it is read.
        pin_memory: hand out batches in page-locked memory (for a CUDA device: the
            copy to it is then asynchronous); pinned in the background thread.
        manifest: the version's manifest where the caller has read it already (the
            trainer, for its three readers); ``dataset`` is then that version's directory.
    """

    STATE_VERSION = 2

    def __init__(
        self,
        dataset: str,
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
        bucket_by_length: bool = False,
        layout: str = "contiguous",
        cache: ShardCache | None = None,
        readahead: int = 8,
        decode_threads: int = 0,
        page_checksums: bool = True,
        pin_memory: bool = False,
        manifest: dict | None = None,
    ):
        super().__init__()
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.version_dir, self.manifest = (dataset, manifest) if manifest is not None else read_manifest(dataset)
        if split not in self.manifest["splits"]:
            raise ShardError(f"{self.version_dir}: no split {split!r}; has {sorted(self.manifest['splits'])}")
        self.split, self.rank, self.world_size = split, rank, world_size
        self.batch_size, self.seed, self.mode, self.remainder = batch_size, seed, mode, remainder
        self.shuffle_buffer, self.prefetch, self.layout = shuffle_buffer, prefetch, layout
        self.cache, self.readahead, self.page_checksums = cache, readahead, page_checksums
        self.pin_memory, self.decode_threads = pin_memory, decode_threads
        self.features = self.manifest["schema"]["features"]
        sequences = [n for n, spec in self.features.items() if spec["kind"] == "sequence"]
        self.bucket_on = sequences[0] if (bucket_by_length and mode == "train" and sequences) else None
        self.shards = self.manifest["splits"][split]["shards"]
        self.groups = assign.row_groups(self.shards)
        self.total_rows = int(self.groups.rows.sum())
        self.epoch = 0
        self._history: list[assign.Segment] = []  # earlier segments of this epoch (resume)
        self._steps_done = 0  # batches handed out in the current segment
        self._check_files(verify)
        if mode == "train":
            plan = self.plan
            if rank == 0 and (plan.dropped or plan.padded):
                log.info(
                    "%s: %d rows, %d ranks x %d batch: %d steps/epoch, %s %d rows per epoch",
                    split, self.total_rows, world_size, batch_size, plan.steps,
                    "dropping" if plan.dropped else "padding (wrap-around)", plan.dropped or plan.padded,
                )

    def _check_files(self, verify: bool) -> None:
        """Every shard present with the manifest's size, schema and row groups (and, with
        ``verify``, sha256). Footers read here are kept: opening a shard later costs no
        second footer read, which on an object store is a round trip per shard."""
        locations = [storage.join(self.version_dir, shard["path"]) for shard in self.shards]
        self._footers: list[pq.FileMetaData] = []
        for location, shard, size in zip(locations, self.shards, storage.sizes(locations)):
            if size is None:
                raise ShardError(f"{location}: shard listed in the manifest is missing; re-run prepare or restore the file")
            if size != shard["bytes"]:
                raise ShardError(f"{location}: {size} bytes, manifest says {shard['bytes']}; the file was changed or truncated: re-run prepare")
            if verify and storage.sha256(location) != shard["sha256"]:
                raise ShardError(f"{location}: sha256 differs from the manifest; the file was altered after prepare: "
                                 f"{REBUILD.format(version=self.version_dir)}")
            try:
                with storage.open_input(location) as f:
                    meta = pq.read_metadata(f)
            except (pa.ArrowInvalid, OSError) as err:
                raise ShardError(f"{location}: not a readable Parquet file ({err}); re-run prepare") from None
            check_shard_schema(meta.schema.to_arrow_schema(), self.features, location)
            groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            if groups != list(shard["row_groups"]):
                raise ShardError(f"{location}: row groups {groups} differ from the manifest's {shard['row_groups']}; re-run prepare")
            self._footers.append(meta)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning (drops any resumed mid-epoch progress)."""
        self.epoch = epoch
        self._history, self._steps_done = [], 0

    def _remaining(self) -> list[assign.Span]:
        return assign.replay(self.total_rows, self._history, self.remainder, self.layout)

    @property
    def plan(self) -> assign.EpochPlan | None:
        """This segment's plan (train mode): the rest of the epoch on this world size."""
        if self.mode != "train":
            return None
        return assign.plan_epoch(assign.spans_length(self._remaining()), self.world_size, self.batch_size, self.remainder,
                                 self.layout, resuming=bool(self._history))

    def __len__(self) -> int:
        """Batches this rank yields in the (rest of the) current epoch."""
        if self.mode == "train":
            return self.plan.steps
        return -(-self.rows_this_rank // self.batch_size)

    @property
    def rows_this_rank(self) -> int:
        return assign.spans_length(self._spans())

    def _spans(self) -> list[assign.Span]:
        if self.mode == "eval":
            return assign.eval_spans(self.total_rows, self.world_size, self.rank)
        return assign.rank_spans(self._remaining(), self.plan, self.rank)

    def state_dict(self) -> dict:
        """Where this epoch stands; identical on every rank, so rank 0's copy is enough."""
        segments = [*self._history, assign.Segment(self.world_size, self.batch_size, self._steps_done)]
        return {
            "version": self.STATE_VERSION,
            "dataset_fingerprint": self.manifest["fingerprint"],
            "split": self.split,
            "seed": self.seed,
            "shuffle_buffer": self.shuffle_buffer,
            "remainder": self.remainder,
            "layout": self.layout,
            "epoch": self.epoch,
            "world_size": self.world_size,
            "segments": [[s.world_size, s.batch_size, s.steps] for s in segments],
            "samples_consumed": sum(s.world_size * s.batch_size * s.steps for s in segments),
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume so the next batches hold exactly the samples this epoch has not yet given.

        Raises:
            ShardError: a state from another dataset version, split, seed or shuffle window.
        """
        if state.get("version") != self.STATE_VERSION:
            raise ShardError(f"reader state version {state.get('version')!r}; this reader reads version {self.STATE_VERSION}")
        mine = {"dataset_fingerprint": self.manifest["fingerprint"], "split": self.split, "seed": self.seed,
                "shuffle_buffer": self.shuffle_buffer, "remainder": self.remainder, "layout": self.layout}
        for key, value in mine.items():
            if state.get(key) != value:
                raise ShardError(
                    f"reader state has {key}={state.get(key)!r} but this reader has {value!r}; "
                    "a state only resumes on the same dataset version and reader settings"
                )
        self.epoch = int(state["epoch"])
        self._history = [assign.Segment(*seg) for seg in state["segments"] if seg[2] > 0]
        self._steps_done = 0

    def _decode(self, table: pa.Table) -> dict:
        return decode_table(table, self.features)

    def _read_chunks(self, stream: assign.EpochStream, spans: list[assign.Span]) -> Iterator[dict]:
        """Rows of ``spans`` in stream order, one window-sized chunk at a time.

        Only the row groups under the current chunk are held (decoded); consecutive
        chunks usually share them, so each is read about once. On an object store the
        groups of the next chunks are fetched ahead (see :mod:`pipeline.data.groups`).
        """
        locations = [storage.join(self.version_dir, shard["path"]) for shard in self.shards]
        def open_local(i: int) -> str:
            return self.cache.local_copy(locations[i], self.shards[i]["sha256"], self.shards[i]["bytes"])

        fetcher = GroupFetcher(locations, self._footers, stream.order, feature_columns(self.features) + [LABEL_COLUMN, ROW_ID_COLUMN],
                               self._decode, self.readahead, open_local if self.cache is not None else None,
                               self.page_checksums, self.decode_threads)
        held: dict[int, dict] = {}
        try:
            for (gi, offsets, needed), upcoming in _with_lookahead(_located(stream, spans), fetcher.readahead):
                fetcher.hint((g for _, _, later in upcoming for g in later), set(held))
                decoded = {g: held[g] if g in held else fetcher.get(g) for g in needed}
                held = decoded
                fetcher.release(set(held))
                if len(needed) == 1:
                    yield {k: take(v, offsets) for k, v in decoded[needed[0]].items()}
                    continue
                part = gi - needed[0]
                by_part = rows_by_part(part, offsets, len(needed))
                yield {k: take_across([decoded[g][k] for g in needed], part, offsets, by_part) for k in decoded[needed[0]]}
        finally:
            fetcher.close()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        stream = assign.EpochStream(self.groups, self.seed, self.epoch, self.shuffle_buffer, shuffle=self.mode == "train")
        chunks = self._read_chunks(stream, self._spans())
        if self.bucket_on is not None:
            chunks = self._bucketed(chunks)
        batches = self._batches(chunks)
        if self.prefetch > 0:
            # Reading, shuffling and collating all happen in the background thread; the
            # training loop only takes finished batches off the queue, a few at a time so
            # the hand-over between threads is not paid per batch.
            batches = itertools.chain.from_iterable(_prefetched(_grouped(batches, _HANDOVER), self.prefetch))
        self._steps_done = 0
        for batch in batches:
            self._steps_done += 1
            yield batch

    def _bucketed(self, chunks: Iterator[dict]) -> Iterator[dict]:
        """Within each window: sort by length, group into batch-sized runs, shuffle the runs.

        Rows stay in their window, so the rows per rank (and the batch count) are unchanged;
        only which rows share a batch changes. Runs straddling windows are still mixed.
        """
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 3])
        for chunk in chunks:
            lengths = chunk[self.bucket_on].lengths
            order = np.argsort(lengths, kind="stable")
            runs = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            full = [r for r in runs if len(r) == self.batch_size]
            rng.shuffle(full)
            idx = np.concatenate(full + [r for r in runs if len(r) < self.batch_size]) if runs else order
            yield {k: take(v, idx) for k, v in chunk.items()}

    def _batches(self, chunks: Iterator[dict]) -> Iterator[dict[str, torch.Tensor]]:
        """Cut the chunk stream into batches; only a batch spanning two chunks is copied."""
        pending: list[dict] = []
        held = 0
        for chunk in chunks:
            n, start = len(chunk[LABEL_COLUMN]), 0
            if held:  # complete the batch begun in earlier chunks
                need = min(self.batch_size - held, n)
                pending.append({k: slice_rows(v, 0, need) for k, v in chunk.items()})
                held, start = held + need, need
                if held < self.batch_size:
                    continue
                yield self._collate({k: concat([p[k] for p in pending]) for k in chunk})
                pending, held = [], 0
            while n - start >= self.batch_size:
                yield self._collate({k: slice_rows(v, start, start + self.batch_size) for k, v in chunk.items()})
                start += self.batch_size
            if start < n:
                pending, held = [{k: slice_rows(v, start, n) for k, v in chunk.items()}], n - start
        if held:
            yield self._collate({k: concat([p[k] for p in pending]) for k in pending[0]})

    def _collate(self, rows: dict) -> dict[str, torch.Tensor]:
        batch = collate(rows, self.features)
        return {k: v.pin_memory() for k, v in batch.items()} if self.pin_memory else batch


def _located(stream: assign.EpochStream, spans: list[assign.Span]) -> Iterator[tuple]:
    """Per chunk: (row group of each row, offset in it, the groups it spans in order)."""
    for chunk in stream.chunks(spans):
        gi, offsets = stream.locate(stream.positions(chunk))
        # a chunk lies inside one window of consecutive positions: its groups are a range
        yield gi, offsets, list(range(int(gi.min()), int(gi.max()) + 1))


def _with_lookahead(chunks: Iterator[tuple], groups: int, max_chunks: int = 64) -> Iterator[tuple]:
    """Each chunk with the chunks after it that span about ``groups`` more row groups (none
    when ``groups`` is 0), so their fetches can start early."""
    if not groups:
        for chunk in chunks:
            yield chunk, ()
        return
    ahead: collections.deque = collections.deque()
    for chunk in chunks:
        ahead.append(chunk)
        if len(ahead) <= max_chunks and len({g for c in itertools.islice(ahead, 1, None) for g in c[2]}) < groups:
            continue  # look further before handing out the first one
        yield ahead.popleft(), list(ahead)
    while ahead:
        yield ahead.popleft(), list(ahead)


def decode_table(table: pa.Table, features: dict, extra: tuple[str, ...] = (LABEL_COLUMN, ROW_ID_COLUMN)) -> dict:
    """Arrow -> numpy through the flat values buffers: no per-row Python.

    Also used by scoring, on the featurized columns of new data (``extra`` = row id only).
    """
    out = {}
    for name, spec in features.items():
        col = table.column(name)
        values = _flat_values(col)
        if spec["kind"] == "sequence":
            lengths = table.column(length_column(name)).to_numpy().astype(np.int64)
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            out[name] = Ragged(values.reshape(-1, spec["dims"]), offsets)
        else:
            out[name] = values.reshape(len(col), *spec["shape"])
    for name in extra:
        values = table.column(name).to_numpy()
        out[name] = values.astype(np.int64, copy=False) if name == LABEL_COLUMN else values
    return out


def collate(rows: dict, features: dict) -> dict[str, torch.Tensor]:
    """Decoded rows -> the batch the models take (float32 or uint8 tensors, int64 codes,
    padded sequences with lengths)."""
    batch = {}
    for name, spec in features.items():
        if spec["kind"] == "sequence":
            batch[name], batch[length_column(name)] = rows[name].padded()
            continue
        tensor = torch.from_numpy(np.ascontiguousarray(rows[name]))
        if spec["kind"] == "categorical":
            batch[name] = tensor.long()
        elif tensor.dtype == torch.uint8:
            batch[name] = tensor  # cast and standardised by the model, on its device
        else:
            batch[name] = tensor.float()
    for name in (LABEL_COLUMN, ROW_ID_COLUMN):
        if name in rows:
            batch[name] = torch.from_numpy(np.ascontiguousarray(rows[name]))
    return batch


def _flat_values(column: pa.ChunkedArray) -> np.ndarray:
    """The list column's element values as one numpy array, zero-copy where Arrow allows.

    ``ListArray.values`` is the whole child buffer, right only for an unsliced array;
    ``flatten()`` respects slicing but is several times slower to convert.
    """
    parts = []
    for chunk in column.chunks:
        if chunk.offset != 0:
            child = chunk.flatten()
        elif isinstance(chunk, pa.FixedSizeListArray):
            child = chunk.values.slice(0, len(chunk) * chunk.type.list_size)
        else:
            child = chunk.values.slice(0, chunk.offsets[-1].as_py() if len(chunk) else 0)
        parts.append(child.to_numpy(zero_copy_only=False))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


_HANDOVER = 8


def _grouped(items: Iterator, size: int) -> Iterator[list]:
    group = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


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

