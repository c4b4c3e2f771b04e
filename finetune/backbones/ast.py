"""AST, the Audio Spectrogram Transformer: 16 kHz -> 128-bin log-mel (10 ms frames) -> 16x16
patches -> transformer layers -> final LayerNorm -> mean of [CLS] and distillation tokens -> head.

AST's input length is fixed by its position embeddings (`max_length` frames, 1024 = 10.24 s for
the AudioSet checkpoints); its feature extractor pads or cuts every clip to that length. A clip
length that differs is handled by windowing at the pretrained length (recipes use 10.24 s), or
by `max_length`, which interpolates the position embeddings along time: never by re-initialising
them (what `ignore_mismatched_sizes` would silently do to a changed `max_length`).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    AutoConfig,
    AutoModelForAudioClassification,
    initialization as init,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from finetune.backbones.common import Family, build_backbone
from finetune.backbones.heads import AttentionPooling, weighted_layer_sum


def token_pool(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """AST's own pooling: the mean of the [CLS] and distillation tokens, (B, N, D) -> (B, D)
    (no mask: every input has the same length)."""
    return (hidden[:, 0] + hidden[:, 1]) / 2


class ASTPooledConfig(ASTConfig):
    model_type = "finetune_ast"
    pooling: str = "mean"  # mean: AST's [CLS]/distillation tokens; attention: over every token
    use_weighted_layer_sum: bool = False


class ASTPooledForAudioClassification(ASTForAudioClassification):
    """AST with a learned weighted sum of layers and / or attention pooling over tokens."""

    config_class = ASTPooledConfig

    def __init__(self, config: ASTPooledConfig):
        super().__init__(config)
        layers = config.num_hidden_layers + 1  # + embeddings
        if config.use_weighted_layer_sum:
            self.layer_weights = nn.Parameter(torch.ones(layers) / layers)
        self.pooler = AttentionPooling(config.hidden_size) if config.pooling == "attention" else None

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self and self.config.use_weighted_layer_sum:  # equal weights, as HuBERT's
            init.constant_(self.layer_weights, 1.0 / (self.config.num_hidden_layers + 1))

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        weighted = self.config.use_weighted_layer_sum
        base = self.audio_spectrogram_transformer
        outputs = base(input_values, output_hidden_states=weighted)  # input (B, frames, mels)
        hidden = (
            base.layernorm(weighted_layer_sum(outputs.hidden_states, self.layer_weights))
            if weighted
            else outputs.last_hidden_state
        )  # (B, N, D)
        pooled = self.pooler(hidden) if self.pooler is not None else token_pool(hidden)  # (B, D)
        return SequenceClassifierOutput(logits=self.classifier(pooled))  # (B, C)


AutoConfig.register(ASTPooledConfig.model_type, ASTPooledConfig)
AutoModelForAudioClassification.register(ASTPooledConfig, ASTPooledForAudioClassification)


def ast_head(modules: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    return modules.classifier(pooled)  # LayerNorm + Linear, (B, D) -> (B, C)


def resize_time_positions(model, extractor, max_length: int) -> None:
    """Give AST `max_length` input frames by interpolating its position embeddings along time."""
    config = model.config
    embeddings = model.base_model.embeddings
    freq, old_time = embeddings.get_shape(config)
    config.max_length = max_length
    _, new_time = embeddings.get_shape(config)
    positions = embeddings.position_embeddings.data  # (1, 2 + freq * time, D)
    tokens, grid = positions[:, :2], positions[:, 2:]
    grid = grid.reshape(1, freq, old_time, -1).permute(0, 3, 1, 2)  # (1, D, freq, time)
    grid = F.interpolate(grid, size=(freq, new_time), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, freq * new_time, -1)
    embeddings.position_embeddings = nn.Parameter(torch.cat([tokens, grid], dim=1))
    extractor.max_length = max_length


def build_ast(
    num_labels: int, label_names: list[str], multi_label: bool, backbone, lora, max_length: int | None = None
):
    """AST (MIT/ast-finetuned-audioset-10-10-0.4593 or any AST checkpoint), 16 kHz log-mel patches.

    max_length: input frames of 10 ms; null = the checkpoint's (1024 = 10.24 s), another value
    interpolates the position embeddings along time.
    """
    prepare = None if max_length is None else partial(resize_time_positions, max_length=max_length)
    return build_backbone(AST, num_labels, label_names, multi_label, backbone, lora, prepare=prepare)


AST_TYPES = ("audio-spectrogram-transformer", ASTPooledConfig.model_type)
AST = Family(
    name="ast",
    default_path="MIT/ast-finetuned-audioset-10-10-0.4593",
    model_types=AST_TYPES,
    native_class=ASTForAudioClassification,
    pooled_class=ASTPooledForAudioClassification,
    native_weighted=False,
    extractor_class=ASTFeatureExtractor,
    default_extractor=ASTFeatureExtractor,
    sample_rate=16000,
    layers="layers",
    pool=token_pool,
    head=ast_head,
    head_input=None,  # the head opens with a LayerNorm
    build=build_ast,
    auto_types=AST_TYPES,
    license_prefix="MIT/ast",
    license="bsd-3-clause",
)
