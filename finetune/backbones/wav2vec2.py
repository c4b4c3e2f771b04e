"""wav2vec2 and HuBERT (MERT loads as HuBERT, see mert.py): raw waveform -> conv feature encoder
-> transformer layers -> projector -> pooled over time -> classifier."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    HubertConfig,
    HubertForSequenceClassification,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForSequenceClassification,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from finetune.backbones.common import Family, build_backbone
from finetune.backbones.heads import AttentionPooling, masked_mean, weighted_layer_sum


class SpeechPooledHead:
    """The native sequence-classification forward with attention pooling over projected frames."""

    def __init__(self, config):
        super().__init__(config)
        self.pooler = AttentionPooling(config.classifier_proj_size) if config.pooling == "attention" else None

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        weighted = self.config.use_weighted_layer_sum
        outputs = self.base_model(input_values, attention_mask=attention_mask, output_hidden_states=weighted)
        hidden = (
            weighted_layer_sum(outputs.hidden_states, self.layer_weights) if weighted else outputs.last_hidden_state
        )  # (B, T, H)
        hidden = self.projector(hidden)  # (B, T, P)
        mask = (
            None if attention_mask is None else self._get_feature_vector_attention_mask(hidden.shape[1], attention_mask)
        )  # (B, T)
        pooled = self.pooler(hidden, mask) if self.pooler is not None else masked_mean(hidden, mask)
        return SequenceClassifierOutput(logits=self.classifier(pooled))  # (B, C)


class HubertPooledConfig(HubertConfig):
    model_type = "finetune_hubert"
    pooling: str = "attention"


class HubertPooledForSequenceClassification(SpeechPooledHead, HubertForSequenceClassification):
    config_class = HubertPooledConfig


class Wav2Vec2PooledConfig(Wav2Vec2Config):
    model_type = "finetune_wav2vec2"
    pooling: str = "attention"


class Wav2Vec2PooledForSequenceClassification(SpeechPooledHead, Wav2Vec2ForSequenceClassification):
    config_class = Wav2Vec2PooledConfig


for _config, _model in (
    (HubertPooledConfig, HubertPooledForSequenceClassification),
    (Wav2Vec2PooledConfig, Wav2Vec2PooledForSequenceClassification),
):
    AutoConfig.register(_config.model_type, _config)
    AutoModelForAudioClassification.register(_config, _model)


def speech_head(modules: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """projector then classifier on pooled (B, H) features (both linear, so pooling commutes): the head
    of every wav2vec2-style classifier and of Whisper's."""
    return modules.classifier(modules.projector(pooled))


def speech_family(
    name: str,
    default_path: str,
    model_type: str,
    native_class: type,
    pooled_class: type,
    build: Callable,
    license_prefix: str,
    license: str,
    sample_rate: int = 16000,
    do_normalize: bool = True,
    translate=dict,
    auto_types: tuple[str, ...] | None = None,
) -> Family:
    """A Family for a wav2vec2-style model (shared by wav2vec2, HuBERT and MERT); `auto` builds the
    checkpoints of its `model_types` with it unless `auto_types` says otherwise."""
    model_types = (model_type, pooled_class.config_class.model_type)
    return Family(
        name=name,
        default_path=default_path,
        model_types=model_types,
        native_class=native_class,
        pooled_class=pooled_class,
        native_weighted=True,
        extractor_class=Wav2Vec2FeatureExtractor,
        default_extractor=lambda: Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=sample_rate,
            padding_value=0.0,
            do_normalize=do_normalize,
            return_attention_mask=True,
        ),
        sample_rate=sample_rate,
        layers="encoder.layers",
        pool=masked_mean,
        head=speech_head,
        head_input="projector",
        translate=translate,
        build=build,
        auto_types=model_types if auto_types is None else auto_types,
        license_prefix=license_prefix,
        license=license,
    )


def build_wav2vec2(num_labels: int, label_names: list[str], multi_label: bool, backbone, lora):
    """wav2vec2 (facebook/wav2vec2-base or any Wav2Vec2 checkpoint), 16 kHz waveform."""
    return build_backbone(WAV2VEC2, num_labels, label_names, multi_label, backbone, lora)


def build_hubert(num_labels: int, label_names: list[str], multi_label: bool, backbone, lora):
    """HuBERT (facebook/hubert-base-ls960 or any HuBERT checkpoint), 16 kHz waveform."""
    return build_backbone(HUBERT, num_labels, label_names, multi_label, backbone, lora)


WAV2VEC2 = speech_family(
    "wav2vec2",
    "facebook/wav2vec2-base",
    "wav2vec2",
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2PooledForSequenceClassification,
    build_wav2vec2,
    "facebook/wav2vec2",
    "apache-2.0",
)
HUBERT = speech_family(
    "hubert",
    "facebook/hubert-base-ls960",
    "hubert",
    HubertForSequenceClassification,
    HubertPooledForSequenceClassification,
    build_hubert,
    "facebook/hubert",
    "apache-2.0",
)
