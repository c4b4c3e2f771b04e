"""Building blocks shared by the baselines."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def clamped_max_pool(x: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
    """Non-overlapping max pool over the trailing dims whose kernel never exceeds the input.

    A dimension shorter than its kernel is pooled whole, so short inputs reach one step instead
    of an error; inputs long enough pool exactly as ``nn.MaxPoolNd(kernel)``.
    """
    sizes = x.shape[-len(kernel) :]
    kernel = tuple(min(k, s) for k, s in zip(kernel, sizes))
    pool = F.max_pool1d if len(kernel) == 1 else F.max_pool2d
    return pool(x, kernel)


class ConvBlock2d(nn.Module):
    """3x3 conv, batch norm, ReLU, max pool: (B, C_in, F, T) -> (B, C_out, F / pf, T / pt)."""

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int] = (2, 2)):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.pool = tuple(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clamped_max_pool(torch.relu(self.bn(self.conv(x))), self.pool)


def conv_stack(channels, pools) -> nn.Sequential:
    """``ConvBlock2d`` from one input channel through ``channels``, pooling by ``pools`` in turn."""
    widths = [1, *channels]
    blocks = zip(widths[:-1], widths[1:], pools, strict=True)
    return nn.Sequential(*(ConvBlock2d(a, b, pool) for a, b, pool in blocks))


class ConvBlock1d(nn.Module):
    """Conv, batch norm, ReLU, max pool over time: (B, C_in, T) -> (B, C_out, T / pool)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, pool: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, padding=kernel // 2)
        self.bn = nn.BatchNorm1d(out_channels)
        self.pool = (pool,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clamped_max_pool(torch.relu(self.bn(self.conv(x))), self.pool)


class HiddenLayer(nn.Module):
    """Linear, batch norm, ReLU: (B, D_in) -> (B, D_out)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.norm = nn.BatchNorm1d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.linear(x)))


class PooledRecurrent(nn.Module):
    """Bidirectional LSTM or GRU over (B, T, D), mean-pooled over time -> (B, 2 * hidden_size)."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_class(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (B, T, 2H)
        return out.mean(dim=1)


def global_max(x: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) -> (B, C): max over every position."""
    return x.flatten(2).amax(dim=2)
