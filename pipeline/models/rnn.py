"""Recurrent classifier over variable-length sequences, packed so padding never counts."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class RNNClassifier(nn.Module):
    """LSTM/GRU over ``[B, T, dims]`` with per-row lengths; the last hidden state classifies.

    Sequences are packed with their lengths, so a row's result does not depend on how much
    padding its batch needed.

    Args:
        input_size: values per time step.
        num_classes: output logits.
        hidden_size: recurrent state size.
        num_layers: stacked layers.
        cell: lstm or gru.
        bidirectional: read both directions (final states of both are concatenated).
        dropout: dropout before the classifier.
    """

    def __init__(self, input_size: int, num_classes: int, hidden_size: int = 64, num_layers: int = 1,
                 cell: str = "lstm", bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(input_size, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
        directions = 2 if bidirectional else 1
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size * directions, num_classes))
        self.directions = directions

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        hidden = state[0] if isinstance(state, tuple) else state  # LSTM returns (h, c)
        last = hidden[-self.directions :]  # final layer, each direction: [directions, B, H]
        return self.head(torch.cat(list(last), dim=1))
