"""MusicLSTM: a bidirectional LSTM over spectrogram frames, mean-pooled over time."""

from __future__ import annotations

import torch

from baselines.common import SpectrogramConfig, SpectrogramModel
from baselines.layers import PooledRecurrent


class LSTMConfig(SpectrogramConfig):
    model_type = "finetune_lstm"
    hidden_size: int = 128  # per direction
    num_layers: int = 2
    dropout: float = 0.3  # also between recurrent layers


class LSTMModel(SpectrogramModel):
    """Each frame's spectrum is one step of a bidirectional recurrent net of ``cell`` type."""

    config_class = LSTMConfig
    cell = "lstm"

    def __init__(self, config: LSTMConfig):
        super().__init__(config)
        self.rnn = PooledRecurrent(self.cell, self.frontend.bins, config.hidden_size, config.num_layers, config.dropout)
        self.add_classifier(2 * config.hidden_size)

    def embed(self, input_values: torch.Tensor) -> torch.Tensor:
        frames = self.frontend(input_values).squeeze(1).transpose(1, 2)  # (B, T, F)
        return self.rnn(frames)  # (B, 2H)
