"""Multi-layer perceptron over a flattened feature vector."""
from __future__ import annotations

import torch
from torch import nn


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Linear blocks (Linear, [BatchNorm], activation, [Dropout]) then a linear classifier.

    Args:
        in_features: flattened input size.
        num_classes: output logits.
        hidden: widths of the hidden layers.
        dropout: dropout after each hidden block.
        batch_norm: batch norm after each hidden linear layer.
        activation: relu, gelu or tanh.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: list[int], dropout: float = 0.0,
                 batch_norm: bool = True, activation: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
