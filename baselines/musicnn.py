"""MusiCNN (Pons et al. 2018): musically motivated front end, dense residual back end.

Imports Won et al.'s MTAT weights (``mtat/musicnn/best_model.pth``).
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.common import SpectrogramConfig, SpectrogramModel
from baselines.layers import ConvBlock1d, HiddenLayer

TIMBRAL_HEIGHTS = (0.7, 0.4)  # vertical filters span these fractions of the frequency axis
TEMPORAL_LENGTHS = (129, 65, 33)  # horizontal filters, in frames


class MusicnnConfig(SpectrogramConfig):
    model_type = "finetune_musicnn"
    timbral_channels: int = 204  # per vertical (timbre) filter shape
    temporal_channels: int = 51  # per horizontal (rhythm) filter length
    backend_channels: int = 64
    hidden_units: int = 200  # the dense layer before the classifier


class TimbralBlock(nn.Module):
    """Tall (h x 7) conv, BN, ReLU, max over frequency: (B, 1, F, T) -> (B, C, T)."""

    def __init__(self, channels: int, height: int):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, (height, 7), padding=(0, 3))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(spec))).amax(dim=2)


class MusicnnModel(SpectrogramModel):
    """Timbral and temporal filters, three residual 1-D convs, max and mean over time, dense."""

    config_class = MusicnnConfig
    won_renames = (
        ("layers.0.", "timbral.0."),
        ("layers.1.", "timbral.1."),
        ("layers.2.", "temporal.0."),
        ("layers.3.", "temporal.1."),
        ("layers.4.", "temporal.2."),
        ("layer1.", "backend.0."),
        ("layer2.", "backend.1."),
        ("layer3.", "backend.2."),
        ("dense1.", "hidden.linear."),
        ("bn.", "hidden.norm."),
        ("dense2.", "classifier."),
    )

    def __init__(self, config: MusicnnConfig):
        super().__init__(config)
        self.timbral = nn.ModuleList(
            TimbralBlock(config.timbral_channels, int(share * self.frontend.bins)) for share in TIMBRAL_HEIGHTS
        )
        self.temporal = nn.ModuleList(ConvBlock1d(1, config.temporal_channels, length) for length in TEMPORAL_LENGTHS)
        front = len(TIMBRAL_HEIGHTS) * config.timbral_channels
        front += len(TEMPORAL_LENGTHS) * config.temporal_channels
        back = config.backend_channels
        self.backend = nn.ModuleList(
            [ConvBlock1d(front, back, 7), ConvBlock1d(back, back, 7), ConvBlock1d(back, back, 7)]
        )
        self.hidden = HiddenLayer(2 * (front + 3 * back), config.hidden_units)
        self.add_classifier(config.hidden_units)

    def embed(self, input_values: torch.Tensor) -> torch.Tensor:
        spec = self.frontend(input_values)  # (B, 1, F, T)
        envelope = spec.mean(dim=2)  # (B, 1, T)
        features = [block(spec) for block in self.timbral]
        features += [block(envelope) for block in self.temporal]
        x = torch.cat(features, dim=1)  # (B, front, T)
        outputs = [x, self.backend[0](x)]
        for block in self.backend[1:]:
            outputs.append(block(outputs[-1]) + outputs[-1])  # residual
        x = torch.cat(outputs, dim=1)  # (B, front + 3 * back, T)
        pooled = torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)  # (B, 2 * (front + 3 * back))
        return self.hidden(pooled)  # (B, hidden_units)
