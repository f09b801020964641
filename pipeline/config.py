"""Typed experiment configs: YAML files in conf/ merged onto dataclass defaults.

Every component reads its own section (``data``, ``model``, ``train``, ``dist``, ``run``).
Runtime facts (rank, world size, readers) are never stored here: they are passed as
arguments. Unknown keys, wrong types and invalid choices are errors that name the key and
what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says which key and why."""


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
            hiding each ranged read's latency; 0 fetches one at a time.
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
    readahead: int = 4
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


@dataclass
class ModelConfig:
    """Model family and its sizes; input/output sizes come from the manifest.

    Args:
        type: mlp | cnn | rnn.
        hidden: MLP layer widths.
        channels: CNN conv block widths.
        kernel_size: CNN kernel size.
        rnn_cell: lstm | gru.
        rnn_hidden: RNN hidden size.
        rnn_layers: stacked RNN layers.
        bidirectional: RNN reads both directions.
        dropout: dropout before the classifier (and between MLP layers).
        batch_norm: batch norm after each layer (MLP, CNN).
        activation: MLP/CNN non-linearity: relu | gelu | tanh.
        sync_batch_norm: batch norm statistics over the global batch (every rank's rows),
            so N ranks x b train as 1 x N*b; costs two small all-reduces per layer and step.
    """

    type: str = "cnn"
    hidden: List[int] = field(default_factory=lambda: [128, 64])
    channels: List[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    rnn_cell: str = "lstm"
    rnn_hidden: int = 64
    rnn_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    batch_norm: bool = True
    activation: str = "relu"
    sync_batch_norm: bool = False


@dataclass
class TrainConfig:
    """Optimisation. ``batch_size`` is per rank; the global batch is batch_size x world size.

    Args:
        scale_lr: multiply lr by the global batch (world size x batch_size x
            accumulate_steps) over ``reference_batch`` (the linear scaling rule); see
            :mod:`pipeline.train.schedule`.
        reference_batch: the global batch ``lr`` was tuned for; None: the run's first
            ``batch_size x accumulate_steps`` on one rank (kept in its checkpoints, so a
            resume with another batch size keeps the rate of the same global batch).
        warmup_epochs: linear warm-up from lr to the scaled lr over this many epochs.
        schedule: after warm-up, ``cosine`` decays to 0 at the last epoch, ``step``
            multiplies by ``gamma`` every ``step_epochs``, ``none`` keeps it constant.
        grad_clip: clip the global gradient norm (after the all-reduce) to this; 0 is off.
        accumulate_steps: batches whose gradients are summed before one optimizer step
            (Horovod ``backward_passes_per_step``; DDP ``no_sync``): the all-reduce runs
            once per optimizer step.
        early_stopping_patience: stop after this many epochs without a better
            ``early_stopping_metric``; 0 is off.
        early_stopping_min_delta: how much better the metric must get to count.
        checkpoint_every_steps: also checkpoint every N optimizer steps (0: epoch ends only).
        keep_checkpoints: newest checkpoint files kept in ``checkpoints/``.
        skip_nonfinite: when the averaged gradients are NaN or inf, skip that batch (counted
            in report.json) instead of stopping the run.
        restore_best: at the end, go back to the weights of the epoch with the best
            ``early_stopping_metric`` (needs a val split): they are what is tested and saved
            in model.pt (report.json's ``best_epoch``). False keeps the last epoch's.
        device: auto (``cuda:<local_rank>`` when CUDA is available, else the CPU), cpu, or
            cuda (a GPU per rank, or an error); see :mod:`pipeline.engines.device`.
        precision: fp32; bf16 (autocast to bfloat16, also on CPU); fp16 (autocast to
            float16 with a loss scaler). Parameters and optimizer state stay float32.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    scale_lr: bool = True
    reference_batch: Optional[int] = None
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    step_epochs: int = 10
    gamma: float = 0.1
    grad_clip: float = 0.0
    accumulate_steps: int = 1
    early_stopping_patience: int = 0
    early_stopping_metric: str = "val_loss"
    early_stopping_min_delta: float = 0.0
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 2
    skip_nonfinite: bool = False
    restore_best: bool = True
    device: str = "auto"
    precision: str = "fp32"


@dataclass
class DistConfig:
    """Distributed engine.

    Args:
        engine: horovod (horovodrun / horovod.run / Spark), torch (DDP, torchrun), or
            single (one process, no launcher).
        fp16_allreduce: compress gradients to fp16 for the all-reduce.
        elastic: Horovod elastic mode: ranks may leave or join; progress is committed in
            memory every ``commit_every_steps`` and training continues on the survivors.
        timeout_s: how long a collective waits for a lost peer before the job fails.
        commit_every_steps: elastic mode: steps between in-memory commits (the most a
            lost worker can cost).
        min_np: elastic mode: fewest ranks the job continues with (default 1).
        network_interface: the interface ranks talk over (``eth0``, ``ib0``, ...); None:
            the launcher detects it (Spark launcher: the interface that routes to the
            Spark master).
    """

    engine: str = "horovod"
    fp16_allreduce: bool = False
    elastic: bool = False
    timeout_s: int = 300
    commit_every_steps: int = 20
    min_np: int = 1
    network_interface: Optional[str] = None


@dataclass
class RunConfig:
    """Where a run writes: ``<root>/<name>/`` (root a path or a URI, as ``data.root``); name
    None means ``<experiment>-<timestamp>``."""

    root: str = "runs"
    name: Optional[str] = None


@dataclass
class Config:
    """One experiment: everything a job needs, loaded from ``conf/<name>.yaml``."""

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    run: RunConfig = field(default_factory=RunConfig)


CHOICES = {
    "data.source.type": ("csv", "json", "parquet", "images", "ucr", "synthetic"),
    "data.source.synthetic.kind": ("tabular", "images", "sequences"),
    "data.tensor.dtype": ("uint8", "float32"),
    "data.shards.compression": ("zstd", "snappy", "gzip", "none"),
    "data.reject.action": ("fail", "quarantine"),
    "data.reader.remainder": ("drop", "pad"),
    "data.reader.layout": ("contiguous", "interleaved"),
    "data.sequence.normalize": ("per_channel", "per_series", "none"),
    "data.sequence.missing": ("reject", "interpolate", "mean"),
    "model.type": ("mlp", "cnn", "rnn"),
    "model.rnn_cell": ("lstm", "gru"),
    "model.activation": ("relu", "gelu", "tanh"),
    "train.optimizer": ("adamw", "sgd"),
    "train.schedule": ("cosine", "step", "none"),
    "train.early_stopping_metric": ("val_loss", "val_accuracy"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("fp32", "bf16", "fp16"),
    "dist.engine": ("horovod", "torch", "single"),
}



INLINE_PREFIX = "yaml+base64:"


def inline_config(path: str | Path) -> str:
    """The config file's text as one ``--config`` argument (``yaml+base64:...``), for a
    driver that runs on another machine (spark-submit cluster deploy mode)."""
    import base64

    return INLINE_PREFIX + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``path`` (a YAML file, or a config inlined by :func:`inline_config`) over the
    dataclass defaults, then apply ``a.b=c`` overrides.

    Raises:
        ConfigError: missing file, unknown key, wrong type, or a value outside its choices.
    """
    base = OmegaConf.structured(Config)
    layers = []
    if path is not None and str(path).startswith(INLINE_PREFIX):
        import base64

        layers.append(("the inline config", OmegaConf.create(base64.b64decode(str(path)[len(INLINE_PREFIX):]).decode("utf-8"))))
    elif path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        layers.append((str(path), _read_yaml(path)))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        try:
            layers.append((f"override {item!r}", OmegaConf.from_dotlist([item])))
        except (yaml.YAMLError, OmegaConfBaseException) as err:
            raise ConfigError(f"override {item!r}: not a valid value ({_first_line(err)}); quote text that YAML would parse") from None
    merged = base
    for origin, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except ConfigKeyError as err:
            raise ConfigError(f"{origin}: {_unknown_key_message(err)}") from None
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None) or "?"
            raise ConfigError(f"{origin}: bad value for {key}: {_first_line(err)}") from None
    try:
        cfg = OmegaConf.to_object(merged)  # resolves ${...} interpolations
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"{key}: {_first_line(err)}; fix the ${{...}} reference (it must name another key, e.g. ${{name}})") from None
    validate(cfg)
    return cfg


