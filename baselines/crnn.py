"""CRNN (Choi et al. 2017): four conv blocks, a two-layer GRU, its last step.

Imports Won et al.'s MTAT weights (``mtat/crnn/best_model.pth``), trained on 29.1 s inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.common import SpectrogramConfig, SpectrogramModel
from baselines.layers import conv_stack

# Pools (frequency, time) after each block: 96 mels reach 1 bin, time shrinks 96-fold.
CRNN_POOLS = ((2, 2), (3, 3), (4, 4), (4, 4))


class CRNNConfig(SpectrogramConfig):
    model_type = "finetune_crnn"
    channels: list[int] | tuple[int, ...] = (64, 128, 128, 128)  # four conv blocks
    rnn_hidden: int = 32
    rnn_layers: int = 2


class CRNNModel(SpectrogramModel):
    """Conv blocks, max over the remaining frequency bins, GRU over time, last hidden state."""

    config_class = CRNNConfig
    won_renames = tuple((f"layer{i + 1}.", f"blocks.{i}.") for i in range(4)) + (
        ("layer5.", "rnn."),
        ("dense.", "classifier."),
    )

    def __init__(self, config: CRNNConfig):
        super().__init__(config)
        self.blocks = conv_stack(config.channels, CRNN_POOLS)
        self.rnn = nn.GRU(config.channels[-1], config.rnn_hidden, config.rnn_layers, batch_first=True)
        self.add_classifier(config.rnn_hidden)

    def embed(self, input_values: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.frontend(input_values)).amax(dim=2)  # (B, C, T)
        out, _ = self.rnn(x.transpose(1, 2))  # (B, T, H)
        return out[:, -1]  # (B, H)
