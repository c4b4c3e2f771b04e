"""The one build path every pretrained backbone shares; what differs per backbone is a `Family`.

build: read the checkpoint's config.json (translated where needed, e.g. MERT -> HuBERT) -> set
labels, layer and pooling -> `from_pretrained` into a native transformers class (or a `finetune_*`
subclass for what the native class lacks) -> keep the layers up to the chosen one -> set what
trains for `backbone.mode` (LoRA into the attention projections) -> the checkpoint's own feature
extractor. The probe's per-layer features (`Family.layer_features`) come from the same hidden
states for every family.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig

from finetune.backbones.heads import WEIGHTED, base_model_name, base_model_of, resolve_layer
from finetune.backbones.lora import add_lora
from finetune.bundle import ModelBundle, label_config

logger = logging.getLogger("finetune")

# config.json entries that describe a checkpoint, not an architecture: never carried over.
CHECKPOINT_KEYS = (
    "model_type",
    "architectures",
    "auto_map",
    "_name_or_path",
    "transformers_version",
    "id2label",
    "label2id",
    "num_labels",
    "problem_type",
    "pooling",
    "use_weighted_layer_sum",
)
LAYERDROP_KEYS = ("layerdrop", "encoder_layerdrop")  # wav2vec2-style, Whisper


@dataclass(frozen=True)
class Family:
    """What one kind of backbone needs to be built, trained in every mode and probed."""

    name: str
    default_path: str | None  # Hub id used when backbone.path is null (None: the path is required)
    model_types: tuple[str, ...]  # config.json `model_type`s this family reads (after `translate`)
    native_class: type  # transformers class, used whenever it can express the recipe
    pooled_class: type | None  # finetune_* subclass: attention pooling, and weighted layers if not native
    native_weighted: bool  # the native class has `use_weighted_layer_sum`
    extractor_class: type  # the feature extractor, read from preprocessor_config.json
    default_extractor: Callable[[], Any]  # used when the checkpoint has no preprocessor_config.json
    sample_rate: int | None  # the rate the family takes (None: its feature extractor's)
    layers: str  # the transformer layers' ModuleList, relative to the base model
    pool: Callable  # (hidden (B, T, D), frame mask (B, T) or None) -> (B, D), as the head pools
    head: Callable  # (module holding the head modules, pooled (B, D)) -> logits (B, C)
    head_input: str | None  # the head's first Linear (fed the pooled features), None if it starts otherwise
    translate: Callable[[dict], dict] = dict  # raw config.json -> a config this family reads
    # What a named family (finetune.backbones.families) adds; a family `auto` derives has none of it.
    build: Callable | None = None  # the recipe's builder, model.name=<name>
    auto_types: tuple[str, ...] = ()  # raw config.json `model_type`s that model.name=auto builds with it
    license_prefix: str | None = None  # Hub id prefix of its published weights ...
    license: str | None = None  # ... and their licence (SPDX-like id), for model cards

    def layer_features(
        self, model: nn.Module, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Each layer's output pooled over time as the model cut after that layer gives it (the
        embeddings first): model inputs -> (B, L+1, D)."""
        return pooled_layers(model, self, inputs, attention_mask)


def read_config(family: Family, path: str) -> dict:
    """The checkpoint's config.json as a dict of architecture settings for `family`."""
    raw, _ = PreTrainedConfig.get_config_dict(path)
    raw = family.translate(dict(raw))
    if raw.get("model_type") not in family.model_types:
        raise ValueError(
            f"backbone.path {path} holds a {raw.get('model_type')!r} model; the "
            f"{family.name} backbone reads {', '.join(family.model_types)}"
        )
    return {k: v for k, v in raw.items() if k not in CHECKPOINT_KEYS}


def check_modes(backbone) -> None:
    """Refuse settings that cannot work together, before any weights load."""
    if backbone.mode == "probe" and backbone.pooling != "mean":
        raise ValueError("backbone.mode=probe caches time-pooled embeddings: use backbone.pooling=mean")
    if backbone.mode == "probe" and backbone.layer != "last":
        logger.info("backbone.mode=probe: layers come from probe.layers; backbone.layer=%s is not used", backbone.layer)


def base_layers(model: nn.Module, family: Family) -> nn.ModuleList:
    return base_model_of(model).get_submodule(family.layers)


def keep_layers(model: nn.Module, family: Family, count: int) -> nn.Module:
    """Cut the model after its first `count` transformer layers (in place; config follows)."""
    parent_name, _, attr = family.layers.rpartition(".")
    setattr(
        base_model_of(model).get_submodule(parent_name), attr, nn.ModuleList(list(base_layers(model, family))[:count])
    )
    model.config.num_hidden_layers = count
    return model


