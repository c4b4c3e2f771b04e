"""The one build path every pretrained backbone shares; what differs per backbone is a `Family`.

build: read the checkpoint's config.json (translated where needed, e.g. MERT -> HuBERT) -> set
labels, layer and pooling -> `from_pretrained` into a native transformers class (or a `finetune_*`
subclass for what the native class lacks) -> keep the layers up to the chosen one -> set what
trains for `backbone.mode` -> the checkpoint's own feature extractor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig

from finetune.backbones.heads import WEIGHTED, label_config, resolve_layer
from finetune.backbones.lora import add_lora
from finetune.bundle import ModelBundle

logger = logging.getLogger("finetune")

# config.json entries that describe a checkpoint, not an architecture: never carried over.
CHECKPOINT_KEYS = ("model_type", "architectures", "auto_map", "_name_or_path", "transformers_version",
                   "id2label", "label2id", "num_labels", "problem_type", "pooling", "use_weighted_layer_sum")


@dataclass(frozen=True)
class Family:
    """What one kind of backbone needs to be built, trained in every mode and probed."""

    name: str
    default_path: str  # Hub id used when backbone.path is null
    model_types: tuple[str, ...]  # config.json `model_type`s this family reads (after `translate`)
    native_class: type  # transformers class, used whenever it can express the recipe
    pooled_class: type  # finetune_* subclass: attention pooling, and weighted layers if not native
    native_weighted: bool  # the native class has `use_weighted_layer_sum`
    extractor_class: type  # the feature extractor, read from preprocessor_config.json
    default_extractor: Callable[[], Any]  # used when the checkpoint has no preprocessor_config.json
    sample_rate: int
    layers: str  # the transformer layers' ModuleList, relative to the base model
    lora_targets: tuple[str, ...]  # default `lora.target_modules`
    layer_features: Callable  # (model, input_values, attention_mask) -> (B, L+1, D) pooled per layer
    head: Callable  # (module holding the head modules, pooled (B, D)) -> logits (B, C)
    head_input: str | None  # the head's first Linear (fed the pooled features), None if it starts otherwise
    translate: Callable[[dict], dict] = dict  # raw config.json -> a config this family reads


def read_config(family: Family, path: str) -> dict:
    """The checkpoint's config.json as a dict of architecture settings for `family`."""
    raw, _ = PreTrainedConfig.get_config_dict(path)
    raw = family.translate(dict(raw))
    if raw.get("model_type") not in family.model_types:
        raise ValueError(f"backbone.path {path} holds a {raw.get('model_type')!r} model; the "
                         f"{family.name} backbone reads {', '.join(family.model_types)}")
    return {k: v for k, v in raw.items() if k not in CHECKPOINT_KEYS}


def check_modes(backbone) -> None:
    """Refuse settings that cannot work together, before any weights load."""
    if backbone.mode == "probe" and backbone.pooling != "mean":
        raise ValueError("backbone.mode=probe caches time-pooled embeddings: use backbone.pooling=mean")
    if backbone.mode == "probe" and backbone.layer != "last":
        logger.info("backbone.mode=probe: layers come from probe.layers; backbone.layer=%s is not used",
                    backbone.layer)


def base_layers(model: nn.Module, family: Family) -> nn.ModuleList:
    return model.base_model.get_submodule(family.layers)


