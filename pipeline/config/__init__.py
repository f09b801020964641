"""Typed experiment configs: YAML files in conf/ merged onto dataclass defaults.

One module per section (:mod:`~pipeline.config.data`, :mod:`~pipeline.config.model`,
:mod:`~pipeline.config.train`, :mod:`~pipeline.config.distributed` for ``dist``,
:mod:`~pipeline.config.run`); loading, overrides, validation and conversions in
:mod:`~pipeline.config.loading`. Everything is importable from ``pipeline.config``.
"""
from pipeline.config.data import (
    DataConfig,
    ImageConfig,
    ReaderConfig,
    RejectConfig,
    SequenceConfig,
    ShardConfig,
    SourceConfig,
    SplitConfig,
    SyntheticConfig,
    TableConfig,
    TensorConfig,
)
from pipeline.config.distributed import DistConfig
from pipeline.config.loading import (
    CHOICES,
    INLINE_PREFIX,
    Config,
    ConfigError,
    from_dict,
    inline_config,
    load_config,
    to_dict,
    to_yaml,
    validate,
    with_absolute_locations,
)
from pipeline.config.model import ModelConfig
from pipeline.config.run import RunConfig
from pipeline.config.train import TrainConfig

__all__ = [
    "CHOICES", "INLINE_PREFIX", "Config", "ConfigError", "DataConfig", "DistConfig", "ImageConfig", "ModelConfig",
    "ReaderConfig", "RejectConfig", "RunConfig", "SequenceConfig", "ShardConfig", "SourceConfig", "SplitConfig",
    "SyntheticConfig", "TableConfig", "TensorConfig", "TrainConfig", "from_dict", "inline_config", "load_config", "to_dict",
    "to_yaml", "validate", "with_absolute_locations",
]
