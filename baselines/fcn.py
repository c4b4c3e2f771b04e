"""FCN (Choi et al. 2016): five conv blocks pooled down to one step.

Imports Won et al.'s MTAT weights (``mtat/fcn/best_model.pth``), trained on 29.1 s inputs.
"""

from __future__ import annotations

import torch

from baselines.common import SpectrogramConfig, SpectrogramModel
from baselines.layers import conv_stack, global_max

# Pools (frequency, time) after each block: 96 mels and 29.1 s (1,813 frames) reach 1 x 1.
FCN_POOLS = ((2, 4), (2, 4), (2, 4), (3, 5), (4, 4))


class FCNConfig(SpectrogramConfig):
    model_type = "finetune_fcn"
    channels: list[int] | tuple[int, ...] = (64, 128, 128, 128, 64)  # five conv blocks


class FCNModel(SpectrogramModel):
    """Conv blocks with the published pools, then the max over what remains (B, C)."""

    config_class = FCNConfig
    won_renames = tuple((f"layer{i + 1}.", f"blocks.{i}.") for i in range(5)) + (("dense.", "classifier."),)

    def __init__(self, config: FCNConfig):
        super().__init__(config)
        self.blocks = conv_stack(config.channels, FCN_POOLS)
        self.add_classifier(config.channels[-1])

    def embed(self, input_values: torch.Tensor) -> torch.Tensor:
        return global_max(self.blocks(self.frontend(input_values)))  # (B, C)
