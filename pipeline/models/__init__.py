"""MLP, CNN and RNN classifiers as plain ``nn.Module``s, sized from the dataset manifest.

Models know nothing of ranks or collectives. Each takes the batch's feature tensor
(``forward(x)``) and returns class logits.
"""
from __future__ import annotations

import math

from torch import nn

from pipeline.config import ModelConfig
from pipeline.models.cnn import ConvNet
from pipeline.models.mlp import MLP


class ModelError(ValueError):
    """A model type that cannot consume the dataset's features."""


def input_feature(schema: dict) -> tuple[str, dict]:
    """The single feature the model consumes, with its manifest spec."""
    features = schema["features"]
    if len(features) != 1:
        raise ModelError(f"models take one feature tensor; the dataset has {sorted(features)}")
    name, spec = next(iter(features.items()))
    return name, spec


def build_model(cfg: ModelConfig, schema: dict) -> nn.Module:
    """Build the configured model with input/output sizes taken from ``schema``."""
    _, spec = input_feature(schema)
    num_classes = int(schema["label"]["num_classes"])
    shape = list(spec["shape"])
    if cfg.type == "mlp":
        return MLP(math.prod(shape), num_classes, cfg.hidden, cfg.dropout, cfg.batch_norm)
    if cfg.type == "cnn":
        if len(shape) not in (2, 3):
            raise ModelError(f"model.type=cnn needs a [C, L] series or [C, H, W] image; feature shape is {shape}")
        return ConvNet(shape, num_classes, cfg.channels, cfg.kernel_size, cfg.dropout, cfg.batch_norm)
    raise ModelError(f"model.type={cfg.type!r} is not implemented yet for feature shape {shape}; use mlp or cnn")


__all__ = ["ConvNet", "MLP", "ModelError", "build_model", "input_feature"]
