"""The ``data`` section: the source, its columns and forms, the split, the shards, the reader."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class SyntheticConfig:
    """A generator built on ``spark.range``: the same seed gives the same rows whatever
    the number of partitions (values are hashes of (seed, row id, column)).

    Args:
        kind: tabular | images | sequences.
        rows: rows to generate.
        seed: generator seed.
        partitions: Spark partitions (None: Spark's default parallelism).
        num_classes: label classes.
        numeric: tabular: numeric feature columns.
        categorical: tabular: categorical feature columns.
        cardinality: tabular: distinct values per categorical column.
        noise: label noise / pixel noise level in [0, 1].
        image_size: images: [H, W].
        channels: images: 1 or 3.
        min_length: sequences: shortest sequence.
        max_length: sequences: longest sequence.
        dims: sequences: values per time step.
    """

    kind: str = "tabular"
    rows: int = 10_000
    seed: int = 0
    partitions: Optional[int] = None
    num_classes: int = 2
    numeric: int = 8
    categorical: int = 2
    cardinality: int = 10
    noise: float = 0.1
    image_size: List[int] = field(default_factory=lambda: [16, 16])
    channels: int = 1
    min_length: int = 8
    max_length: int = 48
    dims: int = 2


@dataclass
class SourceConfig:
    """Where raw rows come from.

    Args:
        type: csv | json | parquet | images | ucr | synthetic.
        path: input file or directory (local path or URI Spark can read).
        header: csv only: the first line names the columns; otherwise they are c0..cN-1.
        label: name of the label column.
        classes: the declared label set, in class-index order; rows with other labels are
            rejected. None: the sorted distinct labels of the train split.
        key: columns that identify a row for the split hash; None uses the whole row.
        delimiter: csv only: the field separator.
        synthetic: generator settings when type is synthetic.
    """

    type: str = "csv"
    path: Optional[str] = None
    header: bool = False
    delimiter: str = ","
    label: str = "label"
    classes: Optional[List[str]] = None
    key: Optional[List[str]] = None
    synthetic: SyntheticConfig = field(default_factory=lambda: SyntheticConfig())


@dataclass
class TensorConfig:
    """Numeric columns that together form one fixed-shape tensor (e.g. an image).

    Args:
        name: feature name in the manifest and in batches.
        columns: source columns in row-major order; None takes every column except the
            label and the key, in file order.
        shape: tensor shape, e.g. [1, 8, 8] for an 8x8 grey image (C, H, W).
        min: smallest valid value (inclusive).
        max: largest valid value (inclusive).
        dtype: storage dtype on disk (uint8 for images).
    """

    name: str = "image"
    columns: Optional[List[str]] = None
    shape: List[int] = field(default_factory=list)
    min: float = 0.0
    max: float = 255.0
    dtype: str = "uint8"


@dataclass
class TableConfig:
    """Feature columns of a table (csv / json / parquet) for the MLP.

    Args:
        numeric: numeric columns, standardised with the train split's mean/std.
        categorical: categorical columns, mapped to indices of the train split's top_k
            most frequent values; 0 is the bucket for anything else (and for nulls).
        top_k: vocabulary size per categorical column.
    """

    numeric: List[str] = field(default_factory=list)
    categorical: List[str] = field(default_factory=list)
    top_k: int = 1000


@dataclass
class ImageConfig:
    """Decoded image size: every image is resized to [channels, height, width] uint8."""

    height: int = 32
    width: int = 32
    channels: int = 1


@dataclass
class SequenceConfig:
    """Series (UCR/UEA ``.ts``, synthetic sequences).

    Args:
        min_length, max_length: bounds on series length; a series outside them is rejected.
        normalize: ``per_channel`` standardises each channel with the train split's mean and
            std; ``per_series`` z-normalises each series, channel by channel, on its own (what
            the time-series classification literature does); ``none`` keeps the values.
        missing: a missing value (``?``, ``NaN``) ``reject``s its row (with the reason), or
            is filled: ``interpolate`` linearly between its neighbours (the ends take the
            nearest value), ``mean`` with its channel's mean in that series.
    """

    min_length: int = 1
    max_length: int = 100_000
    normalize: str = "per_channel"
    missing: str = "reject"


@dataclass
class SplitConfig:
    """Fractions of rows per split, chosen by a stable hash of the row key.

    Args:
        use_source: where the source has its own split (UCR _TRAIN/_TEST files), keep it:
            test comes from the source's test part, val is carved from its train part
            with the ratio val / (train + val).
    """

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    salt: int = 0
    use_source: bool = True


@dataclass
class ShardConfig:
    """Shape of the written Parquet shards.

    Args:
        rows_per_shard: target rows per file.
        bytes_per_shard: if set, target (uncompressed, estimated) bytes per file instead.
        row_group_rows: rows per Parquet row group (the reader's unit of I/O).
        compression: zstd, snappy, gzip or none.
    """

    rows_per_shard: int = 100_000
    bytes_per_shard: Optional[int] = None
    row_group_rows: int = 8192
    compression: str = "zstd"


@dataclass
class RejectConfig:
    """What to do with rows that fail validation.

    Args:
        max_fraction: largest tolerated fraction of rejected input rows.
        action: fail (publish nothing) or quarantine (publish, keep rejects) when exceeded.
    """

    max_fraction: float = 0.05
    action: str = "fail"


@dataclass
class ReaderConfig:
    """How ranks stream shards.

    Args:
        remainder: drop the last partial global batch, or pad it by wrapping around.
        shuffle_buffer: rows shuffled together within a rank's share.
        prefetch: row groups decoded ahead by the background thread.
        verify: check each shard's sha256 before the first step, for the train, val and
            test readers alike (a full read of every shard).
        bucket_by_length: for sequences, batch rows of similar length together (within
            each shuffle window), so batches need less padding; batch counts are unchanged.
        layout: how ranks split the epoch stream. ``contiguous``: each rank reads one
            piece, so it decodes only its share of row groups. ``interleaved``: global
            batch k is the same rows for any world size (1 rank x 2b sees what 2 ranks x b
            see), so results do not depend on W; every rank decodes the whole stream.
        cache_dir: a node-local directory where whole shards are kept after their first
            download (checked against the manifest's sha256); None streams ranged reads
            of the row groups a rank needs, straight from the store.
        cache_max_bytes: the cache's size bound; least recently used shards go first.
        readahead: on an object store (no cache), row groups fetched ahead in parallel,
            hiding each ranged read's latency (at most 256 MiB of them, uncompressed, but
            always one); 0 fetches one at a time.
        decode_threads: local row groups decoded ahead in parallel by this many threads.
            None: on a GPU rank the cores it owns (the CPU has nothing else to do while
            the GPU trains, and one thread decodes uint8 images slower than a GPU trains
            on them), on a CPU rank 0 (inline: more threads would take cores from training).
        page_checksums: verify each Parquet data page's CRC while reading (prepare writes
            them), so a changed byte stops training at its row group, naming the file.
    """

    remainder: str = "drop"
    shuffle_buffer: int = 4096
    prefetch: int = 4
    verify: bool = False
    bucket_by_length: bool = False
    layout: str = "contiguous"
    cache_dir: Optional[str] = None
    cache_max_bytes: int = 20 * 2**30
    readahead: int = 8
    decode_threads: Optional[int] = None
    page_checksums: bool = True


@dataclass
class DataConfig:
    """Dataset: source, validation, split, shards, and the reader that streams it.

    Args:
        root: where dataset versions live: a path or a URI (``s3://bucket/prefix``,
            ``gs://``, ``hdfs://``, ``file://``).
        name: dataset name; versions live in ``<root>/<name>/v-<fingerprint>/``. None: the
            experiment name.
        version: the version directory training reads (e.g. ``v-24bc2089afba38aa``); None:
            the one LATEST names.
    """

    name: Optional[str] = None
    root: str = "data"
    version: Optional[str] = None
    source: SourceConfig = field(default_factory=SourceConfig)
    tensor: Optional[TensorConfig] = None
    table: Optional[TableConfig] = None
    image: ImageConfig = field(default_factory=ImageConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    reject: RejectConfig = field(default_factory=RejectConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