def keep_layers(model: nn.Module, family: Family, count: int) -> nn.Module:
    """Cut the model after its first `count` transformer layers (in place; config follows)."""
    parent_name, _, attr = family.layers.rpartition(".")
    parent = model.base_model.get_submodule(parent_name) if parent_name else model.base_model
    setattr(parent, attr, nn.ModuleList(list(base_layers(model, family))[:count]))
    model.config.num_hidden_layers = count
    return model


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Everything outside the backbone: projector, classifier, pooler, layer weights."""
    prefix = model.base_model_prefix + "."
    return [p for name, p in model.named_parameters() if not name.startswith(prefix)]


def set_trainable(model: nn.Module, family: Family, backbone, lora) -> None:
    """full: everything (conv feature encoder frozen unless asked); lora: adapters + head;
    probe: the head only."""
    if backbone.mode == "full":
        model.requires_grad_(True)
        if backbone.freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):  # AST has none
            model.freeze_feature_encoder()
        return
    model.requires_grad_(False)
    if backbone.mode == "lora":
        add_lora(model, lora, family.lora_targets)
    for param in head_parameters(model):
        param.requires_grad_(True)


def check_loaded(path: str, model: nn.Module, loading: dict) -> None:
    """Refuse a checkpoint that leaves backbone weights at random (the head is new by design);
    start new layer weights equal."""
    prefix = model.base_model_prefix + "."
    missing = sorted(k for k in loading["missing_keys"]
                     if k.startswith(prefix) and not k.endswith("masked_spec_embed"))  # SpecAugment only
    if missing:
        raise ValueError(f"backbone.path {path}: {len(missing)} backbone weights are not in the "
                         f"checkpoint, e.g. {', '.join(missing[:3])}")
    if "layer_weights" in loading["missing_keys"]:  # wav2vec2 (5.24) leaves them uninitialised
        with torch.no_grad():
            model.layer_weights.fill_(1.0 / model.layer_weights.numel())
    if loading["unexpected_keys"]:
        logger.info("%s: %d checkpoint weights unused (e.g. pretraining heads)", path,
                    len(loading["unexpected_keys"]))


def load_extractor(family: Family, path: str):
    """The checkpoint's feature extractor, or the family default when it ships none."""
    try:
        extractor = family.extractor_class.from_pretrained(path)
    except OSError:
        logger.info("%s has no preprocessor_config.json: using the %s defaults", path, family.name)
        extractor = family.default_extractor()
    if extractor.sampling_rate != family.sample_rate:
        raise ValueError(f"{path}: feature extractor expects {extractor.sampling_rate} Hz, but "
                         f"{family.name} models take {family.sample_rate} Hz")
    return extractor


def build_backbone(family: Family, num_labels: int, label_names: list[str], multi_label: bool,
                   backbone, lora, prepare: Callable | None = None):
    """The `ModelBundle` of `family` for a task; `prepare(model, extractor)` adjusts both
    (e.g. AST's input length) before the layers are cut and the trainable set is chosen."""
    if num_labels != len(label_names):
        raise ValueError(f"num_labels={num_labels} but {len(label_names)} label names")
    check_modes(backbone)
    path = backbone.path or family.default_path
    settings = read_config(family, path)
    chosen = "last" if backbone.mode == "probe" else backbone.layer  # a probe keeps every layer
    layer = resolve_layer(chosen, settings["num_hidden_layers"])
    weighted = layer == WEIGHTED
    custom = backbone.pooling != "mean" or (weighted and not family.native_weighted)
    model_class = family.pooled_class if custom else family.native_class
    settings.update(label_config(label_names, multi_label))
    if custom:
        settings["pooling"] = backbone.pooling
    if weighted:
        settings["use_weighted_layer_sum"] = True
        if "layerdrop" in settings:
            settings["layerdrop"] = 0.0  # a dropped layer breaks the weighted sum (transformers 5.x)
    config = model_class.config_class.from_dict(settings)
    model, loading = model_class.from_pretrained(path, config=config, ignore_mismatched_sizes=True,
                                                 output_loading_info=True)
    check_loaded(path, model, loading)
    extractor = load_extractor(family, path)
    if prepare is not None:
        prepare(model, extractor)
    if not weighted and layer < config.num_hidden_layers:
        keep_layers(model, family, layer)
    set_trainable(model, family, backbone, lora)
    return ModelBundle(model=model, feature_extractor=extractor, sample_rate=family.sample_rate)