def _read_yaml(path: Path):
    """The file's YAML, or a ConfigError naming the file, line and problem."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save the file as UTF-8") from None
    try:
        loaded = OmegaConf.create(text) if text.strip() else OmegaConf.create({})
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', None) or _first_line(err)}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {_first_line(err)}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (name:, data:, model:, ...), got a list")
    return loaded


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0]


def _unknown_key_message(err: ConfigKeyError) -> str:
    full_key = getattr(err, "full_key", "") or ""
    parent_path, _, key = full_key.rpartition(".")
    node: Any = Config()
    for part in filter(None, parent_path.split(".")):
        node = getattr(node, part, None)
    if dataclasses.is_dataclass(node):
        valid = ", ".join(f.name for f in dataclasses.fields(node))
        where = parent_path or "the top level"
        return f"unknown key {full_key!r}; valid keys in {where}: {valid}"
    return f"unknown key {full_key or key!r}: {_first_line(err)}"


def validate(cfg: Config) -> None:
    """Check values the type system cannot; raise ConfigError naming the key."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value is not None and value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of: {', '.join(allowed)}")
    if cfg.data.image.channels not in (1, 3):
        raise ConfigError(f"data.image.channels must be 1 or 3, got {cfg.data.image.channels}")
    if cfg.data.source.synthetic.channels not in (1, 3):
        raise ConfigError(f"data.source.synthetic.channels must be 1 or 3, got {cfg.data.source.synthetic.channels}")
    split = cfg.data.split
    fractions = (split.train, split.val, split.test)
    if not all(math.isfinite(f) for f in fractions) or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6 or split.train <= 0:
        raise ConfigError(
            f"data.split fractions must be >= 0, train > 0, and sum to 1; got "
            f"train={split.train}, val={split.val}, test={split.test}"
        )
    positive = {
        "data.shards.rows_per_shard": cfg.data.shards.rows_per_shard,
        "data.shards.row_group_rows": cfg.data.shards.row_group_rows,
        "data.reader.shuffle_buffer": cfg.data.reader.shuffle_buffer,
        "data.reader.cache_max_bytes": cfg.data.reader.cache_max_bytes,
        "train.epochs": cfg.train.epochs,
        "train.batch_size": cfg.train.batch_size,
        "dist.timeout_s": cfg.dist.timeout_s,
        "dist.commit_every_steps": cfg.dist.commit_every_steps,
        "dist.min_np": cfg.dist.min_np,
        "train.accumulate_steps": cfg.train.accumulate_steps,
        "train.step_epochs": cfg.train.step_epochs,
        "train.keep_checkpoints": cfg.train.keep_checkpoints,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if not (math.isfinite(cfg.train.lr) and cfg.train.lr > 0):
        raise ConfigError(f"train.lr must be a finite number > 0, got {cfg.train.lr}")
    for key in ("train.momentum", "train.weight_decay", "train.grad_clip", "train.warmup_epochs", "model.dropout"):
        if not math.isfinite(_get(cfg, key)):
            raise ConfigError(f"{key} must be a finite number, got {_get(cfg, key)}")
    classes = cfg.data.source.classes
    if classes is not None:
        names = [str(c) for c in classes]
        duplicates = sorted({c for c in names if names.count(c) > 1})
        if duplicates:
            raise ConfigError(f"data.source.classes lists {duplicates} more than once; each class once, in class-index order")
        if len(names) < 2:
            raise ConfigError(f"data.source.classes={names}: a classifier needs at least 2 classes")
    non_negative = {
        "train.grad_clip": cfg.train.grad_clip,
        "data.reader.readahead": cfg.data.reader.readahead,
        "data.reader.decode_threads": cfg.data.reader.decode_threads or 0,
        "train.warmup_epochs": cfg.train.warmup_epochs,
        "train.early_stopping_patience": cfg.train.early_stopping_patience,
        "train.early_stopping_min_delta": cfg.train.early_stopping_min_delta,
        "train.checkpoint_every_steps": cfg.train.checkpoint_every_steps,
        "model.dropout": cfg.model.dropout,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if cfg.dist.elastic and cfg.dist.engine != "horovod":
        raise ConfigError(f"dist.elastic=true needs dist.engine=horovod (got {cfg.dist.engine!r}): elastic mode is Horovod's")
    if cfg.dist.elastic and cfg.train.precision == "fp16":
        raise ConfigError("train.precision=fp16 with dist.elastic=true: a worker joining after a reset would start from "
                          "another loss scale than the survivors, and their gradients would be averaged at different "
                          "scales; use train.precision=bf16 (no loss scale) or fp32")
    tensor = cfg.data.tensor
    if tensor is not None:
        if not tensor.shape or min(tensor.shape) <= 0:
            raise ConfigError(f"data.tensor.shape must be positive sizes, got {tensor.shape}")
        if tensor.min > tensor.max:
            raise ConfigError(f"data.tensor.min ({tensor.min}) > data.tensor.max ({tensor.max})")
        if tensor.dtype == "uint8" and (tensor.min < 0 or tensor.max > 255):
            raise ConfigError(
                f"data.tensor.dtype=uint8 holds 0..255, but min/max are {tensor.min}/{tensor.max}; "
                "use dtype=float32"
            )


def _get(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def with_absolute_locations(cfg: Config) -> Config:
    """``cfg`` with ``data.root``, ``run.root``, ``data.source.path`` and
    ``data.reader.cache_dir`` made absolute against this process's working directory (URIs
    unchanged). Done on the driver, before the config reaches executors or ranks.
    """
    from pipeline import storage

    def fix(location):
        return None if location is None else storage.absolute(location)

    data = cfg.data
    if data.reader.cache_dir is not None and not storage.is_local(data.reader.cache_dir):
        raise ConfigError(f"data.reader.cache_dir={data.reader.cache_dir!r} must be a local directory on each node")
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            data, root=fix(data.root), source=dataclasses.replace(data.source, path=fix(data.source.path)),
            reader=dataclasses.replace(data.reader, cache_dir=fix(data.reader.cache_dir)),
        ),
        run=dataclasses.replace(cfg.run, root=fix(cfg.run.root)),
    )


def to_dict(cfg: Config) -> dict:
    """Plain nested dict of ``cfg`` (for YAML dumps, manifests and pickling to workers)."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> Config:
    """Inverse of :func:`to_dict`, validated like a loaded file."""
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(data)))
    validate(cfg)
    return cfg


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (written to each run directory)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
