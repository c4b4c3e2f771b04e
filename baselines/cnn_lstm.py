"""CNN-LSTM: conv blocks summarise short spans of spectrogram, a bidirectional LSTM reads them."""

from __future__ import annotations

import torch

from baselines.common import SpectrogramConfig, SpectrogramModel
from baselines.layers import PooledRecurrent, conv_stack


class CNNLSTMConfig(SpectrogramConfig):
    model_type = "finetune_cnn_lstm"
    channels: list[int] | tuple[int, ...] = (32, 64, 128)  # conv blocks pooling (2, 2)
    hidden_size: int = 128  # per direction
    num_layers: int = 1
    dropout: float = 0.3


class CNNLSTMModel(SpectrogramModel):
    """Conv blocks, max over frequency, LSTM over time, mean over time."""

    config_class = CNNLSTMConfig

    def __init__(self, config: CNNLSTMConfig):
        super().__init__(config)
        self.blocks = conv_stack(config.channels, [(2, 2)] * len(config.channels))
        self.rnn = PooledRecurrent("lstm", config.channels[-1], config.hidden_size, config.num_layers, config.dropout)
        self.add_classifier(2 * config.hidden_size)

    def embed(self, input_values: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.frontend(input_values)).amax(dim=2)  # (B, C, T)
        return self.rnn(x.transpose(1, 2))  # (B, 2H)
