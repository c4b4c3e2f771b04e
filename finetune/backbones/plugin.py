"""Plug-in encoders: any PyTorch module beside the transformers checkpoints (`model.name=encoder`).

An encoder is an `nn.Module` that takes a waveform batch (B, T) at its own `sample_rate` and returns
the hidden states of every layer (B, L, T', D), with attributes `sample_rate` (Hz), `frame_rate`
(frames of T' a second) and `num_layers` (L). `backbone.encoder` names the factory that builds it:
`package.module:factory` (called with no arguments), `hear:package.module` (a HEAR module, see
hear.py), or a name an installed package registers in the entry-point group `finetune.encoders`.
Only the named module is imported. `EncoderForAudioClassification` puts the head on it (a layer
or a learned layer mix, time pooling, a linear classifier); its config records the factory and the
package and version it came from, and `load_encoder_model` builds it again from there and reads
the saved weights (safetensors) into it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    PreTrainedConfig,
    PreTrainedModel,
    Wav2Vec2FeatureExtractor,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from finetune.backbones.common import check_modes, head_parameters
from finetune.backbones.heads import WEIGHTED, AttentionPooling, resolve_layer
from finetune.backbones.lora import add_lora
from finetune.bundle import ModelBundle, label_config
from finetune.encoder_specs import HEAR_PREFIX, cause, check_weights_file, module_of, resolve_spec
from finetune.losses import task_loss
from finetune.recipe import listed

logger = logging.getLogger("finetune")

ATTRIBUTES = ("sample_rate", "frame_rate", "num_layers")
CHECK_SECONDS = (1.0, 2.0)  # the check's two inputs: their frame counts tell the frame rate


def import_named(spec: str, module_name: str):
    """The module `module_name` (only it, and what it imports itself); a one-line error when it fails."""
    try:
        return importlib.import_module(module_name)
    except Exception as err:  # an encoder's module may fail in any way while importing
        raise ValueError(
            f"backbone.encoder={spec}: cannot import {module_name} ({cause(err)}); install the package that provides it"
        ) from err


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable `spec` (package.module:factory) names."""
    module_name, _, attribute = spec.partition(":")
    factory = getattr(import_named(spec, module_name), attribute, None)
    if not callable(factory):
        raise ValueError(f"backbone.encoder={spec}: {module_name} has no callable {attribute!r}")
    return factory


def distribution_of(spec: str) -> tuple[str | None, str | None]:
    """(package, version) of the installed distribution holding the spec's module; (None, None)
    for a module outside any (a local file)."""
    top = module_of(spec).split(".")[0]
    names = importlib.metadata.packages_distributions().get(top, [])
    if not names:
        return None, None
    return names[0], importlib.metadata.version(names[0])


def requirement(config: dict) -> str | None:
    """The line an exported model's card needs, from its config (config.json as a dict): which
    package (and version) builds its encoder; None for a model without a plug-in encoder."""
    if config.get("model_type") != EncoderConfig.model_type or not config.get("encoder"):
        return None
    package, version = config.get("encoder_package"), config.get("encoder_version")
    needs = f"`pip install {package}=={version}`" if package else "its module on the Python path"
    return f"Its encoder is built by `{config['encoder']}` (backbone.encoder): loading this model needs {needs}."


def build_module(spec: str) -> nn.Module:
    """Call the factory `spec` names (a HEAR module: wrapped as an encoder)."""
    if spec.startswith(HEAR_PREFIX):
        from finetune.backbones.hear import HearEncoder

        name = spec.removeprefix(HEAR_PREFIX)
        return HearEncoder(import_named(spec, name), spec)
    factory = load_factory(spec)
    try:
        encoder = factory()
    except Exception as err:  # the user's factory may fail in any way
        raise ValueError(f"backbone.encoder={spec}: the factory raised {cause(err)}") from err
    if not isinstance(encoder, nn.Module):
        raise ValueError(
            f"backbone.encoder={spec}: the factory returned a {type(encoder).__name__}, not a torch.nn.Module"
        )
    return encoder


