"""SampleCNN (Lee et al. 2017): sample-level 1-D convs on the raw waveform (no log-mel)."""

from __future__ import annotations

import torch
from torch import nn

from baselines.common import BaselineConfig, BaselinePreTrainedModel
from baselines.layers import ConvBlock1d, global_max


class SampleCNNConfig(BaselineConfig):
    model_type = "finetune_samplecnn"
    # The stride-3 stem, then one conv block pooling by 3 per further entry.
    channels: list[int] | tuple[int, ...] = (128, 128, 128, 256, 256, 256, 256, 256, 256, 512)


class SampleCNNModel(BaselinePreTrainedModel):
    """A stride-3 stem, conv blocks pooling by 3, a 1x1 conv block, max over time.

    With the ten default widths a 59,049-sample (3^10) input reaches one step, as in the paper.
    """

    config_class = SampleCNNConfig

    def __init__(self, config: SampleCNNConfig):
        super().__init__(config)
        widths = list(config.channels)
        self.stem = nn.Sequential(nn.Conv1d(1, widths[0], 3, stride=3), nn.BatchNorm1d(widths[0]), nn.ReLU())
        self.blocks = nn.Sequential(
            *(ConvBlock1d(a, b, 3, pool=3) for a, b in zip(widths[:-1], widths[1:])),
            ConvBlock1d(widths[-1], widths[-1], 1),
        )
        self.add_classifier(widths[-1])

    def embed(self, input_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(input_values.unsqueeze(1))  # (B, C, T / 3)
        return global_max(self.blocks(x))  # (B, C)
