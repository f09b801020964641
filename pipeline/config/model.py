"""The ``model`` section: architecture and sizes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List


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