def load_weights(encoder: nn.Module, spec: str, weights: str) -> None:
    """Read a safetensors file into the encoder (every weight, none left over)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_weights_file(weights)
    try:
        state = load_file(weights)
    except SafetensorError as err:
        raise ValueError(f"backbone.encoder_weights={weights}: damaged ({err})") from err
    loading = encoder.load_state_dict(state, strict=False)
    if loading.missing_keys or loading.unexpected_keys:
        raise ValueError(f"backbone.encoder_weights={weights}: does not fit {spec}: {mismatch(loading)}")


def mismatch(loading) -> str:
    """What `load_state_dict(strict=False)` found wrong, in words."""
    return "; ".join(
        f"{len(keys)} weights {kind} (e.g. {listed(keys[:3])})"
        for kind, keys in (("missing", loading.missing_keys), ("unexpected", loading.unexpected_keys))
        if keys
    )


def check_attributes(encoder: nn.Module, spec: str) -> dict:
    """The encoder's sample_rate, frame_rate and num_layers, each a positive number."""
    found = {name: getattr(encoder, name, None) for name in ATTRIBUTES}
    missing = [name for name, value in found.items() if value is None]
    if missing:
        raise ValueError(
            f"backbone.encoder={spec}: the encoder has no {', '.join(missing)}; an encoder "
            f"declares {', '.join(ATTRIBUTES)}"
        )
    for name, value in found.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"backbone.encoder={spec}: its {name} is {value!r}, not a positive number")
    return {
        "sample_rate": int(found["sample_rate"]),
        "frame_rate": float(found["frame_rate"]),
        "num_layers": int(found["num_layers"]),
    }


def probe_signal(seconds: float, rate: int) -> torch.Tensor:
    """Two seeded noise waveforms (2, seconds x rate), a check's input."""
    generator = np.random.default_rng(0)
    return torch.from_numpy(0.1 * generator.standard_normal((2, int(seconds * rate))).astype(np.float32))


def run_on_noise(encoder: nn.Module, spec: str, seconds: float, rate: int):
    """The encoder's output for `probe_signal`; what its forward raises, in one line."""
    audio = probe_signal(seconds, rate)
    try:
        with torch.no_grad():
            return encoder(audio)
    except Exception as err:  # the user's forward may fail in any way
        raise ValueError(
            f"backbone.encoder={spec}: its forward on a {tuple(audio.shape)} waveform batch at "
            f"{rate} Hz raised {cause(err)}"
        ) from err


def check_output(hidden, spec: str, seconds: float, declared: dict) -> tuple[int, int]:
    """(frames, width) of the encoder's output for `seconds` of audio, refused unless it is
    (B, num_layers, T', D) and finite."""
    if not isinstance(hidden, torch.Tensor):
        raise ValueError(
            f"backbone.encoder={spec}: returned a {type(hidden).__name__}, not a tensor of every "
            "layer's hidden states (B, L, T', D)"
        )
    shape = tuple(hidden.shape)
    if hidden.ndim != 4 or shape[:2] != (2, declared["num_layers"]):
        raise ValueError(
            f"backbone.encoder={spec}: returned shape {shape} for a batch of 2; an encoder returns "
            f"(B, L, T', D) with L = its num_layers ({declared['num_layers']})"
        )
    if not torch.isfinite(hidden).all():
        raise ValueError(f"backbone.encoder={spec}: returned NaN or infinite hidden states for {seconds:g} s of noise")
    return shape[2], shape[3]


def check_encoder(encoder: nn.Module, spec: str) -> dict:
    """Run the encoder on 1 s and 2 s of noise at its declared rate and refuse, in one line naming
    it and what it returned, what breaks the interface: missing attributes, another rank or layer
    count, NaN, a frame count its frame rate does not predict (another rate than it declares).
    Returns the declared attributes and the width `hidden_size`."""
    declared = check_attributes(encoder, spec)
    was_training = encoder.training
    frames = [
        check_output(run_on_noise(encoder.eval(), spec, s, declared["sample_rate"]), spec, s, declared)
        for s in CHECK_SECONDS
    ]
    encoder.train(was_training)
    measured = frames[1][0] - frames[0][0]  # frames of one more second
    expected = declared["frame_rate"] * (CHECK_SECONDS[1] - CHECK_SECONDS[0])
    if abs(measured - expected) > max(1.0, 0.1 * expected):
        raise ValueError(
            f"backbone.encoder={spec}: one more second at its sample_rate {declared['sample_rate']} "
            f"Hz gave {measured} more frames, its frame_rate {declared['frame_rate']:g} says "
            f"{expected:g}: it takes another rate than it declares, or declares a wrong frame_rate"
        )
    return {**declared, "hidden_size": frames[0][1]}


