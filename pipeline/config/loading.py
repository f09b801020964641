"""The whole config: loading a YAML file onto the sections' defaults, ``a.b=c`` overrides,
validation (unknown keys, wrong types and invalid choices are errors that name the key and
what is allowed), absolute locations, and conversions (dict, YAML, inline).

Runtime facts (rank, world size, readers) are never stored in a config: they are passed
as arguments.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from pipeline import storage
from pipeline.config.data import DataConfig
from pipeline.config.distributed import DistConfig
from pipeline.config.model import ModelConfig
from pipeline.config.run import RunConfig
from pipeline.config.train import TrainConfig


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says which key and why."""


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
    "run.tracking": ("none", "mlflow"),
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
        "train.preemption_check_steps": cfg.train.preemption_check_steps,
        "train.progress_every_s": cfg.train.progress_every_s,
        "model.dropout": cfg.model.dropout,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if cfg.run.tracking_uri and "@" in urlsplit(cfg.run.tracking_uri).netloc:
        raise ConfigError("run.tracking_uri holds credentials (user:password@host): they would be copied into configs, "
                          "checkpoints, MLflow params and logs; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                          "(or MLFLOW_TRACKING_TOKEN) in the environment instead")
    if cfg.run.tracking == "mlflow" and cfg.run.tracking_uri is None and not storage.is_local(cfg.run.root):
        raise ConfigError(f"run.tracking=mlflow with run.root={cfg.run.root}: the default store is a local SQLite file beside "
                          "the runs; set run.tracking_uri (an MLflow server, e.g. http://mlflow:5000, or sqlite:////abs/path/mlflow.db)")
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
