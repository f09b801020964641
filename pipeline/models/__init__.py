"""MLP, CNN and RNN classifiers as plain ``nn.Module``s, sized from the dataset manifest.

Models know nothing of ranks or collectives. ``build_model`` wraps the chosen network in
:class:`Classifier`, which picks its inputs out of a reader batch (a dict of tensors) by
the feature names in the manifest, so the trainer and scorer call ``model(batch)``.

uint8 images reach the model as uint8 (a quarter of float32's bytes from the reader and
over the host-to-device copy); the Classifier's first operation casts and standardises
them with the per-channel mean and std the featurizer fitted, on whatever device the
model is.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.config import ModelConfig
from pipeline.models.cnn import ConvNet
from pipeline.models.mlp import MLP
from pipeline.models.rnn import RNNClassifier
from pipeline.schema import length_column


class ModelError(ValueError):
    """A model type that cannot consume the dataset's features."""


def _embedding_dim(cardinality: int) -> int:
    """The usual rule of thumb: grows with the vocabulary, capped."""
    return int(min(16, max(2, round(1.6 * cardinality**0.56))))


class Classifier(nn.Module):
    """Routes a batch's features into a network.

    Args:
        kind: mlp, cnn or rnn.
        network: the network itself.
        tensors: names of float tensor features (flattened and concatenated for the MLP).
        categorical: name of the categorical feature (MLP embeddings), if any.
        cardinalities: vocabulary size (with the OOV bucket) per categorical column.
        sequence: name of the variable-length sequence feature (RNN, masked CNN), if any.
    """

    def __init__(self, kind: str, network: nn.Module, tensors: list[str], categorical: str | None = None,
                 cardinalities: list[int] | None = None, sequence: str | None = None):
        super().__init__()
        self.kind, self.network = kind, network
        self.tensors, self.categorical, self.sequence = list(tensors), categorical, sequence
        self.embeddings = nn.ModuleList(nn.Embedding(c, _embedding_dim(c)) for c in (cardinalities or []))
        # (mean, std) per feature the model standardises, set by build_model. Constants, not
        # buffers: they come from the dataset (the bundle keeps the featurizer), so they
        # stay out of state_dict, checkpoints and buffer averaging.
        self.standardize: dict[str, tuple[list[float], list[float]]] = {}
        self._constants: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _standardized(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """[B, C, ...] raw values (uint8 from shards, int or float from scoring's featurizer)
        -> float32 (x - mean[c]) / std[c], on x's device."""
        key = (name, x.device)
        if key not in self._constants:
            mean, std = self.standardize[name]
            view = (-1,) + (1,) * (x.dim() - 2)
            self._constants[key] = (torch.tensor(mean, dtype=torch.float32, device=x.device).view(view),
                                    torch.tensor(std, dtype=torch.float32, device=x.device).view(view))
        mean, std = self._constants[key]
        return x.float().sub(mean).div(std)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raw = [n for n in self.tensors if n in self.standardize or batch[n].dtype == torch.uint8]
        if raw:  # features without fitted statistics are only cast
            batch = {**batch, **{n: self._standardized(n, batch[n]) if n in self.standardize else batch[n].float() for n in raw}}
        if self.kind == "rnn":
            if self.sequence is not None:
                return self.network(batch[self.sequence], batch[length_column(self.sequence)])
            x = batch[self.tensors[0]].transpose(1, 2)  # equal-length series [B, dims, L] -> [B, L, dims]
            return self.network(x, torch.full((len(x),), x.shape[1], dtype=torch.int64))
        if self.kind == "cnn":
            if self.sequence is not None:  # [B, T, dims] time-major, padded -> [B, dims, T]
                return self.network(batch[self.sequence].transpose(1, 2), batch[length_column(self.sequence)])
            return self.network(batch[self.tensors[0]])
        parts = [batch[name].flatten(1) for name in self.tensors]
        if self.categorical is not None:
            codes = batch[self.categorical]
            parts += [emb(codes[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.network(torch.cat(parts, dim=1))


def input_standardization(schema: dict, featurizer: dict | None) -> dict[str, tuple[list[float], list[float]]]:
    """(mean, std) per channel of each feature the model standardises itself (uint8
    tensors: the featurizer's ``applied_in`` is ``model``, ``reader`` in datasets prepared
    before the model took it over)."""
    out = {}
    for name, spec in schema["features"].items():
        fitted = (featurizer or {}).get(name, {})
        if spec["kind"] == "tensor" and fitted.get("applied_in") in ("model", "reader"):
            out[name] = ([float(v) for v in fitted["mean"]], [float(v) for v in fitted["std"]])
    return out


def build_model(cfg: ModelConfig, schema: dict, featurizer: dict | None = None) -> Classifier:
    """Build the configured model with input/output sizes taken from ``schema`` (and the
    input standardisation of uint8 features from ``featurizer``, the manifest's)."""
    model = _build(cfg, schema)
    model.standardize = input_standardization(schema, featurizer)
    return model


def _build(cfg: ModelConfig, schema: dict) -> Classifier:
    features = schema["features"]
    num_classes = int(schema["label"]["num_classes"])
    tensors = [n for n, s in features.items() if s["kind"] == "tensor"]
    categorical = next((n for n, s in features.items() if s["kind"] == "categorical"), None)
    sequence = next((n for n, s in features.items() if s["kind"] == "sequence"), None)
    if cfg.type == "mlp":
        if sequence is not None:
            raise ModelError("model.type=mlp needs fixed-size features; this dataset has variable-length sequences: use model.type=rnn")
        cards = features[categorical]["cardinalities"] if categorical else []
        width = sum(math.prod(features[n]["shape"]) for n in tensors) + sum(_embedding_dim(c) for c in cards)
        net = MLP(width, num_classes, cfg.hidden, cfg.dropout, cfg.batch_norm, cfg.activation)
        return Classifier("mlp", net, tensors, categorical, cards)
    if cfg.type == "cnn":
        shapes = [features[n]["shape"] for n in tensors]
        if sequence is not None and not tensors and not categorical:  # variable-length series: masked 1-D CNN
            net = ConvNet([features[sequence]["dims"], 1], num_classes, cfg.channels, cfg.kernel_size, cfg.dropout, cfg.batch_norm, cfg.activation)
            return Classifier("cnn", net, [], sequence=sequence)
        if len(tensors) != 1 or len(shapes[0]) not in (2, 3) or categorical or sequence:
            raise ModelError(f"model.type=cnn needs one [C, L] series, a variable-length series or one [C, H, W] image feature; "
                             f"the dataset has {_describe(features)}")
        return Classifier("cnn", ConvNet(shapes[0], num_classes, cfg.channels, cfg.kernel_size, cfg.dropout, cfg.batch_norm, cfg.activation), tensors)
    if cfg.type == "rnn":
        if sequence is not None:
            dims = features[sequence]["dims"]
        elif len(tensors) == 1 and len(features[tensors[0]]["shape"]) == 2:
            dims = features[tensors[0]]["shape"][0]
        else:
            raise ModelError(f"model.type=rnn needs a sequence or a [dims, length] series feature; the dataset has {_describe(features)}")
        net = RNNClassifier(dims, num_classes, cfg.rnn_hidden, cfg.rnn_layers, cfg.rnn_cell, cfg.bidirectional, cfg.dropout)
        return Classifier("rnn", net, tensors, sequence=sequence)
    raise ModelError(f"unknown model.type {cfg.type!r}")


def _describe(features: dict) -> str:
    return ", ".join(f"{n} ({s['kind']} {s.get('shape', s.get('dims'))})" for n, s in features.items())


__all__ = ["Classifier", "ConvNet", "MLP", "ModelError", "RNNClassifier", "build_model", "input_standardization"]