class EncoderConfig(PreTrainedConfig):
    """A plug-in encoder with a classification head: the factory, where it came from, its shape and
    the head's settings."""

    model_type = "finetune_encoder"

    def __init__(
        self,
        encoder: str | None = None,
        encoder_package: str | None = None,
        encoder_version: str | None = None,
        sample_rate: int = 16000,
        frame_rate: float = 50.0,
        num_hidden_layers: int = 1,
        hidden_size: int = 1,
        selected_layer: int | str = 0,
        pooling: str = "mean",
        **kwargs,
    ):
        self.encoder = encoder
        self.encoder_package = encoder_package
        self.encoder_version = encoder_version
        self.sample_rate = sample_rate
        self.frame_rate = frame_rate
        self.num_hidden_layers = num_hidden_layers  # the encoder's layers after its first output (L - 1)
        self.hidden_size = hidden_size
        self.selected_layer = selected_layer  # index into the encoder's outputs, or "weighted"
        self.pooling = pooling
        super().__init__(**kwargs)

    @property
    def use_weighted_layer_sum(self) -> bool:
        """Whether the head reads the learned layer mix (what the probe's head init asks of every model)."""
        return self.selected_layer == WEIGHTED


class EncoderForAudioClassification(PreTrainedModel):
    """The plug-in encoder (`encoder`) + a chosen layer or softmax-weighted mix (`layer_weights`) +
    mean or attention pooling over time (`pooler`) + a linear `classifier`."""

    config_class = EncoderConfig
    base_model_prefix = "encoder"
    main_input_name = "input_values"

    def __init__(self, config: EncoderConfig, encoder: nn.Module | None = None):
        super().__init__(config)
        self.encoder = build_module(config.encoder) if encoder is None else encoder
        if config.selected_layer == WEIGHTED:
            self.layer_weights = nn.Parameter(
                torch.full((config.num_hidden_layers + 1,), 1.0 / (config.num_hidden_layers + 1))
            )
        if config.pooling == "attention":
            self.pooler = AttentionPooling(config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Nothing: the encoder comes as its factory builds it, the head as PyTorch initialises it."""

    def layer_states(self, input_values: torch.Tensor) -> torch.Tensor:
        """The chosen layer's hidden states, or the weighted mix of all: (B, T', D)."""
        hidden = self.encoder(input_values)  # (B, L, T', D)
        if self.config.selected_layer == WEIGHTED:
            weights = self.layer_weights.softmax(dim=-1).view(1, -1, 1, 1)
            return (hidden * weights).sum(dim=1)
        return hidden[:, self.config.selected_layer]

    def forward(self, input_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        hidden = self.layer_states(input_values)
        pooled = self.pooler(hidden) if self.config.pooling == "attention" else hidden.mean(dim=1)
        logits = self.classifier(pooled)
        multi_label = self.config.problem_type == "multi_label_classification"
        loss = None if labels is None else task_loss(logits, labels, multi_label)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def layer_features(self, input_values: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """Every layer pooled over time, as the probe caches them: (B, L, D)."""
        return self.encoder(input_values).mean(dim=2)

    def select_layer(self, layer: int) -> EncoderForAudioClassification:
        """The model reading layer `layer` (in place): what a probe exports."""
        self.config.selected_layer = layer
        return self


AutoConfig.register(EncoderConfig.model_type, EncoderConfig)
AutoModelForAudioClassification.register(EncoderConfig, EncoderForAudioClassification)


def plugin_head(head: nn.ModuleDict, pooled: torch.Tensor) -> torch.Tensor:
    """The probe's head on pooled features (B, D) -> logits (B, C)."""
    return head["classifier"](pooled)


