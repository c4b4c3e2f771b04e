"""Short-chunk CNN with residual blocks (Won et al. 2020): stride-2 blocks, max pool, dense head."""

from __future__ import annotations

import torch
from torch import nn

from baselines.common import SpectrogramConfig, SpectrogramModel
from baselines.layers import HiddenLayer, global_max


class DeepCNNConfig(SpectrogramConfig):
    model_type = "finetune_deep_cnn"
    n_mels: int = 128  # as Won et al. trained it, on 3.69 s crops
    channels: int = 128  # the last block doubles it
    num_blocks: int = 7


class ResBlock2d(nn.Module):
    """Two 3x3 convs, the first with stride 2, plus a strided projection shortcut.

    (B, C_in, F, T) -> (B, C_out, ceil(F / 2), ceil(T / 2)).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + self.shortcut(x))


class DeepCNNModel(SpectrogramModel):
    """Residual blocks halving frequency and time, max over what remains, a dense layer."""

    config_class = DeepCNNConfig

    def __init__(self, config: DeepCNNConfig):
        super().__init__(config)
        widths = [1] + [config.channels] * (config.num_blocks - 1) + [2 * config.channels]
        self.blocks = nn.Sequential(*(ResBlock2d(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.hidden = HiddenLayer(widths[-1], widths[-1])
        self.add_classifier(widths[-1])

    def embed(self, input_values: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.frontend(input_values))  # (B, 2C, F', T')
        return self.hidden(global_max(x))  # (B, 2C)
