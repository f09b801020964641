"""Convolutional classifier for images [C, H, W] (2-D) and series [C, L] (1-D), the series
either of one length or of many (padded, with lengths: masked convolution blocks and
masked global pooling, so a row's logits do not depend on its batch's padding)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pipeline.models.mlp import ACTIVATIONS


class ConvNet(nn.Module):
    """Conv blocks (Conv, [BatchNorm], activation[, MaxPool]), global average pooling, classifier.

    The FCN shape used as the standard time-series baseline; with 2-D convs it is a small
    image CNN. Global pooling keeps it independent of the input's spatial size.

    Args:
        input_shape: [C, H, W] for images or [C, L] for series.
        num_classes: output logits.
        channels: output channels of each conv block.
        kernel_size: kernel size of every conv ("same" padding).
        dropout: dropout before the classifier.
        batch_norm: batch norm after each conv.
        activation: relu, gelu or tanh.
    """

    def __init__(self, input_shape: list[int], num_classes: int, channels: list[int], kernel_size: int = 3,
                 dropout: float = 0.0, batch_norm: bool = True, activation: str = "relu"):
        super().__init__()
        conv, norm, pool = (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d) if len(input_shape) == 3 else (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d)
        layers: list[nn.Module] = []
        width = input_shape[0]
        side = min(input_shape[1:])
        for out in channels:
            layers.append(conv(width, out, kernel_size, padding=kernel_size // 2, bias=not batch_norm))
            if batch_norm:
                layers.append(norm(out))
            layers.append(ACTIVATIONS[activation]())
            # Images: halve the resolution while it stays >= 2 so later blocks see wider context.
            if len(input_shape) == 3 and side >= 4:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            width = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(pool(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: [B, C, H, W] or [B, C, L]; with ``lengths`` [B], series padded past them."""
        if lengths is None:
            return self.head(self.features(x))
        mask = (torch.arange(x.shape[2], device=x.device)[None, :] < lengths.to(x.device)[:, None])  # [B, L]
        weights = mask.unsqueeze(1).to(x.dtype)
        x = x * weights
        for layer in self.features:
            if isinstance(layer, _BatchNorm):
                x = masked_batch_norm(layer, x, mask)
            else:
                x = layer(x) * weights  # padding stays zero: a conv past the end sees what "same" padding shows
        pooled = x.sum(2) / lengths.to(x.device).clamp_min(1).to(x.dtype)[:, None]
        return self.head[2:](pooled)  # after AdaptiveAvgPool + Flatten: dropout, classifier


def masked_batch_norm(norm: _BatchNorm, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``norm`` over the valid steps of [B, C, L] only: they go through it as [N, C] rows, so
    the statistics (local or synchronized) never count padding."""
    steps = x.transpose(1, 2)  # [B, L, C]
    out = torch.zeros_like(steps)
    out[mask] = norm(steps[mask])
    return out.transpose(1, 2)