def feature_extractor(sample_rate: int) -> Wav2Vec2FeatureExtractor:
    """Raw waveforms at the encoder's rate, as they are (no normalisation, no mask)."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=sample_rate, padding_value=0.0, do_normalize=False, return_attention_mask=False
    )


def lora_targets(model: EncoderForAudioClassification, inputs: dict) -> list[str]:
    """Default LoRA targets of a plug-in encoder: every Linear layer a forward pass calls, by its
    full name in the encoder."""
    from finetune.backbones.lora import called_linears

    targets = sorted(called_linears(model, inputs))
    if not targets:
        raise ValueError(
            f"backbone.mode=lora: encoder {model.config.encoder} calls no torch.nn.Linear layer "
            "to adapt; use backbone.mode=full or probe"
        )
    return targets


def set_trainable(model: EncoderForAudioClassification, backbone, lora) -> None:
    """full: everything; lora: adapters on the encoder's Linear layers (lora.target_modules, else
    every one it calls) + head; probe: the head only."""
    model.requires_grad_(backbone.mode == "full")
    if backbone.mode == "full":
        return
    if backbone.mode == "lora":
        inputs = {"input_values": probe_signal(CHECK_SECONDS[0], model.config.sample_rate)}
        targets = lora.target_modules or lora_targets(model, inputs)
        add_lora(model, replace(lora, target_modules=targets), "", inputs)
    for param in head_parameters(model):
        param.requires_grad_(True)


def check_frozen_only(spec: str, backbone) -> None:
    """A HEAR module is a frozen encoder: refuse training it."""
    if spec.startswith(HEAR_PREFIX) and backbone.mode != "probe":
        raise ValueError(
            f"backbone.mode={backbone.mode}: backbone.encoder={spec} is a HEAR module, a frozen "
            "encoder (its API gives embeddings, not trainable layers); use backbone.mode=probe"
        )


def build_encoder(num_labels: int, label_names: list[str], multi_label: bool, backbone, lora):
    """Any encoder module a factory builds (backbone.encoder=package.module:factory, hear:module, a registered name)."""
    if num_labels != len(label_names):
        raise ValueError(f"num_labels={num_labels} but {len(label_names)} label names")
    check_modes(backbone)
    if backbone.path is not None:
        raise ValueError(
            f"backbone.path={backbone.path}: model.name=encoder reads its weights from "
            "backbone.encoder_weights (a .safetensors file); set backbone.path=null"
        )
    spec = resolve_spec(backbone.encoder)
    check_frozen_only(spec, backbone)
    encoder = build_module(spec)
    if backbone.encoder_weights:
        load_weights(encoder, spec, backbone.encoder_weights)
    declared = check_encoder(encoder, spec)
    layers = declared["num_layers"] - 1  # index 0: the encoder's first output
    package, version = distribution_of(spec)
    config = EncoderConfig(
        encoder=spec,
        encoder_package=package,
        encoder_version=version,
        sample_rate=declared["sample_rate"],
        frame_rate=declared["frame_rate"],
        num_hidden_layers=layers,
        hidden_size=declared["hidden_size"],
        selected_layer=resolve_layer("last" if backbone.mode == "probe" else backbone.layer, layers),
        pooling=backbone.pooling,
        **label_config(label_names, multi_label),
    )
    model = EncoderForAudioClassification(config, encoder)
    set_trainable(model, backbone, lora)
    return ModelBundle(
        model=model, feature_extractor=feature_extractor(declared["sample_rate"]), sample_rate=declared["sample_rate"]
    )


def load_encoder_model(path: Path) -> EncoderForAudioClassification:
    """A saved plug-in model: its encoder built again by the factory its config names, then every
    saved weight read into it (safetensors; none missing)."""
    from safetensors.torch import load_file

    config = EncoderConfig.from_pretrained(path)
    package, version = distribution_of(config.encoder)
    if config.encoder_version and version != config.encoder_version:
        logger.warning(
            "%s: saved with %s %s, building its encoder with %s %s",
            path,
            config.encoder_package,
            config.encoder_version,
            package,
            version,
        )
    model = EncoderForAudioClassification(config)
    state = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(file)))
    loading = model.load_state_dict(state, strict=False)
    if loading.missing_keys or loading.unexpected_keys:
        raise ValueError(f"{path}: the weights do not fit encoder {config.encoder}: {mismatch(loading)}")
    return model