def forward_with_tail(base: nn.Module, layers: str, inputs: torch.Tensor, **kwargs):
    """The base model's outputs with every hidden state, and the modules it ran after its last
    layer (a final norm, SEW's upsampling): the model cut after an earlier layer ends with them."""
    names = layers.split(".")
    path = [base] + [base.get_submodule(".".join(names[: i + 1])) for i in range(len(names))]  # base .. layers
    last = path[-1][-1]
    beside = [child for parent, inner in zip(path, path[1:]) for child in parent.children() if child is not inner]
    finished = []
    hooks = [m.register_forward_hook(lambda module, args, output: finished.append(module)) for m in [last, *beside]]
    try:
        outputs = base(inputs, output_hidden_states=True, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    after = len(finished) - finished[::-1].index(last)
    return outputs, list(dict.fromkeys(finished[after:]))


def pooled_layers(
    model: nn.Module, family: Family, inputs: torch.Tensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """`Family.layer_features`: hidden state k through the modules that follow the last layer,
    pooled like the head pools -> (B, L+1, D)."""
    kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
    outputs, tail = forward_with_tail(base_model_of(model), family.layers, inputs, **kwargs)
    last = outputs.last_hidden_state  # (B, T, D)
    states = []
    for hidden in outputs.hidden_states[:-1]:  # (B, T', D) each
        for module in tail:
            hidden = module(hidden)
        short = last.shape[1] - hidden.shape[1]  # SEW pads its upsampled frames to the input's count
        states.append(F.pad(hidden, (0, 0, 0, short)) if short > 0 else hidden)
    frames = getattr(model, "_get_feature_vector_attention_mask", None)  # wav2vec2-style: input mask -> frames
    mask = None if attention_mask is None or frames is None else frames(last.shape[1], attention_mask)  # (B, T)
    return torch.stack([family.pool(h, mask) for h in [*states, last]], dim=1)


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Everything outside the backbone: projector, classifier, pooler, layer weights."""
    prefix = base_model_name(model) + "."
    return [p for name, p in model.named_parameters() if not name.startswith(prefix)]


def silence(extractor) -> dict:
    """The model's inputs for one second of silence."""
    rate = extractor.sampling_rate
    return dict(extractor([np.zeros(rate, dtype=np.float32)], sampling_rate=rate, return_tensors="pt"))


def set_trainable(model: nn.Module, family: Family, backbone, lora, extractor) -> None:
    """full: everything (conv feature encoder frozen unless asked); lora: adapters + head;
    probe: the head only."""
    if backbone.mode == "full":
        model.requires_grad_(True)
        if backbone.freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):  # AST has none
            model.freeze_feature_encoder()
        return
    model.requires_grad_(False)
    if backbone.mode == "lora":
        add_lora(model, lora, family.layers, silence(extractor))
    for param in head_parameters(model):
        param.requires_grad_(True)


def check_loaded(path: str, model: nn.Module, loading: dict) -> None:
    """Refuse a checkpoint that leaves backbone weights at random (the head is new by design);
    start new layer weights equal."""
    prefix = base_model_name(model) + "."
    missing = sorted(
        k for k in loading["missing_keys"] if k.startswith(prefix) and not k.endswith("masked_spec_embed")
    )  # SpecAugment only
    if missing:
        raise ValueError(
            f"backbone.path {path}: {len(missing)} backbone weights are not in the "
            f"checkpoint, e.g. {', '.join(missing[:3])}"
        )
    if "layer_weights" in loading["missing_keys"]:  # wav2vec2 (5.24) leaves them uninitialised
        with torch.no_grad():
            model.layer_weights.fill_(1.0 / model.layer_weights.numel())
    if loading["unexpected_keys"]:
        logger.info("%s: %d checkpoint weights unused (e.g. pretraining heads)", path, len(loading["unexpected_keys"]))


def load_extractor(family: Family, path: str):
    """The checkpoint's feature extractor, or the family default when it ships none."""
    try:
        extractor = family.extractor_class.from_pretrained(path)
    except OSError:
        logger.info("%s has no preprocessor_config.json: using the %s defaults", path, family.name)
        extractor = family.default_extractor()
    if family.sample_rate is not None and extractor.sampling_rate != family.sample_rate:
        raise ValueError(
            f"{path}: feature extractor expects {extractor.sampling_rate} Hz, but "
            f"{family.name} models take {family.sample_rate} Hz"
        )
    return extractor


def build_backbone(
    family: Family,
    num_labels: int,
    label_names: list[str],
    multi_label: bool,
    backbone,
    lora,
    prepare: Callable | None = None,
):
    """The `ModelBundle` of `family` for a task; `prepare(model, extractor)` adjusts both
    (e.g. AST's input length) before the layers are cut and the trainable set is chosen."""
    if num_labels != len(label_names):
        raise ValueError(f"num_labels={num_labels} but {len(label_names)} label names")
    check_modes(backbone)
    path = backbone.path or family.default_path
    settings = read_config(family, path)
    chosen = "last" if backbone.mode == "probe" else backbone.layer  # a probe keeps every layer
    layers = family.native_class.config_class.from_dict(settings).num_hidden_layers
    layer = resolve_layer(chosen, layers)
    weighted = layer == WEIGHTED
    custom = backbone.pooling != "mean" or (weighted and not family.native_weighted)
    model_class = family.pooled_class if custom else family.native_class
    settings.update(label_config(label_names, multi_label))
    if custom:
        settings["pooling"] = backbone.pooling
    if weighted:
        settings["use_weighted_layer_sum"] = True
        for key in settings.keys() & LAYERDROP_KEYS:
            settings[key] = 0.0  # a dropped layer breaks the weighted sum (transformers 5.x)
    config = model_class.config_class.from_dict(settings)
    model, loading = model_class.from_pretrained(
        path, config=config, ignore_mismatched_sizes=True, output_loading_info=True
    )
    check_loaded(path, model, loading)
    extractor = load_extractor(family, path)
    if prepare is not None:
        prepare(model, extractor)
    if not weighted and layer < config.num_hidden_layers:
        keep_layers(model, family, layer)
    set_trainable(model, family, backbone, lora, extractor)
    return ModelBundle(model=model, feature_extractor=extractor, sample_rate=int(extractor.sampling_rate))
