"""`model.name=auto`: any checkpoint transformers' `AutoModelForAudioClassification` builds.

The checkpoint's config.json picks the family. A `model_type` with a named family (hubert,
wav2vec2, AST, MERT's mert_model, our finetune_* exports) is built by it, with the sample rate of
the checkpoint's feature extractor. Any other audio classifier (WavLM, data2vec-audio,
UniSpeech-SAT, SEW, Whisper's encoder, ...) gets a family read off transformers' own classes:
its native classifier, the feature extractor its preprocessor_config.json names (or its model
type's default), the transformer layers found in its body, and the
projector -> mean over time -> classifier head they all share. LoRA targets and the probe's
per-layer features are found the same way for every family (see common.py and lora.py).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from transformers import (
    CONFIG_MAPPING,
    FEATURE_EXTRACTOR_MAPPING,
    MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING,
    AutoFeatureExtractor,
    PreTrainedConfig,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

from finetune.backbones.common import CHECKPOINT_KEYS, Family, build_backbone
from finetune.backbones.families import FAMILIES
from finetune.backbones.heads import WEIGHTED, base_model_of, masked_mean
from finetune.backbones.wav2vec2 import speech_head
from finetune.recipe import listed

# config.json model_type -> the named family that reads it (each family's `auto_types`).
NAMED = {model_type: family for family in FAMILIES.values() for model_type in family.auto_types}


def find_layers(base: nn.Module) -> str:
    """The name of the ModuleList whose items hold attention: the transformer layers."""
    (name,) = [
        name
        for name, module in base.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module)
        and all(any("Attention" in type(m).__name__ for m in item.modules()) for item in module)
    ]
    return name


def derived_family(model_type: str, settings: dict) -> Family:
    """A Family read off transformers' classes for `model_type`; the layers are found in a
    skeleton of the model built on the meta device (no memory, no weights)."""
    config_class = CONFIG_MAPPING[model_type]
    native_class = MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING[config_class]
    config = config_class.from_dict(settings)
    with torch.device("meta"):
        skeleton = native_class(config)
    return Family(
        name="auto",
        default_path=None,
        model_types=(model_type,),
        native_class=native_class,
        pooled_class=None,
        native_weighted=hasattr(config, "use_weighted_layer_sum"),
        extractor_class=AutoFeatureExtractor,  # the class preprocessor_config.json names
        default_extractor=FEATURE_EXTRACTOR_MAPPING[config_class],
        sample_rate=None,
        layers=find_layers(base_model_of(skeleton)),
        pool=masked_mean,
        head=speech_head,
        head_input="projector",
    )


def auto_family(raw: dict) -> Family:
    """The Family that builds a checkpoint, from its config.json (as a dict)."""
    model_type = raw.get("model_type")
    if model_type in NAMED:
        return replace(NAMED[model_type], sample_rate=None)  # the rate of the checkpoint's extractor
    native = MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES
    if model_type not in native:
        raise ValueError(
            f"model.name=auto: a {model_type!r} checkpoint is not an audio classifier transformers "
            f"can build; supported model types: {', '.join(sorted(native))}, and "
            f"{listed(t for t in NAMED if t not in native)}"
        )
    return derived_family(model_type, {k: v for k, v in raw.items() if k not in CHECKPOINT_KEYS})


def build_auto(num_labels: int, label_names: list[str], multi_label: bool, backbone, lora):
    """Any audio classifier checkpoint transformers builds (WavLM, Whisper, data2vec ...): backbone.path."""
    if backbone.path is None:
        raise ValueError("backbone.path: model.name=auto builds the checkpoint it names; set a Hub id or a folder")
    raw, _ = PreTrainedConfig.get_config_dict(backbone.path)
    family = auto_family(raw)
    check_native_head(family, backbone)
    return build_backbone(family, num_labels, label_names, multi_label, backbone, lora)


def check_native_head(family: Family, backbone) -> None:
    """Refuse for a family with transformers' own head alone (pooled_class None) what only our
    finetune_* subclasses do: attention pooling, a weighted layer sum its class lacks (a probe
    pools by the mean over every layer: `check_modes` refuses its other settings)."""
    if family.pooled_class is not None or backbone.mode == "probe":
        return
    if backbone.pooling != "mean" or (backbone.layer == WEIGHTED and not family.native_weighted):
        raise ValueError(
            f"backbone.pooling={backbone.pooling}: {family.model_types[0]} checkpoints have "
            f"transformers' own head only, use mean (attention pooling is for {listed(FAMILIES)})"
        )
