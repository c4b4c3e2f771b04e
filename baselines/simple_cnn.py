"""SimpleCNN: four conv blocks on the spectrogram, global average pooling, linear head."""

from __future__ import annotations

import torch

from baselines.common import SpectrogramConfig, SpectrogramModel
from baselines.layers import conv_stack


class SimpleCNNConfig(SpectrogramConfig):
    model_type = "finetune_simple_cnn"
    channels: list[int] | tuple[int, ...] = (32, 64, 128, 256)  # one conv block per entry
    dropout: float = 0.3


class SimpleCNNModel(SpectrogramModel):
    """Conv-BN-ReLU-pool(2, 2) blocks, then the mean over frequency and time."""

    config_class = SimpleCNNConfig

    def __init__(self, config: SimpleCNNConfig):
        super().__init__(config)
        self.blocks = conv_stack(config.channels, [(2, 2)] * len(config.channels))
        self.add_classifier(config.channels[-1])

    def embed(self, input_values: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.frontend(input_values))  # (B, C, F', T')
        return x.mean(dim=(2, 3))  # (B, C)
