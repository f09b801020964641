"""Multi-layer perceptron over a flattened feature vector."""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Linear blocks (Linear, [BatchNorm], ReLU) then a linear classifier.

    Args:
        in_features: flattened input size.
        num_classes: output logits.
        hidden: widths of the hidden layers.
        dropout: dropout before the classifier.
        batch_norm: batch norm after each hidden linear layer.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: list[int], dropout: float = 0.0, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            width = h
        layers += [nn.Dropout(dropout), nn.Linear(width, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
